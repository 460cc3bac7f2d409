"""A chapter's Results cell: record its metrics for the runner and assert its quality bars.

A bar is a readable expression over the chapter's metric names, e.g. ``"test_accuracy >= 0.85"`` or
``"grid_modes >= grid_modes_vanilla + 3"``. Metrics are written *before* the bars are checked, so a
failing bar still shows (as failed) on the results dashboard.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Mapping

import torch

from .checkpoints import atomic_write_bytes

_SAFE = {"abs": abs, "min": min, "max": max, "math": math}
_NAMESPACE = {"__builtins__": {}, **_SAFE}  # all a bar may name besides the metrics


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
        return bool(eval(bar, _NAMESPACE, dict(metrics)))  # noqa: S307 - our own strings
    except NameError as exc:
        raise KeyError(f"bar {bar!r} names a metric that was not recorded ({exc})") from None


_COMPARISON = re.compile(r"\s*(<=|>=|==|<|>)\s*")
_SYMBOL = {"<=": "≤", ">=": "≥", "==": "=", "<": "<", ">": ">"}


def bar_sides(bar: str, numbers: Mapping[str, float | int]) -> tuple[float, str, float] | None:
    """``(lhs, op, rhs)`` of a bar ``lhs OP rhs``, both sides evaluated; None for any other bar."""
    parts = _COMPARISON.split(bar, maxsplit=1)
    if len(parts) != 3:
        return None
    lhs, rhs = (float(eval(side, _NAMESPACE, dict(numbers))) for side in parts[::2])  # noqa: S307
    return lhs, parts[1], rhs


def shown_number(value: float) -> str:
    """A number as a reader wants it: whole numbers and anything from 1,000 up without decimals (with
    thousands separators), others to four significant digits."""
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:.4g}"


class ResultsTable:
    """The Results cell's output: each claim (quality bar) with the values it compares and whether it
    holds, then every metric, folded. HTML on the page; the same as text in a terminal."""

    def __init__(self, run: str, numbers: Mapping[str, float | int], outcomes: Mapping[str, bool]):
        self.run, self.numbers, self.outcomes = run, dict(numbers), dict(outcomes)

    def measured(self, bar: str) -> str:
        """"0.049 ≤ 0.06": both sides of the bar's comparison, evaluated."""
        sides = bar_sides(bar, self.numbers)
        if sides is None:
            return "—"
        lhs, op, rhs = sides
        return f"{shown_number(lhs)} {_SYMBOL[op]} {shown_number(rhs)}"

    def __repr__(self) -> str:
        width = max((len(k) for k in self.numbers), default=10)
        lines = [f"Results ({self.run})"]
        lines += [f"  {key:<{width}}  {shown_number(value)}" for key, value in self.numbers.items()]
        lines += [f"  [{'pass' if ok else 'FAIL'}] {bar}" for bar, ok in self.outcomes.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cell = 'style="text-align: left; overflow-wrap: anywhere"'
        claims = "".join(
            f"<tr><td {cell}><code>{html.escape(bar)}</code></td><td {cell}>{self.measured(bar)}</td>"
            f"<td>{'✓ holds' if ok else '✗ FAILS'}</td></tr>" for bar, ok in self.outcomes.items())
        values = "".join(f"<tr><td {cell}><code>{html.escape(k)}</code></td><td>{shown_number(v)}</td></tr>"
                         for k, v in self.numbers.items())
        table = '<table style="table-layout: fixed; width: 100%">'
        return (f"<p><b>Results</b> ({html.escape(self.run)}): the chapter's claims, each checked on "
                f"this run</p>{table}<tr><th>claim</th><th>measured</th><th></th></tr>{claims}</table>"
                f"<details><summary>All {len(self.numbers)} metrics of this run</summary>{table}"
                f"<tr><th>metric</th><th>value</th></tr>{values}</table></details>")


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
    table = ResultsTable(f"{profile} on {device}", numbers, outcomes)
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with the book's dependencies
        print(repr(table))
    else:
        display(table)  # the page shows its HTML; a terminal, its text
    failed = [bar for bar, ok in outcomes.items() if not ok]
    if failed:
        raise QualityBarFailed(f"{stem}: quality bar(s) failed in profile {profile}: {'; '.join(failed)}")
    return numbers
