r"""Chapter 02 · the GAN objective checked numerically, and mode collapse on PacGAN's 2-D problems.

Densities are NumPy callables, integrals trapezoid rules on a fine grid, expectations Monte Carlo
averages; the GAN losses and the D/G step are :mod:`aigc_utils.core.gan`'s.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .core.checkpoints import cached_payload, checkpoint_path
from .core.gan import discriminator_loss, gan_step
from .core.train import History, fit, optimizer_step

Density = Callable[[np.ndarray], np.ndarray]
LOG4 = math.log(4.0)

# Sizes per profile; ``setup_chapter`` picks one. d_steps: training steps of the 1-D discriminator
# (section 4); mc_samples: Monte Carlo samples per density; early_steps: alternating steps of the
# early-training demo (section 6); ring_iters, grid_iters: iterations of each toy GAN (section 7);
# seeds: toy-GAN seeds averaged (seed, seed + 1, ...).
SIZES = {
    "smoke": dict(d_steps=300, mc_samples=50_000, early_steps=150, ring_iters=500, grid_iters=300,
                  seeds=1),
    "cpu": dict(d_steps=1500, mc_samples=200_000, early_steps=400, ring_iters=6000,
                grid_iters=12000, seeds=1),
    "gpu": dict(d_steps=3000, mc_samples=1_000_000, early_steps=400, ring_iters=6000,
                grid_iters=12000, seeds=3),
}
X_COMPARE = (-3.0, 3.0, 601)  # grid on which the trained D is compared with D*
X_INTEGRATE = (-12.0, 12.0, 24001)  # quadrature grid for the integrals
# early-training demo: data N(3, 0.5²), generator G(z) = mu + s·z started at mu = -3, s = 0.5
EARLY_DATA = ((1.0,), (3.0,), (0.5,))
EARLY_G_INIT = (-3.0, 0.5)
EARLY_D_PRETRAIN = 200  # steps of D alone, so that it confidently rejects the fakes
# toy GANs (PacGAN's 2-D problems): what worked here; PacGAN's own settings are in the chapter's text
LR = {"ring": 2e-3, "grid": 2e-3}  # Adam's learning rate per problem
TOY = dict(batch=256, z_dim=16, hidden=128, depth=4, beta1=0.5, beta2=0.999, decay_from=0.5,
           snapshots=4, n_eval=2500)


@dataclass(frozen=True)
class GaussianMixture1D:
    r"""$p(x) = \sum_k w_k\, \mathcal N(x; \mu_k, s_k^2)$ — a density to evaluate *and* sample."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def pdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)[..., None]
        w, m, s = (np.asarray(v, dtype=float) for v in (self.weights, self.means, self.stds))
        return (w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples as a float tensor of shape ``(n,)``."""
        weights = torch.tensor(self.weights, dtype=torch.float64)
        idx = torch.multinomial(weights, n, replacement=True, generator=generator)
        mean = torch.tensor(self.means, dtype=torch.float32)[idx]
        std = torch.tensor(self.stds, dtype=torch.float32)[idx]
        return mean + std * torch.randn(n, generator=generator)


def optimal_discriminator(p_data: Density, p_g: Density, x: np.ndarray) -> np.ndarray:
    r"""Eq. (2): $D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_g(x))$ (or 1/2)."""
    a, b = p_data(x), p_g(x)
    total = a + b
    return np.divide(a, total, out=np.full_like(total, 0.5), where=total > 0)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""$x \log y$ with the convention $0 \log 0 = 0$."""
    out = np.zeros_like(x, dtype=float)
    mask = x > 0
    out[mask] = x[mask] * np.log(y[mask])
    return out


def value_by_quadrature(d: Density, p_data: Density, p_g: Density, x: np.ndarray) -> float:
    r"""$V(D, G) = \int p_\text{data} \log D + p_g \log(1 - D)\, dx$ by the trapezoid rule."""
    dx = np.clip(d(x), 1e-300, 1.0)
    integrand = _xlogy(p_data(x), dx) + _xlogy(p_g(x), np.clip(1.0 - d(x), 1e-300, 1.0))
    return float(np.trapezoid(integrand, x))


