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
from matplotlib.patches import FancyBboxPatch

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
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # not in IPython
        return
    set_matplotlib_formats("retina")
    shell = get_ipython()
    if shell is None:
        return
    png = shell.display_formatter.formatters["image/png"]
    render = png.lookup_by_type(Figure)

    def with_alt_text(fig: Figure) -> tuple[bytes, dict]:  # the page's <img alt> says what it shows
        out = render(fig)
        data, meta = out if isinstance(out, tuple) else (out, {})
        return data, {**(meta or {}), "alt": figure_alt_text(fig)}

    png.for_type(Figure, with_alt_text)


def figure_alt_text(fig: Figure) -> str:
    """Alt text from what a figure says about itself: its title, its panels' titles, their axes."""
    parts: list[str] = []
    suptitle = fig.get_suptitle()
    for text in (fig.get_label(), suptitle):
        if text and text not in parts:
            parts.append(text)
    for ax in fig.axes:
        title, x, y = ax.get_title(), ax.get_xlabel(), ax.get_ylabel()
        axes = f"{y} against {x}" if x and y else (x or y)
        panel = f"{title} ({axes})" if title and axes else (title or axes)
        if panel and panel not in parts:
            parts.append(panel)
    text = "; ".join(parts) or f"figure of {len(fig.axes)} panel{'s' if len(fig.axes) != 1 else ''}"
    return "Figure: " + (text if len(text) <= 300 else text[:297] + "…")


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


def _describe(module: torch.nn.Module) -> str:
    """A short description of a layer from its configuration: ``Conv2d 1→64 k4 s2``, ``Linear 128→512``."""
    name = type(module).__name__
    if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Conv1d)):
        k, s = module.kernel_size[0], module.stride[0]
        d = module.dilation[0]
        return (f"{name} {module.in_channels}→{module.out_channels} k{k}" + (f" s{s}" if s != 1 else "")
                + (f" d{d}" if d != 1 else ""))
    if isinstance(module, torch.nn.Linear):
        return f"Linear {module.in_features}→{module.out_features}"
    if isinstance(module, torch.nn.Embedding):
        return f"Embedding {module.num_embeddings}×{module.embedding_dim}"
    leaves = [m for m in module.modules() if not list(m.children()) and m is not module]
    if not leaves:
        return name
    parts: list[str] = []
    for leaf in leaves:  # the leaf layers in order, repeats of the same description counted
        text = _describe(leaf)
        if parts and parts[-1].split(" ×")[0] == text:
            count = int(parts[-1].split(" ×")[1]) + 1 if " ×" in parts[-1] else 2
            parts[-1] = f"{text} ×{count}"
        else:
            parts.append(text)
    lines, line = [], ""
    for part in parts:  # wrap at ~60 characters, at most three lines
        if line and len(line) + len(part) > 60:
            lines.append(line)
            line = ""
        line = f"{line} · {part}" if line else part
    lines.append(line)
    prefix = "" if name == "Sequential" else f"{name}: "
    return prefix + "\n".join(lines[:3]) + (" …" if len(lines) > 3 else "")


def _shape(output: object) -> tuple[int, ...] | None:
    """The per-example shape of a module's output (the first tensor of a tuple or a model output)."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            shape = _shape(item)
            if shape is not None:
                return shape
    return None


def architecture_diagram(
    model: torch.nn.Module,
    *example_inputs: object,
    modules: Sequence[str] | None = None,
    skips: Sequence[tuple[str, str]] = (),
    title: str | None = None,
) -> Figure:
    """Draw ``model`` as one forward pass walks it: a box per module (its name, layers and their sizes,
    output shape per example, parameter count), arrows in call order, ``skips`` as arcs from one named
    module's output to another's input. Drawn from the real modules, so it cannot drift from the code.

    ``modules`` names the modules to draw (dotted names as in ``named_modules``); by default the model's
    direct children. Modules that the forward pass does not call are left out.
    """
    named = dict(model.named_modules())
    names = list(modules) if modules is not None else [n for n, _ in model.named_children()]
    unknown = [n for n in names if n not in named]
    if unknown:
        raise KeyError(f"architecture_diagram: no module named {unknown[0]!r}; choose from {list(named)[1:12]}")
    calls: dict[str, tuple[int, ...] | None] = {}

    def hook(name: str):  # a forward hook must return None, or it would replace the module's output
        return lambda _module, _inputs, output: None if name in calls else calls.update({name: _shape(output)})

    hooks = [named[n].register_forward_hook(hook(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    order = list(calls)  # call order
    boxes = []
    for n in order:
        shape = calls[n]
        shape_text = "×".join(map(str, shape)) if shape else ("scalar" if shape == () else "–")
        params = sum(p.numel() for p in named[n].parameters())
        boxes.append((f"{n}  →  {shape_text}   ({params:,} parameters)", _describe(named[n])))
    # Lay out in inches (1 data unit = 1 inch): a 10-pt heading and 9-pt monospace lines of 0.16 in.
    heights = [0.5 + 0.16 * body.count("\n") for _, body in boxes]
    gap, top = 0.25, 0.45
    total_h = sum(heights) + gap * (len(boxes) - 1)
    fig = plt.figure(figsize=(COLUMN_INCHES, total_h + top + 0.1))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, COLUMN_INCHES)
    ax.set_ylim(total_h + 0.1, -top)
    ax.axis("off")
    y, spans, left, width = 0.0, {}, 0.15, COLUMN_INCHES - 1.3
    for (head, body), n, h in zip(boxes, order, heights):
        ax.add_patch(FancyBboxPatch((left, y), width, h, boxstyle="round,pad=0,rounding_size=0.06",
                                    fc="#eef3fb", ec="#4a6fa5"))
        ax.text(left + 0.12, y + 0.17, head, fontsize=10, color="#1f3a60", va="center", family="DejaVu Sans")
        ax.text(left + 0.12, y + 0.31, body, fontsize=9, va="top", family="monospace", linespacing=1.2)
        spans[n] = (y, y + h)
        if y > 0:
            ax.annotate("", (left + width / 2, y), (left + width / 2, y - gap),
                        arrowprops=dict(arrowstyle="->", color="#4a6fa5"))
        y += h + gap
    for src, dst in skips:
        if src not in spans or dst not in spans:
            raise KeyError(f"architecture_diagram: skip {src!r} → {dst!r} names a module the forward pass did not call")
    length = sorted(skips, key=lambda sd: abs(spans[sd[1]][0] - spans[sd[0]][0]))  # longer arcs go outside
    for src, dst in skips:
        i = length.index((src, dst))
        ax.annotate("", (left + width, sum(spans[dst]) / 2), (left + width, sum(spans[src]) / 2),
                    arrowprops=dict(arrowstyle="->", color="#c0504d",
                                    connectionstyle=f"arc,angleA=0,angleB=0,armA={18 + 10 * i},armB={18 + 10 * i},rad=6"))
    if skips:
        ax.text(COLUMN_INCHES - 0.1, -0.1, "skip connection", color="#c0504d", fontsize=9, ha="right")
    total = sum(p.numel() for p in model.parameters())
    heading = f"{title or type(model).__name__}: {total:,} parameters"
    ax.text(COLUMN_INCHES / 2, -top / 2, heading, fontsize=12, ha="center", va="center")
    fig.set_label(f"architecture of {heading}, one box per module in call order: "
                  + ", ".join(order))
    return fig
