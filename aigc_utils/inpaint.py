r"""Chapter 08 — image repair: seeded masks, classical fills, a U-Net inpainter and denoiser.

Every repair is a composite $\hat x = (1-m)\odot x + m\odot f$ ($m=1$ on the hole); hole PSNR pools
the squared error over all hole pixels of a set (:func:`psnr_pooled`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from .core.checkpoints import cached_module
from .core.gan import gan_step
from .core.plotting import image_grid
from .core.train import History, fit

# Sizes per profile (the notebook's ``cfg``). Fashion inpainting: ``n_eval`` scored test images,
# ``mask_bank`` training masks, ``l1_steps`` + ``adv_steps`` (fine-tune) at ``batch`` images, for
# ``n_seeds`` training seeds; denoising: ``dn_steps``, ``n_denoise`` scored and ``n_tune``
# tuning images; ``n_digits`` MNIST digits; photos: ``photo_steps`` on ``n_photo_train`` patches,
# ``n_photo_eval`` scored, a ``photo_crop``-pixel demo crop; ``n_hardest`` hardest cases shown.
SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(n_eval=90, mask_bank=300, l1_steps=40, adv_steps=5, batch=32, n_seeds=2,
                  dn_steps=40, n_denoise=60, n_tune=12, n_digits=60, photo_steps=10,
                  n_photo_train=1000, n_photo_eval=8, photo_crop=64, n_hardest=4),
    "cpu": dict(n_eval=600, mask_bank=3000, l1_steps=600, adv_steps=150, batch=32, n_seeds=3,
                dn_steps=300, n_denoise=300, n_tune=40, n_digits=300, photo_steps=300,
                n_photo_train=5000, n_photo_eval=64, photo_crop=128, n_hardest=8),
    "gpu": dict(n_eval=2000, mask_bank=20000, l1_steps=6000, adv_steps=1500, batch=128, n_seeds=3,
                dn_steps=3000, n_denoise=1000, n_tune=100, n_digits=1000, photo_steps=3000,
                n_photo_train=20000, n_photo_eval=256, photo_crop=192, n_hardest=8),
}
# Strengths tried for each classical denoiser, chosen on a validation slice: TV weight, NLM h / σ.
DENOISE_GRID: dict[str, tuple[float, ...]] = {"tv": (0.05, 0.08, 0.12, 0.18),
                                              "nlm": (0.6, 0.8, 1.0, 1.3)}
MASK_KINDS: tuple[str, ...] = ("centre", "rects", "strokes")
RATIO_BINS: tuple[float, ...] = (0.0, 0.10, 0.20, 0.30, 1.0)
RATIO_LABELS: tuple[str, ...] = ("<10%", "10-20%", "20-30%", ">=30%")
Device = torch.device | str

# ---- Masks: deterministic per (seed, index), so every method sees the same holes
def centre_square_mask(size: int, rng: np.random.Generator, frac=(0.2, 0.6)) -> np.ndarray:
    """A centred square hole whose side is a random fraction ``frac`` of ``size``."""
    side = int(rng.integers(max(1, round(frac[0] * size)), round(frac[1] * size) + 1))
    lo = (size - side) // 2
    mask = np.zeros((size, size), np.float32)
    mask[lo : lo + side, lo : lo + side] = 1.0
    return mask


def random_rects_mask(size: int, rng: np.random.Generator, max_rects=3, frac=(0.15, 0.5)):
    """One to ``max_rects`` rectangles, each side a random fraction ``frac`` of ``size``."""
    mask = np.zeros((size, size), np.float32)
    lo, hi = round(frac[0] * size), round(frac[1] * size) + 1
    for _ in range(int(rng.integers(1, max_rects + 1))):
        h, w = (int(rng.integers(lo, hi)) for _ in range(2))
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        mask[top : top + h, left : left + w] = 1.0
    return mask


def free_form_mask(size: int, rng: np.random.Generator, max_strokes=4, max_vertices=6):
    """Free-form brush strokes (Yu et al., 2019 style): random walks drawn with a thick brush."""
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


_GENERATORS = {"centre": centre_square_mask, "rects": random_rects_mask, "strokes": free_form_mask}


def make_masks(n: int, size: int, seed: int, kinds: Sequence[str] = MASK_KINDS):
    """``n`` hole masks ``(n, 1, size, size)`` (1 = missing) and their kinds, cycling ``kinds``;
    mask ``i`` depends only on ``(seed, i, size)``."""
    masks = np.empty((n, 1, size, size), np.float32)
    names = [kinds[i % len(kinds)] for i in range(n)]
    for i, kind in enumerate(names):
        masks[i, 0] = _GENERATORS[kind](size, np.random.default_rng([seed, i]))
    return torch.from_numpy(masks), names


def ratio_bin(ratios: Iterable[float]) -> list[str]:
    """The mask-ratio bin label (``RATIO_LABELS``) of each hole fraction."""
    return [RATIO_LABELS[i] for i in np.digitize(np.asarray(list(ratios)), RATIO_BINS[1:-1])]


# ---- Classical baselines (per image, numpy)
def _to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.detach().cpu().numpy().transpose(1, 2, 0).astype(np.float64)


def _from_hwc(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def mean_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fill each hole with the per-image, per-channel mean of that image's known pixels."""
    known = 1 - masks
    n_known = known.sum((-2, -1), keepdim=True).clamp_min(1)
    mean = (images * known).sum((-2, -1), keepdim=True) / n_known
    return images * known + mean * masks


