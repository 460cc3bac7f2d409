r"""DCGAN on 28×28 images (Chapter 03): generator, discriminator, a conditional variant, training.

The conditional $G$ gets a learned label embedding beside $z$, the conditional $D$ a projection
term $\langle e(y), h(x)\rangle$ (Miyato & Koyama 2018) and an auxiliary classifier head (AC-GAN,
Odena et al. 2017). The GAN step, with its R1 penalty: :mod:`aigc_utils.core.gan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .core.checkpoints import checkpoint_path, save_checkpoint
from .core.gan import gan_step
from .core.train import History, fit


# Sizes per profile (the notebook's ``cfg``): ``n_clf_train`` images and ``clf_epochs`` for the
# referee classifier, GAN steps (``steps_uncond``, ``steps_cond``) at ``batch`` images, ``n_eval``
# samples per metric, ``snapshots`` sample grids shown through training.
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"n_clf_train": 12_000, "clf_epochs": 1, "steps_uncond": 100, "steps_cond": 100,
              "batch": 64, "n_eval": 2_000, "snapshots": 3},
    "cpu": {"n_clf_train": 60_000, "clf_epochs": 3, "steps_uncond": 1_800, "steps_cond": 600,
            "batch": 64, "n_eval": 10_000, "snapshots": 5},
    "gpu": {"n_clf_train": 60_000, "clf_epochs": 5, "steps_uncond": 10_000, "steps_cond": 10_000,
            "batch": 128, "n_eval": 10_000, "snapshots": 6},
}


@dataclass(frozen=True)
class DCGANConfig:
    """Sizes of a DCGAN for square images whose side ``image_size`` is divisible by 4."""

    z_dim: int = 64
    g_channels: tuple[int, int] = (64, 32)  # C0 at 7×7, C1 at 14×14
    d_channels: tuple[int, int] = (32, 64)  # at 14×14, at 7×7
    num_classes: int = 0  # 0: unconditional; 10: conditioned on the Fashion-MNIST class
    image_channels: int = 1
    image_size: int = 28

    @property
    def base(self) -> int:
        """Side of the coarsest feature map: the image side after two stride-2 steps (7 for 28)."""
        return self.image_size // 4


def _labels(y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise ValueError("a conditional GAN needs labels y")
    return y


class Generator(nn.Module):
    r"""$G(z[, y])$: linear → $C_0\times7^2$ → ConvT+BN+ReLU → $C_1\times14^2$ → ConvT+tanh."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.g_channels
        self.embed = nn.Embedding(cfg.num_classes, cfg.z_dim) if cfg.num_classes else None
        in_dim = cfg.z_dim * (2 if cfg.num_classes else 1)
        flat = c0 * cfg.base * cfg.base
        self.project = nn.Sequential(nn.Linear(in_dim, flat, bias=False), nn.BatchNorm1d(flat),
                                     nn.ReLU(inplace=True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 4, stride=2, padding=1, bias=False),  # 7 → 14
            nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, cfg.image_channels, 4, stride=2, padding=1),  # 14 → 28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` (N, z_dim) and, if conditional, ``y`` (N,) → images (N, C, H, W) in [-1, 1]."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(_labels(y))], dim=1)
        h = self.project(z).view(z.shape[0], self.cfg.g_channels[0], self.cfg.base, self.cfg.base)
        return self.net(h)


class Discriminator(nn.Module):
    r"""$\ell(x[, y])$: Conv+LReLU → Conv+BN+LReLU → linear logit (+ $\langle e(y), h\rangle$);
    a conditional $D$ also has a linear class head on $h$ (AC-GAN)."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.d_channels
        self.net = nn.Sequential(
            nn.Conv2d(cfg.image_channels, c0, 4, stride=2, padding=1),  # 28 → 14, no BN on input
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1, bias=False),  # 14 → 7
            nn.BatchNorm2d(c1), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(),
        )
        feat = c1 * cfg.base * cfg.base
        self.head = nn.Linear(feat, 1)
        self.embed = nn.Embedding(cfg.num_classes, feat) if cfg.num_classes else None
        self.classify = nn.Linear(feat, cfg.num_classes) if cfg.num_classes else None
        if self.embed is not None:  # small like every other weight: N(0, 1) would make the
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # projection ±50 logits at the start

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                class_weight: float = 0.0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Images (N, C, H, W) in [-1, 1] → logits (N,) with $D(x) = \sigma(\ell)$; with
        ``class_weight`` $\mu>0$ also $\mu\cdot\mathrm{CE}(\text{class head}(h), y)$ (AC-GAN)."""
        h = self.net(x)
        logit = self.head(h).squeeze(1)
        if self.embed is None or self.classify is None:
            return logit
        y = _labels(y)
        logit = logit + (self.embed(y) * h).sum(dim=1)
        if class_weight:
            return logit, class_weight * F.cross_entropy(self.classify(h), y)
        return logit