def value_by_sampling(d: Density, real: np.ndarray, fake: np.ndarray) -> float:
    r"""$V(D, G)$ by definition: $\frac1N\sum_i \log D(x_i) + \frac1M\sum_j \log(1 - D(G(z_j)))$."""
    eps = 1e-12
    real_term = np.mean(np.log(np.clip(d(real), eps, 1)))
    return float(real_term + np.mean(np.log(np.clip(1 - d(fake), eps, 1))))


def kl_divergence(p: Density, q: Density, x: np.ndarray) -> float:
    r"""$\mathrm{KL}(p\,\|\,q) = \int p \log (p / q)\, dx$ by the trapezoid rule on ``x``."""
    px, qx = p(x), q(x)
    ratio = np.divide(px, qx, out=np.ones_like(px), where=qx > 0)
    return float(np.trapezoid(_xlogy(px, ratio), x))


def jensen_shannon(p: Density, q: Density, x: np.ndarray) -> float:
    r"""$\mathrm{JSD}(p\|q) = \frac12\mathrm{KL}(p\|m)+\frac12 \mathrm{KL}(q\|m)$, $m = (p+q)/2$."""
    m: Density = lambda t: 0.5 * (p(t) + q(t))  # noqa: E731
    return 0.5 * kl_divergence(p, m, x) + 0.5 * kl_divergence(q, m, x)


def c_of_g(p_data: Density, p_g: Density, x: np.ndarray) -> float:
    r"""Eq. (3): $C(G) = -\log 4 + 2\,\mathrm{JSD}(p_\text{data}\,\|\,p_g)$."""
    return -LOG4 + 2.0 * jensen_shannon(p_data, p_g, x)


def toy_mlp(n_in: int, n_out: int, hidden: int, depth: int,
            act: Callable[[], nn.Module]) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with activation ``act``, then a linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def lr_factor(step: int, iters: int, decay_from: float) -> float:
    """1 for the first ``decay_from`` fraction of training, then linearly down to 0 at the end."""
    start = int(decay_from * iters)
    return 1.0 if step < start else max(0.0, 1.0 - (step - start) / max(1, iters - start))


def train_discriminator_1d(data: GaussianMixture1D, gen: GaussianMixture1D, steps: int,
                           batch: int = 512, lr: float = 3e-3, hidden: int = 64, depth: int = 2,
                           seed: int = 0) -> tuple[nn.Module, History]:
    r"""Maximise $V(D, G)$ over $D$ for a *fixed* $p_g$ on fresh samples: minimise $L_D = -\hat V$
    (Adam, learning rate decaying linearly to 0); returns the logit network and its history."""
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = toy_mlp(1, 1, hidden, depth, nn.SiLU)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, 0.0))

    def step(_: int) -> torch.Tensor:
        real, fake = data.sample(batch, rng)[:, None], gen.sample(batch, rng)[:, None]
        return discriminator_loss(net(real), net(fake))

    return net, fit(step, steps, opt, scheduler=sched, desc="D for a fixed G", progress=False)


def as_probability(net: nn.Module) -> Density:
    r"""Wrap a logit network as a NumPy function $x \mapsto \sigma(a(x))$."""

    def d(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1)
            return torch.sigmoid(net(t)).double().numpy().reshape(np.shape(x))

    return d


def generator_logit_gradients(d_fake: np.ndarray) -> dict[str, np.ndarray]:
    r"""Closed-form $|\partial L_G / \partial a|$ per sample for both generator losses."""
    d_fake = np.asarray(d_fake, dtype=float)
    return {"saturating": d_fake, "non_saturating": 1.0 - d_fake}


