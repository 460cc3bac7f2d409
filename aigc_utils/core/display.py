"""Show the code that runs on the page that teaches it.

A chapter's lesson function lives in the package (so tests and later chapters can call it) and the page
renders its real source with :func:`show_source` — one implementation, shown where it is taught, so what
the reader sees cannot drift from what runs. A test checks that the rendered code is the function's source.
The docstring is read as prose above the code (its reST roles and literals as Markdown code, its
``$…$`` math typeset), and a listing longer than a screen is folded.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Callable

FOLD_LINES = 40  # a listing longer than this is folded under a one-line summary
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj):`~?([^`]+)`")


def source_of(*objects: Callable | type) -> str:
    """The source code of each object, joined by a blank line (a decorated function shows its own code,
    decorator line included, not the decorator's wrapper)."""
    return "\n\n".join(inspect.getsource(inspect.unwrap(obj)).rstrip() for obj in objects)


def split_docstring(source: str) -> tuple[str, str]:
    """(docstring, code without it) of one function's or class's source (the code dedented)."""
    code = textwrap.dedent(source)
    node = ast.parse(code).body[0]
    first = node.body[0] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return "", code.rstrip()
    lines = code.splitlines()
    rest = lines[: first.lineno - 1] + lines[first.end_lineno :]
    return inspect.cleandoc(first.value.value), "\n".join(rest).rstrip()


def docstring_as_markdown(doc: str) -> str:
    """A docstring as prose: reST's ``code`` and :func:`name` roles as Markdown code, paragraphs joined."""
    text = _ROLE.sub(r"`\1`", doc)
    text = re.sub(r"``(.+?)``(?!`)", lambda m: f"`{m[1]}`" if "`" not in m[1] else f"`` {m[1]} ``", text)
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())


def source_markdown(*objects: Callable | type) -> str:
    """Markdown for show_source: per object, its name and docstring as prose, then its code without the
    docstring; folded under a summary line when the code is longer than ``FOLD_LINES``."""
    parts = []
    for obj in objects:
        doc, code = split_docstring(inspect.getsource(inspect.unwrap(obj)))
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", "code"))
        head = f"**`{name}`**" + (f" — {docstring_as_markdown(doc)}" if doc else "")
        block = f"```python\n{code}\n```"
        n = code.count("\n") + 1
        if n > FOLD_LINES:  # a blank line around the fence, so that Markdown renders it inside the fold
            block = f"<details><summary>The code of {name} ({n} lines)</summary>\n\n{block}\n\n</details>"
        parts.append(f"{head}\n\n{block}")
    return "\n\n".join(parts)


def show_source(*objects: Callable | type) -> None:
    """Display functions or classes: each docstring as prose, then the code, highlighted (folded when
    longer than a screen); plain text outside IPython."""
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - outside IPython
        print(source_of(*objects))
        return
    display(Markdown(source_markdown(*objects)))
