"""A chapter's Results cell: record its metrics for the runner and assert its quality bars.

A bar is a readable expression over the chapter's metric names, e.g. ``"test_accuracy >= 0.85"`` or
``"grid_modes >= grid_modes_vanilla + 3"``. Metrics are written *before* the bars are checked, so a
failing bar still shows (as failed) on the results dashboard.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Mapping

import torch

from .checkpoints import atomic_write_bytes

_SAFE = {"abs": abs, "min": min, "max": max, "math": math}


class QualityBarFailed(AssertionError):
    """One or more of a chapter's quality bars did not hold."""


def metrics_dir() -> Path:
    """``AIGC_METRICS_DIR`` (set by the runner), else ``_build/metrics`` of the book containing the current
    folder (the nearest parent with a ``_toc.yml``), else ``_build/metrics`` here."""
    if "AIGC_METRICS_DIR" in os.environ:
        return Path(os.environ["AIGC_METRICS_DIR"])
    here = Path.cwd().resolve()
    root = next((p for p in (here, *here.parents) if (p / "_toc.yml").exists()), here)
    return root / "_build" / "metrics"


def evaluate_bar(bar: str, metrics: Mapping[str, float]) -> bool:
    """Evaluate one bar expression against the metrics (names only; no builtins beyond abs/min/max)."""
    try:
        return bool(eval(bar, {"__builtins__": {}, **_SAFE}, dict(metrics)))  # noqa: S307 - our own strings
    except NameError as exc:
        raise KeyError(f"bar {bar!r} names a metric that was not recorded ({exc})") from None


def _number(value: object) -> float | int:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, (int, float)):
        raise TypeError(f"metrics must be numbers, got {type(value).__name__}: {value!r}")
    return value


def record_results(
    stem: str, metrics: Mapping[str, object], bars: list[str], profile: str, device: str
) -> dict[str, float | int]:
    """Write ``<metrics_dir>/<stem>.json`` and ``<stem>.bars.json``, print a table, assert the bars;
    the runner adds ``seconds`` and its own ``finished_at`` afterwards."""
    numbers = {k: _number(v) for k, v in metrics.items()}
    record: dict[str, object] = {
        "profile": profile,
        "device": device,
        "torch": torch.__version__,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **numbers,
    }
    outcomes = {bar: evaluate_bar(bar, numbers) for bar in bars}
    folder = metrics_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in ((f"{stem}.json", record), (f"{stem}.bars.json", outcomes)):
        blob = json.dumps(payload, indent=2, sort_keys=False).encode()
        atomic_write_bytes(folder / name, lambda handle, blob=blob: handle.write(blob))
    width = max(len(k) for k in numbers) if numbers else 10
    print(f"Results ({profile} on {device})")
    for key, value in numbers.items():
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}")
    for bar, ok in outcomes.items():
        print(f"  [{'pass' if ok else 'FAIL'}] {bar}")
    failed = [bar for bar, ok in outcomes.items() if not ok]
    if failed:
        raise QualityBarFailed(f"{stem}: quality bar(s) failed in profile {profile}: {'; '.join(failed)}")
    return numbers
