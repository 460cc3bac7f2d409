"""The one call that sets a chapter up, and the record of what it measured.

A notebook's first code cell after its parameters is ``ch = setup_chapter(...)``: it resolves the profile,
picks that profile's sizes and bars, chooses the device, seeds everything, switches the network guard on
when ``AIGC_OFFLINE=1`` and prints one line saying so. Metrics are recorded where they are computed with
``ch.record(name=value)``, which also *glues* each value for the page (MyST-NB ``{glue:text}`` roles), so
a number in the prose is the number the run produced. The Results cell is ``ch.results()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .network import forbid_network, offline
from .plotting import use_book_style
from .profiles import Profile, by_profile, describe_device, pick_device, resolve_profile, seed_everything
from .results import record_results


def glue(name: str, value: object) -> None:
    """Make ``value`` available to the page's prose as ``{glue:text}`name```; a no-op outside MyST-NB."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab, or a plain Python session
        return
    _glue(name, value, display=False)


@dataclass
class Chapter:
    """A chapter's run: profile, sizes, bars, device, seed, and the metrics recorded so far."""

    stem: str
    profile: Profile
    cfg: dict[str, Any]
    bars: list[str]
    device: torch.device
    seed: int
    generator: torch.Generator
    metrics: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def record(self, **values: object) -> None:
        """Record metrics (numbers, 0-d tensors or NumPy scalars) and glue each as a plain number."""
        for name, value in values.items():
            number = value.item() if hasattr(value, "item") else value  # 0-d tensors, NumPy scalars
            if isinstance(number, bool):
                number = int(number)
            if not isinstance(number, (int, float)):
                raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
            self.metrics[name] = number
            glue(name, number)

    def results(self) -> None:
        """Write the metrics file, print the table once and assert this profile's quality bars.

        Returns nothing, so the Results cell shows the table only once; a failing bar fails the run.
        ``seconds`` (since ``setup_chapter``) is recorded first, so a bar can hold the time budget; the
        runner later replaces it in the metrics file with its own wall-clock time of the whole notebook.
        """
        self.metrics["seconds"] = round(time.perf_counter() - self.started, 1)
        record_results(self.stem, self.metrics, self.bars, self.profile.name, describe_device(self.device))


def setup_chapter(
    stem: str,
    profile: str | None,
    seed: int,
    sizes: Mapping[str, Mapping[str, Any]],
    bars: Mapping[str, list[str]],
    threads: int | None = None,
) -> Chapter:
    """Resolve the profile, pick its sizes and bars, choose the device, seed, guard the network; say so in one line."""
    if offline():
        forbid_network()
    if threads is not None:
        torch.set_num_threads(threads)
    p = resolve_profile(profile)
    cfg = dict(by_profile(p, sizes))
    device = pick_device()
    generator = seed_everything(seed)
    use_book_style()
    chapter = Chapter(stem, p, cfg, list(by_profile(p, bars)), device, seed, generator)
    network = "offline" if offline() else "network allowed"
    print(f"{stem}: profile {p.name} (budget {p.budget_s} s), {describe_device(device)}, seed {seed}, {network}")
    return chapter
