"""Run profiles, device choice and seeding.

A profile says how big a chapter's run is. It comes from the papermill parameter ``profile``, else the
environment variable ``AIGC_PROFILE``, else ``auto`` (``gpu`` when CUDA is available, else ``cpu``).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Mapping, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """A profile: its name, its time budget per notebook and what it is for."""

    name: str
    budget_s: int
    description: str


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 60, "CI and nbval: tiny sizes, the real code paths on real data"),
    "cpu": Profile("cpu", 300, "default without a GPU: large enough to meet the quality bars"),
    "gpu": Profile("gpu", 300, "papermill on a GPU or Colab: full sizes"),
}
VALID_PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu", "auto")


class ProfileError(ValueError):
    """An unknown profile name."""


def resolve_profile(name: str | None = None) -> Profile:
    """Turn a profile name (or ``None``: the environment, then ``auto``) into a :class:`Profile`.

    >>> resolve_profile("smoke").budget_s
    60
    """
    raw = name if name not in (None, "") else os.environ.get("AIGC_PROFILE", "auto")
    key = str(raw).strip().lower()
    if key == "auto":
        key = "gpu" if torch.cuda.is_available() else "cpu"
    if key not in PROFILES:
        raise ProfileError(
            f"unknown profile {raw!r}: use one of {', '.join(VALID_PROFILES)} "
            "(papermill -p profile NAME, or AIGC_PROFILE=NAME)"
        )
    return PROFILES[key]


def by_profile(profile: Profile | str, table: Mapping[str, T]) -> T:
    """Pick this profile's entry of a ``{"smoke": ..., "cpu": ..., "gpu": ...}`` table."""
    key = profile.name if isinstance(profile, Profile) else resolve_profile(profile).name
    if key not in table:
        raise ProfileError(f"profile table has no entry for {key!r}: it has {', '.join(table)}")
    return table[key]


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or ``prefer`` when given), else Apple MPS, else the CPU."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str) -> str:
    """A short human name for a device, e.g. ``cpu (2 threads)`` or ``NVIDIA H200``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels.

    Returns a CPU :class:`torch.Generator` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