def biharmonic_fill(images: torch.Tensor, masks: torch.Tensor, progress=False) -> torch.Tensor:
    r"""``skimage.restoration.inpaint_biharmonic`` per image: $\Delta^2 u = 0$ in the hole."""
    from skimage.restoration import inpaint_biharmonic

    out = torch.empty_like(images)
    for i in tqdm(range(len(images)), desc="biharmonic", disable=not progress, leave=False):
        img, hole = _to_hwc(images[i]), masks[i, 0].numpy().astype(bool)
        out[i] = _from_hwc(np.clip(inpaint_biharmonic(img, hole, channel_axis=-1), 0, 1))
    return images * (1 - masks) + out * masks


def telea_fill(images: torch.Tensor, masks: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """OpenCV's Telea fast-marching inpainting (``cv2.INPAINT_TELEA``) on 8-bit copies."""
    out = torch.empty_like(images)
    for i in range(len(images)):
        img = np.clip(_to_hwc(images[i]) * 255 + 0.5, 0, 255).astype(np.uint8)
        filled = cv2.inpaint(img, masks[i, 0].numpy().astype(np.uint8), radius, cv2.INPAINT_TELEA)
        out[i] = _from_hwc(filled.reshape(img.shape).astype(np.float64) / 255.0)
    return images * (1 - masks) + out * masks


# ---- The network family: a small U-Net and a patch discriminator
@dataclass(frozen=True)
class UNetConfig:
    """Sizes of :class:`UNet` (each changes the weights, so all go into the checkpoint key)."""

    in_ch: int = 2
    out_ch: int = 1
    width: int = 24
    dilations: tuple[int, ...] = (2, 4)


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Two-level U-Net: ``H`` → ``H/2`` → ``H/4`` (dilated convolutions: a large hole's centre sees
    its border) → back up, with skip connections from each encoder level; ``H``, ``W`` % 4 == 0."""

    def __init__(self, cfg: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        c = cfg.width
        self.cfg = cfg
        self.enc1 = nn.Sequential(_block(cfg.in_ch, c), _block(c, c))
        self.enc2 = nn.Sequential(_block(c, 2 * c), _block(2 * c, 2 * c))
        widen = _block(2 * c, 4 * c)  # created before the dilated blocks: same initial weights
        self.mid = nn.Sequential(widen, *[_block(4 * c, 4 * c, d) for d in cfg.dilations])
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
    """PatchGAN (Isola et al., 2017): one real/fake logit per patch, ``H/4 × W/4`` of them, from the
    image *and* the mask, so it can judge the hole against its surroundings."""

    def __init__(self, in_ch: int = 2, width: int = 32) -> None:
        super().__init__()
        w, act = width, nn.LeakyReLU(0.2, inplace=True)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, w, 4, 2, 1), act, nn.Conv2d(w, 2 * w, 4, 2, 1), act,
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), act, nn.Conv2d(2 * w, 1, 3, 1, 1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, mask], 1))


def pad_to_multiple(x: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the last two dims up to a multiple of ``k``; also returns the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)


def composite(net: UNet, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""$\hat x = (1-m)\odot x + m\odot\sigma(\mathrm{UNet}([x\odot(1-m), m]))$, with grad."""
    inp, (h, w) = pad_to_multiple(torch.cat([images * (1 - masks), masks], 1))
    return images * (1 - masks) + torch.sigmoid(net(inp))[..., :h, :w] * masks


def inpaint(net: UNet, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The composite repair clamped to [0, 1] (run under ``no_grad``, e.g. in :func:`batched`)."""
    return composite(net, images, masks).clamp(0, 1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Hole L1: $\sum_p m_p|\hat x_p-x_p| / \sum_p m_p$ (the known pixels are copied)."""
    return ((pred - target).abs() * masks).sum() / masks.sum().clamp_min(1)


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = 256,
            device: Device = "cpu") -> torch.Tensor:
    """Apply ``fn`` to aligned batches of ``tensors`` on ``device``; results return to the CPU."""
    return torch.cat([fn(*(t[i : i + batch].to(device) for t in tensors)).cpu()
                      for i in range(0, len(tensors[0]), batch)])


def train_inpainter(net: UNet, images: torch.Tensor, mask_bank: torch.Tensor, steps: int,
                    batch: int, lr: float, seed: int, device: Device = "cpu",
                    disc: PatchDiscriminator | None = None, adv_weight: float = 1.0) -> History:
    r"""Train ``net`` on :func:`masked_l1`; with a ``disc``, plus ``adv_weight`` × a patch GAN loss.

    Images, masks and flips are drawn from a generator seeded by ``seed``. With a discriminator each
    step is ``gan_step``: $D$ learns real vs composite on the patches that touch the hole ($w=1$;
    elsewhere a composite *is* the real image), then the U-Net minimises
    $\mathcal L_{L1} + \lambda_\text{adv}\,\overline{w\cdot(-\log D(\hat x, m))}$.
    """
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9 if disc is None else 0.5, 0.999))

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = images[torch.randint(len(images), (batch,), generator=gen)].to(device)
        m = mask_bank[torch.randint(len(mask_bank), (batch,), generator=gen)]
        flip = torch.rand(batch, generator=gen) < 0.5  # cheap mask augmentation
        m = torch.where(flip[:, None, None, None], m.flip(-1), m).to(device)
        return x, m, composite(net, x, m)

    def l1_step(_: int) -> torch.Tensor:
        x, m, fake = draw()
        return masked_l1(fake, x, m)

    def gan_l1_step(_: int) -> dict[str, float]:
        x, m, fake = draw()
        w = F.adaptive_max_pool2d(m, (m.shape[-2] // 4, m.shape[-1] // 4))  # D's hole patches
        l1 = masked_l1(fake, x, m)
        losses = gan_step(lambda img: disc(img, m), real=x, fake=fake, opt_d=opt_d, opt_g=opt,
                          fake_weight=w, g_extra=l1, adv_weight=adv_weight)
        return {"l1": l1.item(), **losses}

    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    if disc is None:
        history = fit(l1_step, steps, opt, scheduler=sched, desc="L1 inpainter")
    else:
        opt_d = torch.optim.Adam(disc.to(device).train().parameters(), lr=lr, betas=(0.5, 0.999))
        history = fit(gan_l1_step, steps, scheduler=sched, desc="adversarial")
    net.eval()
    return history


def cached_unet(name: str, key: dict, cfg: UNetConfig, train: Callable[[UNet], History],
                init: UNet | None = None, device: Device = "cpu") -> tuple[UNet, dict, bool]:
    """A :class:`UNet` from cache ``name`` if ``key`` (all else that changes the weights; its
    ``seed`` also seeds the initial weights) and ``cfg`` match, else trained (from ``init`` if
    given) and cached. Returns ``(net, curves, hit)``, curves thinned to at most 400 points."""
    torch.manual_seed(key["seed"])
    net = UNet(cfg)
    if init is not None:
        net.load_state_dict(init.state_dict())

    def run(model: UNet) -> dict[str, list[float]]:
        curves = train(model).curves
        return {k: [float(v) for v in c[:: math.ceil(len(c) / 400)]] for k, c in curves.items()}

    net, curves, hit = cached_module(name, {**key, "cfg": asdict(cfg)}, net, run)
    return net.to(device).eval(), curves, hit


# ---- Denoising with the same family
def add_noise(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    r"""$y = x + \sigma\varepsilon$, $\varepsilon\sim\mathcal N(0, I)$ — seeded, not clipped."""
    return images + sigma * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))


def denoise(net: UNet, noisy: torch.Tensor) -> torch.Tensor:
    r"""Residual denoiser (DnCNN-style): $\hat x = y - \mathrm{UNet}(y)$, clipped to [0, 1]."""
    inp, (h, w) = pad_to_multiple(noisy)
    return (noisy - net(inp)[..., :h, :w]).clamp(0, 1)


def train_denoiser(net: UNet, images: torch.Tensor, sigma: float, steps: int, batch: int, lr: float,
                   seed: int, device: Device = "cpu") -> History:
    r"""Fit $\lVert y - \mathrm{UNet}(y) - x\rVert^2$ on fresh noise each step (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(_: int) -> torch.Tensor:
        x = images[torch.randint(len(images), (batch,), generator=gen)]
        y = x + sigma * torch.randn(x.shape, generator=gen)
        x, y = x.to(device), y.to(device)
        return F.mse_loss(y - net(y), x)

    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = fit(step, steps, opt, scheduler=sched, desc="denoiser")
    net.eval()
    return history


def classical_denoise(noisy: torch.Tensor, method: str, strength: float, sigma: float):
    """scikit-image per image: ``"tv"`` (Chambolle, weight = ``strength``) or ``"nlm"`` (non-local
    means, ``h = strength·σ``, fast mode, 5×5 patches)."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    methods = {"tv": lambda img: denoise_tv_chambolle(img, weight=strength, channel_axis=-1),
               "nlm": lambda img: denoise_nl_means(img, h=strength * sigma, sigma=sigma,
                                                   patch_size=5, patch_distance=6, fast_mode=True,
                                                   channel_axis=-1)}
    if method not in methods:
        raise ValueError(f"unknown denoiser {method!r}: use 'tv' or 'nlm'")
    clean = [np.clip(methods[method](x).reshape(x.shape), 0, 1) for x in map(_to_hwc, noisy)]
    return torch.stack([_from_hwc(x) for x in clean])


