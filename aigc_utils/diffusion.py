r"""Denoising diffusion on 28×28 images (Chapter 10): schedules, the training loss, a small U-Net, samplers.

The forward process $q(x_t\mid x_0)=\mathcal N(\sqrt{\bar\alpha_t}\,x_0,(1-\bar\alpha_t)I)$ (Ho et al. 2020)
under a linear or cosine (Nichol & Dhariwal 2021) schedule; a network trained to predict the velocity
$v=\sqrt{\bar\alpha_t}\,\varepsilon-\sqrt{1-\bar\alpha_t}\,x_0$ (Salimans & Ho 2022) with min-SNR
weighting (Hang et al. 2023) and label dropout for classifier-free guidance (Ho & Salimans 2022);
DDPM ancestral and DDIM ($\eta=0$, Song et al. 2021) sampling on any sub-sequence of steps; and
flow matching on the straight path $x_t=(1-t)x_0+t\varepsilon$ (Lipman et al. 2023; Liu et al. 2023)
with the same network, loop and sampler interface (Euler steps).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .core.checkpoints import cached_module, checkpoint_path, load_checkpoint
from .core.train import History, Stopwatch, adamw, fit, warmup_cosine_scheduler
from .dcgan import DCGANConfig, build_dcgan, generator_key, train_dcgan

SIZES = {
    # steps/batch/lr: diffusion training; channels: U-Net widths at 14×14 and 7×7; n_eval: samples per
    # headline metric (GAN and diffusion alike); sweep_n: samples per point of the steps and guidance
    # sweeps; sample_steps: DDIM steps of the headline numbers; gan_steps: chapter 03's GAN run when
    # chapter 03's own is not in the cache (its full length in cpu; shorter in smoke and gpu)
    "smoke": {"steps": 150, "batch": 64, "lr": 3e-3, "channels": (16, 32), "n_eval": 300,
              "sweep_n": 100, "sweep_steps": (5, 10), "guidance": (1.0, 2.0), "sample_steps": 5,
              "gan_steps": 60},
    "cpu": {"steps": 2_200, "batch": 64, "lr": 3e-3, "channels": (16, 32), "n_eval": 1_000,
            "sweep_n": 300, "sweep_steps": (5, 10, 25), "guidance": (0.0, 1.0, 2.0, 4.0, 6.0),
            "sample_steps": 10, "gan_steps": 1_800},
    "gpu": {"steps": 10_000, "batch": 256, "lr": 1e-3, "channels": (64, 128), "n_eval": 10_000,
            "sweep_n": 2_000, "sweep_steps": (5, 10, 25, 50, 100), "guidance": (0.0, 1.0, 2.0, 4.0),
            "sample_steps": 25, "gan_steps": 10_000},
}


# --- the forward process ---------------------------------------------------------------------------


def linear_alpha_bar(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    r"""$\bar\alpha_t=\prod_{s\le t}(1-\beta_s)$ for $\beta$ linear from ``beta_1`` to ``beta_T``
    (Ho et al. 2020); index 0 is the clean image ($\bar\alpha_0=1$), length ``T + 1``."""
    betas = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def cosine_alpha_bar(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    r"""$\bar\alpha_t=f(t)/f(0)$, $f(t)=\cos^2\big(\frac{t/T+s}{1+s}\frac\pi2\big)$ (Nichol & Dhariwal
    2021), with each $\beta_t=1-\bar\alpha_t/\bar\alpha_{t-1}$ clipped at ``max_beta``."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    r"""Signal-to-noise ratio $\bar\alpha_t/(1-\bar\alpha_t)$."""
    return alpha_bar / (1 - alpha_bar)


def q_sample(x0: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    r"""$x_t=\sqrt{\bar\alpha_t}\,x_0+\sqrt{1-\bar\alpha_t}\,\varepsilon$: step $t$ in one jump."""
    ab = alpha_bar.to(x0.device)[t].float().view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# --- the objective ---------------------------------------------------------------------------------


def drop_labels(y: torch.Tensor, num_classes: int, p_uncond: float,
                gen: torch.Generator) -> torch.Tensor:
    """Label dropout: a share ``p_uncond`` of the labels becomes the null label ``num_classes``."""
    drop = torch.rand(len(y), generator=gen).to(y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, num_classes), y)


def diffusion_loss(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                   alpha_bar: torch.Tensor, p_uncond: float = 0.1,
                   gamma: float = 5.0) -> torch.Tensor:
    r"""One training step's loss: noise $x_0$ to a random $t$, predict $v$, weight by min-SNR.

    With $v=\sqrt{\bar\alpha_t}\varepsilon-\sqrt{1-\bar\alpha_t}x_0$ the $v$-loss equals
    $(1+\mathrm{SNR}_t)$ times the $x_0$-loss, and $\min(\mathrm{SNR}_t,\gamma)/(\mathrm{SNR}_t+1)$
    turns it into the min-SNR-$\gamma$ weighted $x_0$-loss. Label dropout (``p_uncond``) lets one
    network learn both $v(x_t, t, y)$ and $v(x_t, t, \varnothing)$.
    """
    n, T = len(x0), len(alpha_bar) - 1
    t = torch.randint(1, T + 1, (n,), generator=gen).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    y = drop_labels(y, model.num_classes, p_uncond, gen)
    ab = alpha_bar.to(x0.device)[t].float().view(-1, 1, 1, 1)
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    s = snr(ab)
    weight = torch.minimum(s, torch.full_like(s, gamma)) / (s + 1)
    return (weight * (model(x_t, t, y) - v) ** 2).mean()


FLOW_TIME_SCALE = 1000.0  # flow time t in [0, 1] reaches the U-Net as 1000·t: diffusion's step range


def flow_matching_loss(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                       p_uncond: float = 0.1) -> torch.Tensor:
    r"""Flow matching on the straight path $x_t=(1-t)\,x_0+t\,\varepsilon$: regress its velocity
    $u=\varepsilon-x_0$, at $t=\sigma(n)$, $n\sim\mathcal N(0,1)$ (logit-normal, Esser et al.
    2024: more training on the middle of the path, where the velocity is hardest to guess)."""
    t = torch.sigmoid(torch.randn(len(x0), generator=gen)).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    y = drop_labels(y, model.num_classes, p_uncond, gen)
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * x0 + tt * noise
    return ((model(x_t, t * FLOW_TIME_SCALE, y) - (noise - x0)) ** 2).mean()


# --- the network -----------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Sinusoidal features $[\cos(t\,\omega_k), \sin(t\,\omega_k)]$, $\omega_k=P^{-k/(d/2)}$."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the projected time(+label) embedding, twice; residual path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


@dataclass(frozen=True)
class UNetConfig:
    """A two-level U-Net on 2×2-patched images: 28×28×1 → 14×14×4 → (c0 at 14², c1 at 7²)."""

    channels: tuple[int, int] = (32, 64)
    num_classes: int = 10  # label index num_classes is the null label of classifier-free guidance
    patch: int = 2  # pixel-unshuffle factor: a lossless 2×2 space-to-depth before the first conv
    emb_dim: int = 128


class UNet(nn.Module):
    r"""$v_\theta(x_t, t, y)$: patch → conv → ResBlock (14²) → down → 2 ResBlocks (7²) → up →
    ResBlock on [up, skip] (14²) → conv → un-patch. Time and label enter every ResBlock."""

    def __init__(self, cfg: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, cfg.num_classes
        (c0, c1), e, pc = cfg.channels, cfg.emb_dim, cfg.patch ** 2
        self.time_mlp = nn.Sequential(nn.Linear(c0, e), nn.SiLU(), nn.Linear(e, e))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, e)
        self.patchify, self.unpatchify = nn.PixelUnshuffle(cfg.patch), nn.PixelShuffle(cfg.patch)
        self.stem = nn.Conv2d(pc, c0, 3, padding=1)
        self.enc = ResBlock(c0, c0, e)
        self.down = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.mid1, self.mid2 = ResBlock(c1, c1, e), ResBlock(c1, c1, e)
        self.up = nn.ConvTranspose2d(c1, c0, 4, stride=2, padding=1)
        self.dec = ResBlock(2 * c0, c0, e)
        self.head = nn.Sequential(nn.GroupNorm(8, c0), nn.SiLU(), nn.Conv2d(c0, pc, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` (N, 1, 28, 28), steps ``t`` (N,), labels ``y`` (N,) → prediction like ``x``.
        """
        emb = self.time_mlp(timestep_embedding(t, self.cfg.channels[0])) + self.label_emb(y)
        h0 = self.enc(self.stem(self.patchify(x)), emb)
        h = self.mid2(self.mid1(self.down(h0), emb), emb)
        h = self.dec(torch.cat([self.up(h), h0], dim=1), emb)
        return self.unpatchify(self.head(h))


