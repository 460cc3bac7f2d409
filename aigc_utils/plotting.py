"""Figures a reader would rather look at than read: image grids, loss curves, scatter panels."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure


def to_numpy_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(C,H,W)`` or ``(H,W)`` tensor / array in [0, 1] (or [-1, 1] when negative) → ``H×W[×3]`` float."""
    arr = img.detach().float().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, dtype=float)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.min() < 0:
        arr = (arr + 1) / 2
    if arr.max() > 1.5:
        arr = arr / 255.0
    return np.clip(arr, 0, 1)


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor | np.ndarray],
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    size: float = 1.2,
    cmap: str = "gray",
) -> Figure:
    """Show a batch of images as a grid with optional per-image titles; returns the figure."""
    items = list(images)
    ncol = min(nrow, len(items))
    nrows = int(np.ceil(len(items) / ncol))
    fig, axes = plt.subplots(nrows, ncol, figsize=(size * ncol, size * nrows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, items)):
        ax.imshow(to_numpy_image(img), cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def loss_curves(
    curves: Mapping[str, Sequence[float]],
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str | None = None,
    smooth: int = 1,
    logy: bool = False,
    ax: plt.Axes | None = None,
) -> Figure:
    """Plot named curves (optionally smoothed by a moving average of ``smooth`` points)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    for name, values in curves.items():
        y = np.asarray(values, dtype=float)
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(len(y)), y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