# ---- Metrics
def psnr_pooled(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                data_range: float = 1.0) -> float:
    r"""PSNR of the squared error pooled over every (weighted) pixel of the whole set,
    $10\log_{10}\sum_{i,p} m_{ip} / \sum_{i,p} m_{ip}(\hat x_{ip}-x_{ip})^2$ (for ``data_range``
    1); ``weight`` is the hole mask, or ``None`` for whole-image PSNR."""
    err = (pred.double() - target.double()) ** 2
    if weight is None:
        mse = err.mean()
    else:
        weight = weight.double().expand_as(err)
        mse = (err * weight).sum() / weight.sum()
    return float("inf") if mse == 0 else float(10 * torch.log10(data_range**2 / mse))


def ssim_mean(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Whole-image SSIM (torchmetrics, Gaussian 11×11 window, σ=1.5, range 1), mean over images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0))


def hole_gradient_energy(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Edge energy in the hole, per image: $\sum_p m_p(|\partial_x x_p| + |\partial_y x_p|)$."""
    gx = (images[..., :, 1:] - images[..., :, :-1]).abs()[..., :-1, :]
    gy = (images[..., 1:, :] - images[..., :-1, :]).abs()[..., :, :-1]
    return ((gx + gy) * masks[..., :-1, :-1]).sum((1, 2, 3))


def hole_gradient_ratio(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> float:
    """Hole sharpness: summed edge energy of ``pred`` over ``target``'s (1 = truth, < 1 = blur)."""
    truth = hole_gradient_energy(target, masks).sum().clamp_min(1e-12)
    return float(hole_gradient_energy(pred, masks).sum() / truth)


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def hole_highfreq_ratio(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> float:
    r"""Fine detail in the hole against the truth's,
    $\sum_p m_p(\Delta\hat x_p)^2 / \sum_p m_p(\Delta x_p)^2$,
    with the 5-point Laplacian $\Delta$ (zero outside the image), per channel. 1 = as much
    high-frequency energy as the truth, < 1 = smoother (blur), > 1 = more texture or noise."""
    kernel = _LAPLACE.to(pred).expand(pred.shape[1], 1, 3, 3)

    def energy(x: torch.Tensor) -> torch.Tensor:
        lap = F.conv2d(x.double(), kernel.double(), padding=1, groups=x.shape[1])
        return (lap**2 * masks.double()).sum()

    return float(energy(pred) / energy(target).clamp_min(1e-12))


def repair_scores(fill: torch.Tensor, target: torch.Tensor, masks: torch.Tensor
                  ) -> dict[str, float]:
    """Hole PSNR (pooled), whole-image SSIM, hole gradient ratio and hole high-frequency ratio."""
    return {"psnr_hole": psnr_pooled(fill, target, masks), "ssim": ssim_mean(fill, target),
            "grad_ratio": hole_gradient_ratio(fill, target, masks),
            "hf_ratio": hole_highfreq_ratio(fill, target, masks)}


def by_ratio(fills: dict[str, torch.Tensor], target: torch.Tensor, masks: torch.Tensor
             ) -> pd.DataFrame:
    """Per mask-ratio bin (``RATIO_LABELS``) and method: the bin's images ``n``, their mean hole
    fraction ``ratio``, pooled hole ``psnr`` and whole-image ``ssim`` (long format, a row each)."""
    ratios = masks.mean((1, 2, 3))
    groups = np.asarray(ratio_bin(ratios.numpy()))
    rows = []
    for label in (b for b in RATIO_LABELS if (groups == b).any()):
        sel = torch.from_numpy(groups == label)
        for name, fill in fills.items():
            rows.append({"bin": label, "method": name, "n": int(sel.sum()),
                         "ratio": float(ratios[sel].mean()),
                         "psnr": psnr_pooled(fill[sel], target[sel], masks[sel]),
                         "ssim": ssim_mean(fill[sel], target[sel])})
    return pd.DataFrame(rows)


def per_image_hole_se(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor):
    """Per-image summed squared hole error and hole pixel count (the pieces pooled PSNR adds up)."""
    se = (((pred.double() - target.double()) ** 2) * masks).sum((1, 2, 3))
    return se.numpy(), masks.double().expand_as(pred).sum((1, 2, 3)).numpy()


def bin_table(fills: dict[str, torch.Tensor], target: torch.Tensor, masks: torch.Tensor,
              kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Hole PSNR pooled per mask-ratio bin (and per mask kind, given ``kinds``) and over ``all``:
    one row per group, columns ``n`` (images) and one per method."""
    groups = np.asarray(ratio_bin(masks.mean((1, 2, 3)).numpy()))
    keys = [(label, groups == label) for label in RATIO_LABELS]
    if kinds is not None:
        keys += [(f"kind={k}", np.asarray(kinds) == k) for k in dict.fromkeys(kinds)]
    keys.append(("all", np.ones(len(groups), bool)))
    pieces = {name: per_image_hole_se(fill, target, masks) for name, fill in fills.items()}
    rows: dict[str, dict[str, float]] = {}
    for label, sel in keys:
        if sel.any():
            rows[label] = {"n": int(sel.sum())}
            for name, (se, n) in pieces.items():
                rows[label][name] = float(10 * np.log10(n[sel].sum() / max(se[sel].sum(), 1e-30)))
    return pd.DataFrame.from_dict(rows, orient="index")


def row_figure(rows: dict[str, torch.Tensor], title: str, col_titles: Sequence[str] | None = None,
               size: float = 1.2) -> Figure:
    """Equal-length image rows as one grid, each row named once on its left (y-label)."""
    images = torch.cat(list(rows.values()))
    ncol = len(images) // len(rows)
    titles = None if col_titles is None else [*col_titles, *[""] * (len(images) - ncol)]
    fig = image_grid(images, nrow=ncol, titles=titles, title=title, size=size)
    for ax, name in zip(fig.axes[::ncol], rows):
        ax.axis("on"), ax.set(xticks=[], yticks=[]), ax.spines[:].set_visible(False)
        ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


# ---- Natural-photo patches
def photo_tensor(img: np.ndarray, scale: float = 1.0) -> torch.Tensor:
    """``H×W×3`` uint8 → ``(3, H', W')`` float in [0, 1], resized by ``scale`` (area filter)."""
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