# --- training --------------------------------------------------------------------------------------


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def train_diffusion(model: UNet, images: torch.Tensor, labels: torch.Tensor, loss: LossFn,
                    *, steps: int, batch_size: int = 64, lr: float = 2e-3, ema_decay: float = 0.995,
                    seed: int = 0, device: torch.device | str = "cpu", desc: str = "diffusion",
                    progress: bool = True) -> tuple[UNet, History]:
    """``loss(model, x0, y, gen)`` (:func:`diffusion_loss` or :func:`flow_matching_loss`) minimised
    by AdamW with warm-up and cosine decay on fresh batches; returns an EMA copy of the weights
    (decay ``ema_decay``, warmed up as $\\min(d, (1+i)/(10+i))$) and the :class:`History`."""
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    opt = adamw(model, lr, weight_decay=0.0)
    x_all = images * 2 - 1

    def step(i: int) -> torch.Tensor:
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        return loss(model, x_all[idx].to(device), labels[idx].to(device), gen)

    @torch.no_grad()
    def update_ema(i: int) -> None:
        d = min(ema_decay, (1 + i) / (10 + i))
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - d)

    history = fit(step, steps, opt, scheduler=warmup_cosine_scheduler(opt, steps // 20, steps),
                  clip=1.0, on_step=update_ema, desc=desc, progress=progress)
    return ema, history


# --- sampling --------------------------------------------------------------------------------------


def guided(model: UNet, x: torch.Tensor, t: float, y: torch.Tensor,
           guidance: float = 1.0) -> torch.Tensor:
    r"""The network's output at step ``t``; with ``guidance`` $w\ne1$ the classifier-free mix
    $o_\varnothing+w\,(o_y-o_\varnothing)$ of the outputs with label $y$ and with the null label
    ($w=0$: unconditional)."""
    tt = torch.full((len(x),), t, device=x.device)
    if guidance == 1.0:
        return model(x, tt, y)
    null = torch.full_like(y, model.num_classes)
    out_y, out_null = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
    return out_null + guidance * (out_y - out_null)


def predict_x0_eps(model: UNet, x: torch.Tensor, t: int, y: torch.Tensor, ab: float,
                   guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""$(\hat x_0, \hat\varepsilon)$ from the (guided) $v$-prediction at step ``t``."""
    v = guided(model, x, t, y, guidance)
    x0 = math.sqrt(ab) * x - math.sqrt(1 - ab) * v
    eps = math.sqrt(1 - ab) * x + math.sqrt(ab) * v
    return x0.clamp(-1, 1), eps


def ddim_step(x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, ab_s: float) -> torch.Tensor:
    r"""DDIM, $\eta=0$:
    $x_s=\sqrt{\bar\alpha_s}\,\hat x_0+\sqrt{1-\bar\alpha_s}\,\hat\varepsilon$."""
    return math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps


def ddpm_step(x: torch.Tensor, x0: torch.Tensor, ab_t: float, ab_s: float,
              gen: torch.Generator) -> torch.Tensor:
    r"""DDPM ancestral step $t\to s<t$: a draw from the posterior $q(x_s\mid x_t,\hat x_0)$ with
    $\beta=1-\bar\alpha_t/\bar\alpha_s$,
    mean $\frac{\sqrt{\bar\alpha_s}\beta}{1-\bar\alpha_t}\hat x_0
    +\frac{\sqrt{1-\beta}(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t$,
    variance $\frac{1-\bar\alpha_s}{1-\bar\alpha_t}\beta$."""
    beta = 1 - ab_t / ab_s
    mean = (math.sqrt(ab_s) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_s) * x) / (1 - ab_t)
    if ab_s >= 1.0:
        return mean
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    return mean + math.sqrt((1 - ab_s) / (1 - ab_t) * beta) * noise


def euler_step(x: torch.Tensor, u: torch.Tensor, t: float, s: float) -> torch.Tensor:
    r"""One Euler step of the flow $\mathrm dx/\mathrm dt=u$ from time $t$ to $s<t$:
    $x_s=x_t+(s-t)\,\hat u$."""
    return x + (s - t) * u


@torch.no_grad()
def sample(model: UNet, alpha_bar: torch.Tensor | None, n: int, steps: int, *,
           method: str = "ddim", labels: torch.Tensor | None = None, guidance: float = 1.0,
           seed: int = 0, batch_size: int = 500, trajectory: bool = False,
           device: torch.device | str = "cpu") -> torch.Tensor | tuple[torch.Tensor, list]:
    """``n`` images in [0, 1] from pure noise in ``steps`` evenly spaced steps of ``method``:
    ``"ddim"`` or ``"ddpm"`` for a diffusion model (on ``alpha_bar``), ``"euler"`` for a flow
    (``alpha_bar`` unused); ``labels=None`` samples unconditionally (the null label).
    With ``trajectory``, also the list of ``(s, x_s, x̂_0)`` after each step (first batch only)."""
    if method not in ("ddim", "ddpm", "euler"):
        raise ValueError(f"unknown sampler {method!r}: use 'ddim', 'ddpm' or 'euler'")
    model.eval().to(device)
    gen = torch.Generator().manual_seed(seed)
    if method != "euler" and alpha_bar is None:
        raise ValueError(f"the {method} sampler needs the diffusion schedule alpha_bar")
    ab = [] if alpha_bar is None else alpha_bar.tolist()
    if method == "euler":  # flow time from 1 (noise) to 0 (data)
        ts: list = torch.linspace(1, 0, steps + 1).tolist()
    else:
        ts = torch.linspace(len(ab) - 1, 0, steps + 1).round().long().tolist()
    y_all = torch.full((n,), model.num_classes) if labels is None else labels
    out, traj = [], []
    for start in range(0, n, batch_size):
        y = y_all[start : start + batch_size].to(device)
        x = torch.randn((len(y), 1, 28, 28), generator=gen).to(device)
        for t, s in zip(ts[:-1], ts[1:]):
            if method == "euler":
                u = guided(model, x, t * FLOW_TIME_SCALE, y, guidance)
                x0 = (x - t * u).clamp(-1, 1)  # where the current velocity would end at t = 0
                x = euler_step(x, u, t, s)
            else:
                x0, eps = predict_x0_eps(model, x, t, y, ab[t], guidance)
                x = ddim_step(x, x0, eps, ab[s]) if method == "ddim" else ddpm_step(
                    x, x0, ab[t], ab[s], gen)
            if trajectory and start == 0:
                traj.append((s, x.cpu(), x0.cpu()))
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    images = torch.cat(out)
    return (images, traj) if trajectory else images


# --- the opponent: chapter 03's GAN ----------------------------------------------------------------


def chapter03_gan(images: torch.Tensor, steps: int, fallback_steps: int, *, batch_size: int = 64,
                  seed: int = 0, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, bool]:
    """Chapter 03's unconditional DCGAN generator after ``steps`` steps, from the checkpoint cache;
    when that one is not cached, a shorter run of ``fallback_steps`` (trained now if not cached
    either). Returns ``(G, {"steps", "train_seconds"}, loaded_from_cache)``."""
    cfg = DCGANConfig()
    G, D = build_dcgan(cfg, seed=seed)

    def key(n: int) -> dict:
        return generator_key(cfg, n, batch_size, 5e-4, seed)

    payload = load_checkpoint(checkpoint_path("03_dcgan", key(steps)))
    if payload is not None:
        G.load_state_dict(payload["state_dict"])
        return G.to(device).eval(), dict(payload["extras"]), True

    def train(g: nn.Module) -> dict:
        with Stopwatch() as sw:
            train_dcgan(g, D, images, None, steps=fallback_steps, batch_size=batch_size, lr=5e-4,
                        device=device, seed=seed, progress=False)
        return {"steps": fallback_steps, "train_seconds": sw.seconds}

    G, extras, hit = cached_module("03_dcgan", key(fallback_steps), G, train)
    return G.to(device).eval(), extras, hit