def early_training_1d(loss: str, data: GaussianMixture1D, g_init: tuple[float, float],
                      d_pretrain: int, steps: int, batch: int = 256, g_lr: float = 0.05,
                      d_lr: float = 1e-3, seed: int = 0) -> History:
    r"""A 1-D GAN $G(z) = \mu + s z$ started far from the data; ``loss`` names the generator loss.
    $D$ trains alone for ``d_pretrain`` steps, then ``gan_step`` alternates $D$ (Adam) and $G$
    (plain SGD: the step is proportional to the gradient) for ``steps`` steps. The history holds
    ``mu``, ``grad_mu`` ($|\partial L_G/\partial\mu|$), ``d_fake``."""
    if loss not in ("saturating", "non_saturating"):
        raise ValueError(f"loss must be 'saturating' or 'non_saturating', got {loss!r}")
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu = torch.tensor(float(g_init[0]), requires_grad=True)
    log_s = torch.tensor(math.log(g_init[1]), requires_grad=True)
    net = toy_mlp(1, 1, 32, 2, nn.SiLU)
    opt_d = torch.optim.Adam(net.parameters(), lr=d_lr, betas=(0.5, 0.999))
    opt_g = torch.optim.SGD([mu, log_s], lr=g_lr)

    def step(i: int) -> dict[str, float]:
        real = data.sample(batch, rng)[:, None]
        fake = (mu + log_s.exp() * torch.randn(batch, generator=rng))[:, None]
        if i < d_pretrain:
            d_loss = discriminator_loss(net(real), net(fake.detach()))
            return {"d_loss": optimizer_step(opt_d, d_loss)}
        out = gan_step(net, real, fake, opt_d, opt_g, non_saturating=loss == "non_saturating")
        return {**out, "grad_mu": abs(float(mu.grad)), "mu": float(mu.detach())}

    return fit(step, d_pretrain + steps, desc=loss, progress=False)


