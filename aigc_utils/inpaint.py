"""Chapter 08 — image repair: masks, classical inpainting, a small U-Net inpainter and denoiser, metrics.

The chapter compares, on *the same* seeded masks,

* classical fills: the per-image mean of the known pixels, biharmonic inpainting
  (``skimage.restoration.inpaint_biharmonic``) and Telea's fast-marching method (``cv2.inpaint``);
* a small U-Net that sees the masked image and the mask, trained first with a masked L1 loss and then
  fine-tuned with an added patch-discriminator adversarial loss;
* the same U-Net family trained to remove Gaussian noise, against total-variation and non-local-means
  denoising from scikit-image.

Every repaired image is a *composite*: known pixels are copied from the input and only hole pixels come
from the method, $\\hat x = (1-m)\\odot x + m\\odot f(x\\odot(1-m), m)$ with $m=1$ on the hole.

Hole PSNR (Chapter 08, eq. (1)) pools the squared error over **all hole pixels of a set of images**,

$$\\mathrm{PSNR}_\\text{hole} = 10\\log_{10}\\frac{1}{\\sum_i\\sum_p m_{ip}(\\hat x_{ip}-x_{ip})^2 / \\sum_i\\sum_p m_{ip}},$$

so a hole that happens to cover only (exactly reproducible) background adds zero error and many hole
pixels, but never makes the number infinite, and large holes weigh more than small ones. This equals
``skimage.metrics.peak_signal_noise_ratio`` / torchmetrics' PSNR (``data_range=1``) applied to the vector
of all hole pixels (a unit test checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import cached_module

MASK_KINDS: tuple[str, ...] = ("centre", "rects", "strokes")
RATIO_BINS: tuple[float, ...] = (0.0, 0.10, 0.20, 0.30, 1.0)
RATIO_LABELS: tuple[str, ...] = ("<10%", "10-20%", "20-30%", ">=30%")


# --------------------------------------------------------------------------------------------------
# Masks: deterministic per (seed, index), so every method sees exactly the same holes
# --------------------------------------------------------------------------------------------------


def centre_square_mask(size: int, rng: np.random.Generator, frac: tuple[float, float] = (0.2, 0.6)) -> np.ndarray:
    """A square hole centred in a ``size×size`` image whose side is a random fraction ``frac`` of ``size``."""
    side = int(rng.integers(max(1, round(frac[0] * size)), round(frac[1] * size) + 1))
    lo = (size - side) // 2
    mask = np.zeros((size, size), np.float32)
    mask[lo : lo + side, lo : lo + side] = 1.0
    return mask


def random_rects_mask(size: int, rng: np.random.Generator, max_rects: int = 3, frac: tuple[float, float] = (0.15, 0.5)) -> np.ndarray:
    """One to ``max_rects`` axis-aligned rectangles with random sides (a fraction ``frac`` of ``size``) and places."""
    mask = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, max_rects + 1))):
        h, w = (int(rng.integers(round(frac[0] * size), round(frac[1] * size) + 1)) for _ in range(2))
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        mask[top : top + h, left : left + w] = 1.0
    return mask


def free_form_mask(size: int, rng: np.random.Generator, max_strokes: int = 4, max_vertices: int = 6) -> np.ndarray:
    """Free-form brush strokes (Yu et al., 2019 style): random walks drawn with a thick round brush."""
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        width = int(rng.integers(max(1, size // 14), max(2, size // 7) + 1))
        for _ in range(int(rng.integers(2, max_vertices + 1))):
            angle = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(size / 8, size / 3)
            nx = int(np.clip(x + length * math.cos(angle), 0, size - 1))
            ny = int(np.clip(y + length * math.sin(angle), 0, size - 1))
            cv2.line(mask, (x, y), (nx, ny), 1, width)
            x, y = nx, ny
    return mask.astype(np.float32)


_GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "centre": centre_square_mask,
    "rects": random_rects_mask,
    "strokes": free_form_mask,
}


def make_masks(n: int, size: int, seed: int, kinds: Sequence[str] = MASK_KINDS) -> tuple[torch.Tensor, list[str]]:
    """``n`` hole masks ``(n, 1, size, size)`` (1 = missing) and their kinds, cycling through ``kinds``.

    Mask ``i`` depends only on ``(seed, i, size)``: the same call always gives the same masks, and a
    longer list starts with the shorter one.
    """
    masks = np.empty((n, 1, size, size), np.float32)
    names = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([seed, i])
        mask = _GENERATORS[kind](size, rng)
        if mask.sum() == 0:  # never happens with the defaults; keep every mask non-empty anyway
            mask[size // 2, size // 2] = 1.0
        masks[i, 0] = mask
        names.append(kind)
    return torch.from_numpy(masks), names


def ratio_bin(ratios: Iterable[float]) -> list[str]:
    """The mask-ratio bin label (``RATIO_LABELS``) of each hole fraction."""
    idx = np.digitize(np.asarray(list(ratios)), RATIO_BINS[1:-1], right=False)
    return [RATIO_LABELS[i] for i in idx]


# --------------------------------------------------------------------------------------------------
# Classical baselines (per image, numpy)
# --------------------------------------------------------------------------------------------------


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.detach().cpu().numpy().transpose(1, 2, 0).astype(np.float64)


def _from_hwc(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def mean_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fill each hole with the per-image, per-channel mean of that image's known pixels."""
    known = 1 - masks
    mean = (images * known).sum((-2, -1), keepdim=True) / known.sum((-2, -1), keepdim=True).clamp_min(1)
    return images * known + mean * masks


