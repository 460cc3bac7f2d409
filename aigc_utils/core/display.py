"""Show the code that runs on the page that teaches it.

A chapter's lesson function lives in the package (so tests and later chapters can call it) and the page
renders its real source with :func:`show_source` — one implementation, shown where it is taught, so what
the reader sees cannot drift from what runs. A test checks that the rendered text is the function's source.
"""

from __future__ import annotations

import inspect
from typing import Callable


def source_of(*objects: Callable | type) -> str:
    """The source code of each object, joined by a blank line (a decorated function shows its own code,
    decorator line included, not the decorator's wrapper)."""
    return "\n\n".join(inspect.getsource(inspect.unwrap(obj)).rstrip() for obj in objects)


def show_source(*objects: Callable | type) -> None:
    """Display the source of functions or classes as a highlighted Python block (plain text outside IPython)."""
    text = source_of(*objects)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - outside IPython
        print(text)
        return
    display(Markdown(f"```python\n{text}\n```"))
