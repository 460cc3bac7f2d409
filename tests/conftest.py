"""Every test runs with the network blocked: offline paths are proven, not assumed."""

from __future__ import annotations

import os

import pytest

os.environ["AIGC_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from aigc_utils.core.network import forbid_network  # noqa: E402

forbid_network()


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    """An empty AIGC_CACHE for tests that train and cache."""
    monkeypatch.setenv("AIGC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def one_thread():
    """Tiny models: one thread is fastest (and on a shared machine, far faster than two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def notebook_parameters(stem: str) -> dict:
    """Execute notebook ``stem``'s cell tagged ``parameters`` and return its namespace (SIZES, BARS, …).
    A visible sizes cell right after it (its first line starts with ``# Sizes per profile``) runs too.

    Tests use it to build each chapter's ``gpu``-profile models on the CPU, so a ``gpu`` configuration
    error fails CI even though CI has no GPU.
    """
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{stem}.ipynb"
    cells = json.loads(path.read_text())["cells"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    sources = ["".join(c["source"]) for c in cells[at : at + 2]]
    if not sources[-1].startswith("# Sizes per profile"):
        sources = sources[:1]
    namespace: dict = {}
    for source in sources:
        exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - the book's own notebook
    return namespace