def biharmonic_fill(images: torch.Tensor, masks: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """``skimage.restoration.inpaint_biharmonic`` on each image (solves $\\Delta^2 u = 0$ in the hole)."""
    from skimage.restoration import inpaint_biharmonic

    out = torch.empty_like(images)
    for i in tqdm(range(len(images)), desc="biharmonic", disable=not progress, leave=False):
        img, hole = _to_hwc(images[i]), masks[i, 0].numpy().astype(bool)
        filled = inpaint_biharmonic(img, hole, channel_axis=-1)
        out[i] = _from_hwc(np.clip(filled, 0, 1))
    return images * (1 - masks) + out * masks


def telea_fill(images: torch.Tensor, masks: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """OpenCV's Telea fast-marching inpainting (``cv2.INPAINT_TELEA``) on 8-bit copies of the images."""
    out = torch.empty_like(images)
    for i in range(len(images)):
        img = np.clip(_to_hwc(images[i]) * 255 + 0.5, 0, 255).astype(np.uint8)
        hole = masks[i, 0].numpy().astype(np.uint8)
        filled = cv2.inpaint(img, hole, radius, cv2.INPAINT_TELEA)
        filled = filled.reshape(img.shape).astype(np.float64) / 255.0
        out[i] = _from_hwc(filled)
    return images * (1 - masks) + out * masks


# --------------------------------------------------------------------------------------------------
# The network family: a small U-Net, and a patch discriminator
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of :class:`UNet` (every field changes the weights, so all go into the checkpoint key)."""

    in_ch: int = 2
    out_ch: int = 1
    width: int = 24
    dilations: tuple[int, ...] = (2, 4)


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Two-level U-Net with a dilated bottleneck (a context encoder with skip connections).

    ``H×W`` → ``H/2`` → ``H/4`` (dilated convolutions widen the receptive field so the centre of a large
    hole still sees its border) → back up with skip connections. ``H`` and ``W`` must be divisible by 4.
    Returns raw outputs; :func:`inpaint` and :func:`denoise` turn them into images.
    """

    def __init__(self, cfg: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        c = cfg.width
        self.cfg = cfg
        self.enc1 = nn.Sequential(_block(cfg.in_ch, c), _block(c, c))
        self.enc2 = nn.Sequential(_block(c, 2 * c), _block(2 * c, 2 * c))
        self.mid = nn.Sequential(_block(2 * c, 4 * c), *[_block(4 * c, 4 * c, d) for d in cfg.dilations])
        self.dec2 = nn.Sequential(_block(4 * c + 2 * c, 2 * c), _block(2 * c, 2 * c))
        self.dec1 = nn.Sequential(_block(2 * c + c, c), _block(c, c))
        self.head = nn.Conv2d(c, cfg.out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)  # (B, c, H, W)
        e2 = self.enc2(F.max_pool2d(e1, 2))  # (B, 2c, H/2, W/2)
        m = self.mid(F.max_pool2d(e2, 2))  # (B, 4c, H/4, W/4)
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2.0, mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.head(d1)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al., 2017): one real/fake logit per receptive-field patch, ``H/4 × W/4`` of them.

    It sees the image *and* the mask, so it can judge the hole against its surroundings.
    """

    def __init__(self, in_ch: int = 2, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 1, 3, 1, 1),
        )  # fmt: skip

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], 1))


def pad_to_multiple(x: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two dims up to a multiple of ``k``; returns the padded tensor and the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)


def inpaint(net: UNet, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Composite repair $\\hat x = (1-m)\\odot x + m\\odot\\sigma(\\mathrm{UNet}([x\\odot(1-m), m]))$ (no grad)."""
    return _inpaint_raw(net, images, masks).clamp(0, 1)


def _inpaint_raw(net: UNet, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    inp, (h, w) = pad_to_multiple(torch.cat([images * (1 - masks), masks], 1))
    pred = torch.sigmoid(net(inp))[..., :h, :w]
    return images * (1 - masks) + pred * masks


def masked_l1(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Hole L1 (Chapter 08, eq. (2)): $\\sum m\\,|\\hat x-x| / \\sum m$ — the known pixels are copied anyway."""
    return ((pred - target).abs() * masks).sum() / masks.sum().clamp_min(1)


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """Apply ``fn`` to aligned batches of ``tensors`` on ``device``; results come back to the CPU."""
    outs = []
    for i in range(0, len(tensors[0]), batch):
        outs.append(fn(*(t[i : i + batch].to(device) for t in tensors)).cpu())
    return torch.cat(outs)


def train_inpainter(
    net: UNet,
    images: torch.Tensor,
    mask_bank: torch.Tensor,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
    adv_weight: float = 0.0,
    disc: PatchDiscriminator | None = None,
    desc: str = "inpainter",
) -> dict[str, list[float]]:
    """Train ``net`` for a fixed number of steps with masked L1, plus (when ``adv_weight > 0``) a patch GAN.

    Adversarial part (non-saturating GAN, Chapter 02/03): the discriminator minimises
    $-\\log D(x) - w\\log(1-D(\\hat x))$ per patch and the generator adds
    $\\lambda_\\text{adv}\\,\\overline{-w\\log D(\\hat x)}$, where the weight $w$ is 1 on patches that touch
    the hole (only they can differ from a real image) and 0 elsewhere. Images and masks are drawn with
    a private generator seeded by ``seed``; returns the loss curves.
    """
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999) if disc is not None else (0.9, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    if disc is not None:
        disc.to(device).train()
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    curves: dict[str, list[float]] = {"l1": [], "adv_g": [], "adv_d": []}
    for _ in tqdm(range(steps), desc=desc, leave=False):
        idx = torch.randint(len(images), (batch,), generator=gen)
        midx = torch.randint(len(mask_bank), (batch,), generator=gen)
        flip = torch.rand(batch, generator=gen) < 0.5  # cheap mask augmentation
        x = images[idx].to(device)
        m = mask_bank[midx]
        m = torch.where(flip[:, None, None, None], m.flip(-1), m).to(device)
        fake = _inpaint_raw(net, x, m)
        loss = masked_l1(fake, x, m)
        curves["l1"].append(loss.item())
        if disc is not None and adv_weight > 0:
            w = F.adaptive_max_pool2d(m, disc(x, m).shape[-2:])  # patches that touch the hole
            # discriminator step
            d_real, d_fake = disc(x, m), disc(fake.detach(), m)
            loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + (
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake), reduction="none") * w
            ).sum() / w.sum().clamp_min(1)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator's adversarial term
            g_fake = disc(fake, m)
            loss_g = (F.binary_cross_entropy_with_logits(g_fake, torch.ones_like(g_fake), reduction="none") * w).sum() / w.sum().clamp_min(1)
            loss = loss + adv_weight * loss_g
            curves["adv_g"].append(loss_g.item())
            curves["adv_d"].append(loss_d.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return curves


# --------------------------------------------------------------------------------------------------
# Denoising with the same family
# --------------------------------------------------------------------------------------------------


def add_noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """$y = x + \\sigma\\,\\varepsilon$, $\\varepsilon\\sim\\mathcal N(0, I)$ — seeded, not clipped."""
    gen = torch.Generator().manual_seed(seed)
    return images + sigma * torch.randn(images.shape, generator=gen)


def denoise(net: UNet, noisy: torch.Tensor) -> torch.Tensor:
    """Residual denoiser (DnCNN-style): $\\hat x = y - \\mathrm{UNet}(y)$, clipped to [0, 1]."""
    inp, (h, w) = pad_to_multiple(noisy)
    return (noisy - net(inp)[..., :h, :w]).clamp(0, 1)


def train_denoiser(
    net: UNet, images: torch.Tensor, sigma: float, steps: int, batch: int, lr: float, seed: int, device: torch.device | str = "cpu"
) -> list[float]:
    """Train the residual denoiser with MSE on fresh noise each step (fixed step count, seeded)."""
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    losses = []
    for _ in tqdm(range(steps), desc="denoiser", leave=False):
        x = images[torch.randint(len(images), (batch,), generator=gen)]
        y = x + sigma * torch.randn(x.shape, generator=gen)
        x, y = x.to(device), y.to(device)
        loss = F.mse_loss(y - net(y), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    return losses


def classical_denoise(noisy: torch.Tensor, method: str, strength: float, sigma: float) -> torch.Tensor:
    """scikit-image denoisers per image: ``"tv"`` (Chambolle, weight = ``strength``) or ``"nlm"``
    (non-local means, ``h = strength·σ``, fast mode, 5×5 patches)."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    out = torch.empty_like(noisy)
    for i in range(len(noisy)):
        img = _to_hwc(noisy[i])
        if method == "tv":
            res = denoise_tv_chambolle(img, weight=strength, channel_axis=-1)
        elif method == "nlm":
            res = denoise_nl_means(img, h=strength * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1)
        else:
            raise ValueError(f"unknown denoiser {method!r}: use 'tv' or 'nlm'")
        out[i] = _from_hwc(np.clip(res.reshape(img.shape), 0, 1))
    return out


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def psnr_pooled(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, data_range: float = 1.0) -> float:
    """PSNR of the squared error pooled over every (weighted) pixel of the whole set, eq. (1).

    ``weight`` is the hole mask for hole PSNR, ``None`` for whole-image PSNR (the pooled MSE then is
    the plain mean). Returns ``inf`` only if the set has no error at all.
    """
    err = (pred.double() - target.double()) ** 2
    if weight is None:
        mse = err.mean()
    else:
        weight = weight.double().expand_as(err)
        mse = (err * weight).sum() / weight.sum()
    return float("inf") if mse == 0 else float(10 * torch.log10(data_range**2 / mse))


def ssim_mean(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Whole-image SSIM (torchmetrics, Gaussian 11×11 window, σ=1.5, ``data_range=1``), averaged over images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0))


def hole_gradient_ratio(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> float:
    """Sharpness in the hole: $\\sum m|\\nabla\\hat x| / \\sum m|\\nabla x|$ (1 = as much edge energy as the truth;
    a blurry fill is below 1). Says nothing about *where* the edges are — PSNR does that."""

    def grad(t: torch.Tensor) -> torch.Tensor:
        gx = (t[..., :, 1:] - t[..., :, :-1]).abs()[..., :-1, :]
        gy = (t[..., 1:, :] - t[..., :-1, :]).abs()[..., :, :-1]
        return gx + gy

    m = masks[..., :-1, :-1]
    return float((grad(pred) * m).sum() / (grad(target) * m).sum().clamp_min(1e-12))


def per_image_hole_se(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image summed squared hole error and hole pixel count (the pieces pooled PSNR adds up)."""
    se = (((pred.double() - target.double()) ** 2) * masks).sum((1, 2, 3))
    n = masks.double().expand_as(pred).sum((1, 2, 3))
    return se.numpy(), n.numpy()


def bin_table(
    fills: dict[str, torch.Tensor], target: torch.Tensor, masks: torch.Tensor, kinds: Sequence[str] | None = None
) -> pd.DataFrame:
    """Hole PSNR (pooled within each group) per mask-ratio bin, and per mask kind when ``kinds`` is given.

    Rows: the bins (plus ``all``), columns: methods; an extra column ``n`` counts the images.
    """
    ratios = masks.mean((1, 2, 3)).numpy()
    groups = pd.Series(ratio_bin(ratios), name="mask ratio")
    rows: dict[str, dict[str, float]] = {}
    pieces = {name: per_image_hole_se(fill, target, masks) for name, fill in fills.items()}
    keys: list[tuple[str, np.ndarray]] = [(lab, (groups == lab).to_numpy()) for lab in RATIO_LABELS]
    if kinds is not None:
        kinds_arr = np.asarray(kinds)
        keys += [(f"kind={k}", kinds_arr == k) for k in dict.fromkeys(kinds)]
    keys.append(("all", np.ones(len(ratios), bool)))
    for label, sel in keys:
        if not sel.any():
            continue
        row = {"n": int(sel.sum())}
        for name, (se, n) in pieces.items():
            row[name] = float(10 * np.log10(n[sel].sum() / max(se[sel].sum(), 1e-30)))
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------------
# Natural-photo patches
# --------------------------------------------------------------------------------------------------


def photo_tensor(img: np.ndarray, scale: float = 1.0) -> torch.Tensor:
    """``H×W×3`` uint8 → ``(3, H', W')`` float in [0, 1], optionally resized by ``scale`` (area filter)."""
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0


def random_patches(photos: Sequence[torch.Tensor], n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` random ``size×size`` crops (``(n, 3, size, size)``) drawn uniformly over ``photos`` (seeded)."""
    rng = np.random.default_rng(seed)
    out = torch.empty(n, photos[0].shape[0], size, size)
    for i in range(n):
        img = photos[int(rng.integers(len(photos)))]
        top = int(rng.integers(0, img.shape[1] - size + 1))
        left = int(rng.integers(0, img.shape[2] - size + 1))
        out[i] = img[:, top : top + size, left : left + size]
    return out


def hardest(fills: torch.Tensor, target: torch.Tensor, masks: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` images with the largest mean squared hole error for this method."""
    se, n = per_image_hole_se(fills, target, masks)
    return torch.from_numpy(np.argsort(-(se / np.maximum(n, 1)))[:k].copy())


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------
# Load-else-train wrappers (the checkpoint key holds every setting that changes the weights)
# --------------------------------------------------------------------------------------------------


def _thin(values: Sequence[float], keep: int = 400) -> list[float]:
    """At most ``keep`` evenly spaced points of a curve (what is stored beside the weights)."""
    step = max(1, math.ceil(len(values) / keep))
    return [float(v) for v in values[::step]]


def fit_inpainter(
    key: dict,
    images: torch.Tensor,
    mask_bank: torch.Tensor,
    cfg: UNetConfig,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
    init: UNet | None = None,
    adv_weight: float = 0.0,
    disc_width: int = 32,
    name: str = "08_inpainter",
) -> tuple[UNet, dict, bool]:
    """A :class:`UNet` inpainter from the checkpoint cache, else trained (from ``init``'s weights when given).

    ``key`` must already identify the data (and, for a fine-tune, the ``init`` model's own key); the
    sizes, steps, learning rate, seed and adversarial settings are added here. Returns
    ``(net, extras, loaded_from_cache)``; ``extras`` holds the thinned loss curves.
    """
    full_key = {**key, "cfg": cfg.__dict__, "steps": steps, "batch": batch, "lr": lr, "seed": seed,
                "adv_weight": adv_weight, "disc_width": disc_width if adv_weight > 0 else None}  # fmt: skip
    torch.manual_seed(seed)
    net = UNet(cfg)
    if init is not None:
        net.load_state_dict(init.state_dict())

    def train(model: UNet) -> dict:
        disc = PatchDiscriminator(cfg.in_ch, disc_width) if adv_weight > 0 else None
        curves = train_inpainter(model, images, mask_bank, steps, batch, lr, seed, device, adv_weight, disc,
                                 desc="adversarial fine-tune" if disc is not None else "L1 inpainter")  # fmt: skip
        return {k: _thin(v) for k, v in curves.items()}

    net, extras, hit = cached_module(name, full_key, net, train)
    return net.to(device).eval(), extras, hit


def fit_denoiser(
    key: dict,
    images: torch.Tensor,
    cfg: UNetConfig,
    sigma: float,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
    name: str = "08_denoiser",
) -> tuple[UNet, dict, bool]:
    """A residual :class:`UNet` denoiser for noise level ``sigma``, from the cache or trained."""
    full_key = {**key, "cfg": cfg.__dict__, "sigma": sigma, "steps": steps, "batch": batch, "lr": lr, "seed": seed}
    torch.manual_seed(seed)

    def train(model: UNet) -> dict:
        return {"mse": _thin(train_denoiser(model, images, sigma, steps, batch, lr, seed, device))}

    net, extras, hit = cached_module(name, full_key, UNet(cfg), train)
    return net.to(device).eval(), extras, hit

