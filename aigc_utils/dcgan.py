"""DCGAN on 28×28 images (Chapter 03): generator, discriminator, a class-conditional variant, training.

The generator maps noise $z \\sim \\mathcal N(0, I)$ (and, when conditional, a class label $y$) to an
image through transposed convolutions with batch norm (Radford et al. 2016):

$$z \\xrightarrow{\\text{linear}} C_0\\times 7\\times 7 \\xrightarrow{\\text{ConvT}} C_1\\times 14\\times 14
\\xrightarrow{\\text{ConvT}} 1\\times 28\\times 28 \\xrightarrow{\\tanh} [-1, 1].$$

The discriminator mirrors it with strided convolutions and LeakyReLU and returns a *logit* $\\ell(x)$,
so $D(x) = \\sigma(\\ell(x))$ and every loss is a numerically safe ``softplus``. The conditional variant
feeds $G$ a learned label embedding beside $z$ and gives $D$ a projection term
$\\langle e(y), h(x)\\rangle$ (Miyato & Koyama 2018).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class DCGANConfig:
    """Sizes of a DCGAN for ``image_size``×``image_size`` images (``image_size`` divisible by 4)."""

    z_dim: int = 64
    g_channels: tuple[int, int] = (64, 32)  # C0 at 7×7, C1 at 14×14
    d_channels: tuple[int, int] = (32, 64)  # at 14×14, at 7×7
    num_classes: int = 0  # 0: unconditional; 10: conditioned on the Fashion-MNIST class
    image_channels: int = 1
    image_size: int = 28

    def as_key(self) -> dict:
        """The config as a plain dict (for checkpoint keys)."""
        return asdict(self)


class Generator(nn.Module):
    """$G(z[, y])$: linear → $C_0\\times7\\times7$ → ConvT+BN+ReLU → $C_1\\times14\\times14$ → ConvT → tanh."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.g_channels
        self.base = cfg.image_size // 4
        self.embed = nn.Embedding(cfg.num_classes, cfg.z_dim) if cfg.num_classes else None
        in_dim = cfg.z_dim * (2 if cfg.num_classes else 1)
        self.project = nn.Sequential(
            nn.Linear(in_dim, c0 * self.base * self.base, bias=False),
            nn.BatchNorm1d(c0 * self.base * self.base),
            nn.ReLU(inplace=True),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 4, stride=2, padding=1, bias=False),  # 7 → 14
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, cfg.image_channels, 4, stride=2, padding=1),  # 14 → 28
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` (N, z_dim), ``y`` (N,) class ids when conditional → images (N, C, H, W) in [-1, 1]."""
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels y")
            z = torch.cat([z, self.embed(y)], dim=1)
        h = self.project(z).view(z.shape[0], self.cfg.g_channels[0], self.base, self.base)
        return self.net(h)


class Discriminator(nn.Module):
    """$\\ell(x[, y])$: Conv(s2)+LReLU → Conv(s2)+BN+LReLU → linear logit (+ projection $\\langle e(y), h\\rangle$)."""

    def __init__(self, cfg: DCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.d_channels
        base = cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(cfg.image_channels, c0, 4, stride=2, padding=1),  # 28 → 14 (no BN on the input layer)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1, bias=False),  # 14 → 7
            nn.BatchNorm2d(c1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        feat = c1 * base * base
        self.head = nn.Linear(feat, 1)
        self.embed = nn.Embedding(cfg.num_classes, feat) if cfg.num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] → logits (N,) with $D(x) = \\sigma(\\ell)$."""
        h = self.net(x)
        logit = self.head(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels y")
            logit = logit + (self.embed(y) * h).sum(dim=1)
        return logit


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights $\\mathcal N(0, 0.02)$, batch-norm scales $\\mathcal N(1, 0.02)$."""
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


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Chapter 03, eq. (1): $L_D = -\\mathbb E_x\\log D(x) - \\mathbb E_z\\log(1 - D(G(z)))$.

    With $D = \\sigma(\\ell)$: $-\\log\\sigma(\\ell) = \\operatorname{softplus}(-\\ell)$ and
    $-\\log(1-\\sigma(\\ell)) = \\operatorname{softplus}(\\ell)$.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Chapter 03, eq. (2), the non-saturating loss: $L_G = -\\mathbb E_z \\log D(G(z)) = \\operatorname{softplus}(-\\ell)$.

    Its gradient stays large exactly when $D$ confidently rejects the fakes, unlike the saturating
    $\\mathbb E_z\\log(1 - D(G(z)))$ of the minimax game.
    """
    return F.softplus(-fake_logits).mean()


@dataclass
class GANHistory:
    """What a training run logged: per-step losses and mean $D$ outputs, and sample snapshots."""

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)  # mean D(x) on the real batch
    d_fake: list[float] = field(default_factory=list)  # mean D(G(z)) before the G step
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (step, images in [0, 1])


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1]."""
    return (images.clamp(-1, 1) + 1) / 2


def train_dcgan(
    G: Generator,
    D: Discriminator,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 5e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    device: torch.device | str = "cpu",
    seed: int = 0,
    snapshot_every: int = 0,
    fixed_z: torch.Tensor | None = None,
    fixed_y: torch.Tensor | None = None,
    callback: Callable[[int], None] | None = None,
    callback_every: int = 0,
    progress: bool = True,
) -> GANHistory:
    """Alternate one $D$ step and one $G$ step for a fixed number of ``steps`` (so a seed reproduces).

    ``images`` are (N, C, H, W) in [0, 1] on the CPU (scaled to [-1, 1] here). The fixes to the seed's
    loop are marked: fresh $z$ every step, ``D.zero_grad`` before the $D$ step, ``detach`` of the fakes
    in the $D$ step, and the fakes' graph recomputed through the *updated* $D$ for the $G$ step.
    ``callback(step)`` runs every ``callback_every`` steps and at the end (e.g. to measure FID over
    training); it finds $G$ in train mode and must leave it so.
    """
    device = torch.device(device)
    conditional = G.cfg.num_classes > 0
    if conditional and labels is None:
        raise ValueError("a conditional GAN needs labels")
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    gen = torch.Generator().manual_seed(seed)
    history = GANHistory()
    if snapshot_every and fixed_z is None:
        fixed_z = torch.randn(64, G.cfg.z_dim, generator=gen)
    if snapshot_every and conditional and fixed_y is None:
        fixed_y = torch.arange(fixed_z.shape[0]) % G.cfg.num_classes

    def snapshot(step: int) -> None:
        G.eval()
        with torch.no_grad():
            y = fixed_y.to(device) if conditional else None
            history.snapshots.append((step, to_unit(G(fixed_z.to(device), y)).cpu()))
        G.train()

    n = images.shape[0]
    for step in tqdm(range(steps), desc="DCGAN" + (" (conditional)" if conditional else ""), disable=not progress):
        if snapshot_every and step % snapshot_every == 0:
            snapshot(step)
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = (images[idx].to(device) * 2 - 1)
        y = labels[idx].to(device) if conditional else None
        z = torch.randn(batch_size, G.cfg.z_dim, generator=gen).to(device)  # fresh noise every step

        # --- D step: maximise log D(x) + log(1 - D(G(z))); fakes detached so no graph through G ---
        fake = G(z, y)
        opt_d.zero_grad(set_to_none=True)  # the seed zeroed only G's grads
        real_logits = D(x, y)
        fake_logits = D(fake.detach(), y)
        d_loss = discriminator_loss(real_logits, fake_logits)
        d_loss.backward()
        opt_d.step()

        # --- G step: non-saturating loss through the updated D ---
        opt_g.zero_grad(set_to_none=True)
        g_logits = D(fake, y)
        g_loss = generator_loss(g_logits)
        g_loss.backward()
        opt_g.step()  # D's grads from this backward are discarded by the next D.zero_grad

        history.d_loss.append(d_loss.item())
        history.g_loss.append(g_loss.item())
        history.d_real.append(torch.sigmoid(real_logits).mean().item())
        history.d_fake.append(torch.sigmoid(fake_logits).mean().item())
        if callback is not None and callback_every and (step + 1) % callback_every == 0:
            callback(step + 1)
    if snapshot_every:
        snapshot(steps)
    G.eval()
    D.eval()
    return history


@torch.no_grad()
def sample_images(
    G: Generator,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images in [0, 1] (on the CPU) from $G$ in eval mode; a conditional $G$ gets uniform labels
    unless ``labels`` are given. Returns ``(images, labels)``."""
    device = torch.device(device)
    G.eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    if G.cfg.num_classes and labels is None:
        labels = torch.randint(0, G.cfg.num_classes, (n,), generator=gen)
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        z = torch.randn(m, G.cfg.z_dim, generator=gen).to(device)
        y = labels[start : start + m].to(device) if G.cfg.num_classes else None
        out.append(to_unit(G(z, y)).cpu())
    return torch.cat(out), labels


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation $\\frac{\\sin((1-t)\\Omega)}{\\sin\\Omega} z_0 + \\frac{\\sin(t\\Omega)}{\\sin\\Omega} z_1$,
    $\\cos\\Omega = \\hat z_0\\cdot\\hat z_1$: stays on the shell where Gaussian noise lives (a straight line
    through the middle passes through norms $G$ never saw)."""
    t = t.view(-1, 1)
    cos = (z0 / z0.norm() * (z1 / z1.norm())).sum().clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.arccos(cos)
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


@torch.no_grad()
def interpolate(
    G: Generator,
    z0: torch.Tensor,
    z1: torch.Tensor,
    n_steps: int = 8,
    y: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Images along the slerp path from ``z0`` to ``z1`` (each (z_dim,)), in [0, 1]."""
    G.eval().to(device)
    zs = slerp(z0, z1, torch.linspace(0, 1, n_steps)).to(device)
    labels = torch.full((n_steps,), int(y), device=device) if G.cfg.num_classes else None
    return to_unit(G(zs, labels)).cpu()
