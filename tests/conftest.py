"""Every test runs with the network blocked: offline paths are proven, not assumed."""

from __future__ import annotations

import os

import pytest

os.environ["AIGC_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from aigc_utils.net import forbid_network  # noqa: E402

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
