"""Checkpoints the book trains itself: load if cached and intact, else train and save atomically.

Every file ``NAME.pt`` under ``AIGC_CACHE`` has a sidecar ``NAME.pt.sha256``. A file whose hash does not
match (a truncated download, a crash half-way through a copy, a hand edit) is reported, deleted and
retrained — never silently loaded. Writes go to a temporary file in the same folder and are renamed
into place, so a run that dies while saving leaves either the old checkpoint or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def cache_root() -> Path:
    """``AIGC_CACHE``, default ``~/.cache/aigc_utils/checkpoints``."""
    root = Path(os.environ.get("AIGC_CACHE", Path.home() / ".cache" / "aigc_utils" / "checkpoints"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_path(name: str, key: dict[str, Any] | None = None) -> Path:
    """Where checkpoint ``name`` trained with settings ``key`` lives (the key is hashed into the name)."""
    suffix = ""
    if key:
        blob = json.dumps(key, sort_keys=True, default=str).encode()
        suffix = "-" + hashlib.sha256(blob).hexdigest()[:10]
    return cache_root() / f"{name}{suffix}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save ``payload`` (tensors, numbers, strings, lists, dicts) atomically with its sha256 sidecar."""
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))
    digest = sha256_file(path)
    atomic_write_bytes(Path(f"{path}.sha256"), lambda handle: handle.write(digest.encode()))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The payload at ``path`` if present and intact, else ``None`` (a damaged file is reported and removed)."""
    if not path.exists():
        return None
    sidecar = Path(f"{path}.sha256")
    expected = sidecar.read_text().strip() if sidecar.exists() else None
    actual = sha256_file(path)
    problem = None
    if expected is None:
        problem = "it has no .sha256 sidecar"
    elif expected != actual:
        problem = f"sha256 {actual[:12]}… does not match the recorded {expected[:12]}…"
    else:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling error means the file is unusable
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    warnings.warn(f"checkpoint {path} is corrupted: {problem}; deleting it and retraining", stacklevel=2)
    path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return None


def cached_payload(
    name: str, key: dict[str, Any] | None, produce: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """Load checkpoint ``name``/``key`` if cached and intact, else ``produce()`` it and save it;
    returns ``(payload, loaded_from_cache)``."""
    path = checkpoint_path(name, key)
    payload = load_checkpoint(path)
    if payload is not None:
        return payload, True
    payload = produce()
    save_checkpoint(path, payload)
    return payload, False


def cached_module(
    name: str, key: dict[str, Any] | None, model: M, train: Callable[[M], dict[str, Any] | None]
) -> tuple[M, dict[str, Any], bool]:
    """Load ``model``'s weights from the cache, else run ``train(model)`` and cache them with the
    numbers it may return (e.g. a test accuracy); returns ``(model, extras, loaded_from_cache)``."""

    def produce() -> dict[str, Any]:
        extras = train(model) or {}
        return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "extras": extras}

    payload, hit = cached_payload(name, key, produce)
    if hit:
        model.load_state_dict(payload["state_dict"])
    return model, dict(payload.get("extras", {})), hit
