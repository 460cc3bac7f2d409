"""Figures a reader would rather look at than read: the book's figure style, image grids, curves.

:func:`use_book_style` (called by ``setup_chapter``) makes every figure readable at the book's column
width: 100 dpi figures at most 7.6 inches wide (the 784-pixel column shows them unscaled), retina PNGs,
text of 10–12 pt, and a CJK font so Chinese labels draw as characters rather than empty boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure

COLUMN_INCHES = 7.6  # the page column is 784 px; at 100 dpi a figure up to this width is shown unscaled
_CJK_FILES = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-microhei.ttc")


def cjk_font() -> str | None:
    """The family name of an installed CJK font (Debian ``fonts-noto-cjk``), registered with matplotlib."""
    for family in ("Noto Sans CJK SC", "WenQuanYi Micro Hei"):
        if any(f.name == family for f in font_manager.fontManager.ttflist):
            return family
    roots = [Path("/usr/share/fonts"), Path.home() / ".fonts", Path("/System/Library/Fonts")]
    for root in (r for r in roots if r.exists()):
        for name in _CJK_FILES:
            for path in root.rglob(name):
                font_manager.fontManager.addfont(str(path))
                return "Noto Sans CJK SC" if "Noto" in name else "WenQuanYi Micro Hei"
    return None


def use_book_style() -> None:
    """Figure defaults for the book's pages (sizes, fonts, retina output, CJK fallback)."""
    cjk = cjk_font()
    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "figure.figsize": (COLUMN_INCHES, 3.6),
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 10,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "font.family": ["DejaVu Sans", cjk] if cjk else ["DejaVu Sans"],
    })
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # not in IPython
        return
    set_matplotlib_formats("retina")


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
    size = min(size, COLUMN_INCHES / ncol)  # never wider than the column (it would be shrunk, text too)
    extra = (0.4 if title else 0) + (0.25 * nrows if titles is not None else 0)
    fig, axes = plt.subplots(nrows, ncol, figsize=(size * ncol, size * nrows + extra), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, items)):
        ax.imshow(to_numpy_image(img), cmap=cmap, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
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
        fig, ax = plt.subplots(figsize=(COLUMN_INCHES * 0.8, 3.6))
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