def init_dcgan_weights(module: nn.Module) -> None:
    r"""DCGAN init: weights $\mathcal N(0, 0.02)$, batch-norm scales $\mathcal N(1, 0.02)$."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_dcgan(cfg: DCGANConfig, seed: int = 0) -> tuple[Generator, Discriminator]:
    """A freshly initialised (G, D) pair; the same seed gives the same weights."""
    torch.manual_seed(seed)
    G, D = Generator(cfg), Discriminator(cfg)
    G.apply(init_dcgan_weights)
    D.apply(init_dcgan_weights)
    return G, D


def train_dcgan(
    G: Generator, D: Discriminator, images: torch.Tensor, labels: torch.Tensor | None, *,
    steps: int, batch_size: int = 64, lr: float = 5e-4, betas: tuple[float, float] = (0.5, 0.999),
    r1: float = 0.0, class_weight: float = 0.0, device: torch.device | str = "cpu", seed: int = 0,
    snapshot_every: int = 0, evaluate: Callable[[], Mapping[str, float]] | None = None,
    eval_every: int = 0, progress: bool = True,
) -> tuple[History, list[tuple[int, torch.Tensor]]]:
    """``steps`` rounds of :func:`~aigc_utils.core.gan.gan_step` on fresh batches and fresh noise,
    with R1 weight ``r1`` and, for a conditional $D$, auxiliary class loss weight ``class_weight``.

    ``images`` are (N, C, H, W) in [0, 1] on the CPU. Returns the :class:`History` (``d_loss``,
    ``g_loss``, ``d_real``, ``d_fake`` per step; ``evaluate()`` every ``eval_every`` steps, $G$ in
    train mode) and, every ``snapshot_every`` steps, ``(step, images in [0, 1])`` of 64 fixed $z$.
    """
    conditional = G.cfg.num_classes > 0
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    gen = torch.Generator().manual_seed(seed)
    fixed_z = torch.randn(64, G.cfg.z_dim, generator=gen) if snapshot_every else None
    fixed_y = torch.arange(64) % G.cfg.num_classes if conditional else None
    snapshots: list[tuple[int, torch.Tensor]] = []

    def step(i: int) -> dict[str, float]:
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x = images[idx].to(device) * 2 - 1
        y = labels[idx].to(device) if conditional else None
        z = torch.randn(batch_size, G.cfg.z_dim, generator=gen).to(device)  # fresh noise every step
        # D has batch norm: real and fake are scored in separate batches (joint=False)
        return gan_step(lambda im: D(im, y, class_weight), x, G(z, y), opt_d, opt_g, r1=r1)

    def on_step(i: int) -> None:  # i = -1: before the first step
        if snapshot_every and ((i + 1) % snapshot_every == 0 or i + 1 == steps):
            images_now = sample_images(G, 64, z=fixed_z, labels=fixed_y, device=device)[0]
            snapshots.append((i + 1, images_now))
            G.train()

    on_step(-1)
    history = fit(step, steps, on_step=on_step, evaluate=evaluate, eval_every=eval_every,
                  desc="conditional DCGAN" if conditional else "DCGAN", progress=progress)
    G.eval()
    D.eval()
    return history, snapshots


@torch.no_grad()
def generator_key(cfg: DCGANConfig, steps: int, batch_size: int, lr: float, seed: int) -> dict:
    """Checkpoint key of a trained generator: chapter 03 shares its GAN under it, chapter 10 loads it."""
    return {"cfg": str(cfg), "steps": steps, "batch": batch_size, "lr": lr, "seed": seed}


def share_generator(G: Generator, key: dict, train_seconds: float) -> None:
    """Put chapter 03's trained generator in the checkpoint cache, for chapter 10's head-to-head."""
    state = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    extras = {"steps": key["steps"], "train_seconds": train_seconds}
    save_checkpoint(checkpoint_path("03_dcgan", key), {"state_dict": state, "extras": extras})


@torch.no_grad()
def sample_images(G: Generator, n: int, *, labels: torch.Tensor | None = None,
                  z: torch.Tensor | None = None, seed: int = 0, batch_size: int = 1000,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images, labels)``: ``n`` images in [0, 1] (CPU) from $G$ in eval mode, from ``z`` or fresh
    noise; a conditional $G$ gets uniform labels unless ``labels`` are given."""
    G.eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    if G.cfg.num_classes and labels is None:
        labels = torch.randint(0, G.cfg.num_classes, (n,), generator=gen)
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        zb = torch.randn(m, G.cfg.z_dim, generator=gen) if z is None else z[start : start + m]
        y = labels[start : start + m].to(device) if G.cfg.num_classes else None
        out.append((G(zb.to(device), y).clamp(-1, 1).cpu() + 1) / 2)
    return torch.cat(out), labels


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Spherical interpolation
    $\frac{\sin((1-t)\Omega)}{\sin\Omega} z_0 + \frac{\sin(t\Omega)}{\sin\Omega} z_1$ with
    $\cos\Omega = \hat z_0\cdot\hat z_1$: between vectors of equal norm it keeps that norm, on the
    shell where Gaussian noise lives (a straight line passes through norms $G$ never saw)."""
    t = t.view(-1, 1)
    cos = (z0 / z0.norm() * (z1 / z1.norm())).sum().clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.arccos(cos)
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def interpolate(G: Generator, z0: torch.Tensor, z1: torch.Tensor, n_steps: int = 8,
                y: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Images along the slerp path from ``z0`` to ``z1`` (each (z_dim,)), in [0, 1]."""
    zs = slerp(z0, z1, torch.linspace(0, 1, n_steps))
    labels = torch.full((n_steps,), int(y)) if G.cfg.num_classes else None
    return sample_images(G, n_steps, labels=labels, z=zs, device=device)[0]