# --- 2-D toy problems (PacGAN) ------------------------------------------------------------------
@dataclass(frozen=True)
class ToyProblem:
    """An equal-weight mixture of isotropic 2-D Gaussians with standard deviation ``sigma``."""

    name: str
    means: torch.Tensor  # (K, 2)
    sigma: float

    @property
    def n_modes(self) -> int:
        return int(self.means.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` samples ``(n, 2)``: a uniformly chosen mode plus $\sigma\,\varepsilon$."""
        idx = torch.randint(0, self.n_modes, (n,), generator=generator)
        return self.means[idx] + self.sigma * torch.randn(n, 2, generator=generator)


def ring_problem(n_modes: int = 8, radius: float = 1.0, sigma: float = 0.01) -> ToyProblem:
    """PacGAN's 2D-ring: ``n_modes`` Gaussians evenly spaced on a circle of radius ``radius``."""
    angles = torch.arange(n_modes, dtype=torch.float32) * (2 * math.pi / n_modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return ToyProblem("ring", means, sigma)


def grid_problem(side: int = 5, spacing: float = 2.0, sigma: float = 0.05) -> ToyProblem:
    r"""PacGAN's 2D-grid: ``side``×``side`` Gaussians at $\{-4,-2,0,2,4\}^2$ (for the defaults)."""
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(coords, coords, indexing="ij")
    return ToyProblem("grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), sigma)


@dataclass(frozen=True)
class ModeMetrics:
    """Covered ``modes``, fraction ``hq`` of high-quality samples, HQ ``counts`` per mode."""

    modes: int
    hq: float
    counts: np.ndarray


def mode_metrics(samples: torch.Tensor | np.ndarray, problem: ToyProblem,
                 threshold: float = 3.0) -> ModeMetrics:
    r"""PacGAN's two numbers: nearest mode $k^*$ per sample, high quality within $3\sigma$ of it."""
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    dist = torch.cdist(x, problem.means.double()) / problem.sigma  # (N, K) in units of sigma
    best, nearest = dist.min(dim=1)
    good = best < threshold
    counts = torch.bincount(nearest[good], minlength=problem.n_modes).numpy()
    return ModeMetrics(int((counts > 0).sum()), float(good.double().mean()), counts)


class ToyGenerator(nn.Module):
    r"""$G: \mathbb R^{d_z} \to \mathbb R^2$, an MLP with ReLU and no batch norm."""

    def __init__(self, z_dim: int = 16, hidden: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = toy_mlp(z_dim, 2, hidden, depth, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PackedDiscriminator(nn.Module):
    r"""$D(x_1,\dots,x_m)$: an MLP on the concatenation of ``pack`` samples; one logit per pack.
    ``pack = 1`` is the ordinary discriminator. Input ``(B·m, 2)`` (or already ``(B, 2m)``) is
    reshaped to ``(B, 2m)``, so consecutive samples form one pack (all real or all fake)."""

    def __init__(self, pack: int = 1, hidden: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.pack = pack
        self.net = toy_mlp(2 * pack, 1, hidden, depth, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 2 * self.pack)).squeeze(1)


@dataclass(frozen=True)
class ToyGANConfig:
    """Everything that changes the trained weights (it is also the checkpoint key)."""

    pack: int = 1
    iters: int = 12000
    batch: int = 256  # packs per discriminator batch
    z_dim: int = 16
    hidden: int = 128
    depth: int = 4
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    decay_from: float = 0.5  # linear decay of the learning rate to 0 over the last half
    snapshots: int = 4  # sample scatter snapshots kept during training (plus the final one)
    n_eval: int = 2500
    seed: int = 0


def train_pacgan(problem: ToyProblem, cfg: ToyGANConfig, device: torch.device | str = "cpu",
                 progress: bool = True) -> dict:
    """Train a packed GAN on ``problem`` (non-saturating, seeded, one CPU thread): ``gan_step`` on
    ``batch`` packs, one per row; a cacheable payload (G's weights, snapshots, losses, seconds)."""
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # bit-identical whether run alone or beside another job
    try:
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        G = ToyGenerator(cfg.z_dim, cfg.hidden, cfg.depth).to(device)
        D = PackedDiscriminator(cfg.pack, cfg.hidden, cfg.depth).to(device)
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}  # one kernel per step
        betas = (cfg.beta1, cfg.beta2)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), cfg.lr, betas, **fused) for m in (G, D))
        decay = lambda s: lr_factor(s, cfg.iters, cfg.decay_from)  # noqa: E731
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in (opt_g, opt_d)]
        z_eval = torch.randn(cfg.n_eval, cfg.z_dim, generator=gen).to(device)
        k = cfg.snapshots + 1
        snap_at = sorted({round(cfg.iters * i / k) for i in range(1, k)} | {cfg.iters})
        n, snaps = cfg.batch * cfg.pack, []  # samples per side per step

        def step(_: int) -> dict[str, float]:
            real = problem.sample(n, gen).to(device).reshape(cfg.batch, -1)  # one pack per row
            fake = G(torch.randn(n, cfg.z_dim, generator=gen).to(device)).reshape(cfg.batch, -1)
            return gan_step(D, real, fake, opt_d, opt_g, joint=True)

        def on_step(i: int) -> None:
            for s in scheds:
                s.step()
            if i + 1 in snap_at:
                with torch.no_grad():
                    snaps.append(G(z_eval).cpu())

        desc = f"{problem.name} pack={cfg.pack}"
        history = fit(step, cfg.iters, on_step=on_step, desc=desc, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return {"state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
            "snap_iters": torch.tensor(snap_at), "snap_samples": torch.stack(snaps),
            "samples": snaps[-1], "d_loss": torch.tensor(history["d_loss"]),
            "g_loss": torch.tensor(history["g_loss"]), "seconds": history.seconds}


def _cache_entry(problem: ToyProblem, cfg: ToyGANConfig) -> tuple[str, dict]:
    key = {"problem": problem.name, "means": problem.means.tolist(), "sigma": problem.sigma,
           "step": "core.gan.gan_step", **asdict(cfg)}
    return f"02_toy_gan_{problem.name}_pack{cfg.pack}", key


def cached_pacgans(jobs: dict[object, tuple[ToyProblem, ToyGANConfig]],
                   device: torch.device | str = "cpu", workers: int | None = None) -> dict:
    """Train several toy GANs behind ``cached_payload`` (on the CPU the missing ones at once, in
    ``workers`` single-threaded processes): ``{name: payload}``, with ``cached`` 1 if loaded."""
    device = torch.device(device)
    todo = {name: job for name, job in jobs.items()
            if not checkpoint_path(*_cache_entry(*job)).exists()}
    workers = workers if workers is not None else min(len(todo), os.cpu_count() or 1)
    pool = None
    if device.type == "cpu" and workers > 1 and len(todo) > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = {name: pool.submit(train_pacgan, *job, "cpu", False) for name, job in todo.items()
                   } if pool else {}
        runs = {}
        for name, job in jobs.items():
            here = lambda j=job: train_pacgan(*j, device)  # noqa: E731
            produce = futures[name].result if name in futures else here
            payload, hit = cached_payload(*_cache_entry(*job), produce)
            runs[name] = {**payload, "cached": int(hit)}
        return runs
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
