"""Chapter 02 · mode collapse on the 2-D toy problems of PacGAN (Lin et al., 2018), and packing.

The two targets are Gaussian mixtures with equal weights:

* **ring** — 8 modes on a circle of radius 1, $\\mu_k = (\\cos 2\\pi k/8, \\sin 2\\pi k/8)$, $\\sigma = 0.01$;
* **grid** — 25 modes at $\\{-4,-2,0,2,4\\}^2$, $\\sigma = 0.05$.

Metrics exactly as PacGAN (and VEEGAN before it): draw 2,500 samples from the generator; a sample is
*high quality* if it lies within $3\\sigma$ of its nearest mode; a mode is *covered* if it receives at
least one high-quality sample.

**Packing** (PacGAN$m$): the discriminator judges $m$ samples at once,
$D(x_1, \\dots, x_m)$ with all $x_i$ real or all generated, i.e. it sees the product distributions
$P^m$ and $Q^m$. A generator that drops modes is penalised more strongly under $P^m$ vs $Q^m$ than
under $P$ vs $Q$ — the whole change is the input width of $D$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ToyProblem:
    """An equal-weight mixture of isotropic 2-D Gaussians with common standard deviation ``sigma``."""

    name: str
    means: torch.Tensor  # (K, 2)
    sigma: float

    @property
    def n_modes(self) -> int:
        return int(self.means.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples ``(n, 2)``: pick a mode uniformly, add $\\sigma\\,\\varepsilon$, $\\varepsilon \\sim \\mathcal N(0, I)$."""
        idx = torch.randint(0, self.n_modes, (n,), generator=generator)
        return self.means[idx] + self.sigma * torch.randn(n, 2, generator=generator)


def ring_problem(n_modes: int = 8, radius: float = 1.0, sigma: float = 0.01) -> ToyProblem:
    """PacGAN's 2D-ring: ``n_modes`` Gaussians evenly spaced on a circle of radius ``radius``."""
    angles = torch.arange(n_modes, dtype=torch.float32) * (2 * math.pi / n_modes)
    return ToyProblem("ring", torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], 1), sigma)


def grid_problem(side: int = 5, spacing: float = 2.0, sigma: float = 0.05) -> ToyProblem:
    """PacGAN's 2D-grid: ``side``×``side`` Gaussians at $\\{-4,-2,0,2,4\\}^2$ (for the defaults)."""
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(coords, coords, indexing="ij")
    return ToyProblem("grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), sigma)


@dataclass(frozen=True)
class ModeMetrics:
    """``modes``: covered modes; ``hq``: fraction of high-quality samples; ``counts``: HQ samples per mode."""

    modes: int
    hq: float
    counts: np.ndarray


def mode_metrics(samples: torch.Tensor | np.ndarray, problem: ToyProblem, threshold: float = 3.0) -> ModeMetrics:
    """PacGAN's two numbers for a batch of generated samples.

    Each sample is assigned to its nearest mode $k^* = \\arg\\min_k \\lVert x - \\mu_k \\rVert$; it is high
    quality if $\\lVert x - \\mu_{k^*} \\rVert < 3\\sigma$ (PacGAN's ``dis_thre = 3`` on the
    $\\sigma$-scaled distance). A mode is covered if it has at least one high-quality sample.
    """
    x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    dist = torch.cdist(x, problem.means.double()) / problem.sigma  # (N, K) in units of sigma
    best, nearest = dist.min(dim=1)
    good = best < threshold
    counts = torch.bincount(nearest[good], minlength=problem.n_modes).numpy()
    return ModeMetrics(int((counts > 0).sum()), float(good.double().mean()), counts)


def mlp(n_in: int, n_out: int, hidden: int, depth: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden`` with activation ``act``, then a linear output."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class ToyGenerator(nn.Module):
    """$G: \\mathbb R^{d_z} \\to \\mathbb R^2$, an MLP with ReLU and **no** batch norm (batch norm in G ruined HQ here)."""

    def __init__(self, z_dim: int = 16, hidden: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.net = mlp(z_dim, 2, hidden, depth, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PackedDiscriminator(nn.Module):
    """$D(x_1,\\dots,x_m)$: an MLP on the concatenation of ``pack`` samples; returns one logit per pack.

    ``pack = 1`` is the ordinary GAN discriminator. Input ``(B·m, 2)`` is reshaped to ``(B, 2m)``,
    so consecutive rows form one pack (they must come from the same source: all real or all fake).
    """

    def __init__(self, pack: int = 1, hidden: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.pack = pack
        self.net = mlp(2 * pack, 1, hidden, depth, lambda: nn.LeakyReLU(0.2))

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


def lr_factor(step: int, iters: int, decay_from: float) -> float:
    """1 for the first ``decay_from`` fraction of training, then linearly down to 0 at the end."""
    start = int(decay_from * iters)
    if step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / max(1, iters - start))


def train_toy_gan(
    problem: ToyProblem,
    cfg: ToyGANConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """Train a (packed) GAN on ``problem`` with the non-saturating loss; fixed iterations, seeded.

    Discriminator step (ascend $V$):
    $\\mathcal L_D = -\\tfrac1B\\sum_b \\big[\\log D(\\text{real pack}_b) + \\log(1 - D(G(\\text{z pack}_b)))\\big]$;
    generator step (non-saturating): $\\mathcal L_G = -\\tfrac1B\\sum_b \\log D(G(\\text{z pack}_b))$.

    Returns a payload of tensors and numbers (cacheable with ``cached_payload``): ``state_dict`` of G,
    ``snap_iters`` and ``snap_samples`` (generated points at a few iterations, fixed $z$),
    ``samples`` (the final ``n_eval`` points), ``d_loss`` / ``g_loss`` (per-iteration), ``seconds`` (wall) and ``cpu_seconds``.
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # one thread: bit-identical results whether run alone or beside another job
    try:
        return _train_toy_gan(problem, cfg, device, progress)
    finally:
        torch.set_num_threads(threads)


def _train_toy_gan(problem: ToyProblem, cfg: ToyGANConfig, device: torch.device, progress: bool) -> dict:
    import time

    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    G = ToyGenerator(cfg.z_dim, cfg.hidden, cfg.depth).to(device)
    D = PackedDiscriminator(cfg.pack, cfg.hidden, cfg.depth).to(device)
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}  # one kernel per step instead of one per tensor
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **fused)
    sched = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, cfg.iters, cfg.decay_from)) for o in (opt_g, opt_d)]
    z_eval = torch.randn(cfg.n_eval, cfg.z_dim, generator=gen).to(device)
    snap_at = sorted({int(round(cfg.iters * (i + 1) / (cfg.snapshots + 1))) for i in range(cfg.snapshots)} | {cfg.iters})
    n = cfg.batch * cfg.pack  # samples per side per step
    ones = torch.ones(cfg.batch, device=device)
    real_fake = torch.cat([ones, torch.zeros(cfg.batch, device=device)])
    d_hist, g_hist = np.zeros(cfg.iters, np.float32), np.zeros(cfg.iters, np.float32)
    snaps: list[torch.Tensor] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in tqdm(range(1, cfg.iters + 1), desc=f"{problem.name} pack={cfg.pack}", disable=not progress, mininterval=2):
        real = problem.sample(n, gen).to(device)
        z = torch.randn(n, cfg.z_dim, generator=gen).to(device)
        fake = G(z)
        # discriminator: real packs → 1, fake packs → 0, in one forward pass (a pack never mixes the two:
        # the first `batch` packs are real, the rest fake); detach so G's graph is not touched here
        d_loss = 2 * F.binary_cross_entropy_with_logits(D(torch.cat([real, fake.detach()])), real_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator: non-saturating loss -log D(G(z)) through the updated D; D's weights are frozen for this
        # backward pass (only the gradient with respect to its input is needed)
        D.requires_grad_(False)
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        for s in sched:
            s.step()
        d_hist[step - 1], g_hist[step - 1] = d_loss.item(), g_loss.item()
        if step in snap_at:
            with torch.no_grad():
                snaps.append(G(z_eval).cpu())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
        "snap_iters": torch.tensor(snap_at),
        "snap_samples": torch.stack(snaps),
        "samples": snaps[-1],
        "d_loss": torch.from_numpy(d_hist),
        "g_loss": torch.from_numpy(g_hist),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def _cache_key(problem: ToyProblem, cfg: ToyGANConfig) -> tuple[str, dict]:
    from dataclasses import asdict

    key = {"problem": problem.name, "means": problem.means.tolist(), "sigma": problem.sigma, **asdict(cfg)}
    return f"02_toy_gan_{problem.name}_pack{cfg.pack}", key


def _train_job(problem: ToyProblem, cfg: ToyGANConfig, device: str) -> dict:
    return train_toy_gan(problem, cfg, device, progress=False)


def cached_toy_gans(
    jobs: dict[str, tuple[ToyProblem, ToyGANConfig]],
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> dict[str, dict]:
    """Train several toy GANs behind the checkpoint cache; on the CPU, in parallel processes.

    Each job trains single-threaded (see :func:`train_toy_gan`), so results do not depend on how many
    run at once; with 2 cores, two jobs side by side take about as long as one. On a GPU the jobs run
    one after another. Returns ``{name: payload}`` (each payload also carries ``cached``: 1 if loaded).
    """
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp
    import os

    from .checkpoints import checkpoint_path, load_checkpoint, save_checkpoint

    device = torch.device(device)
    results: dict[str, dict] = {}
    todo: dict[str, tuple[ToyProblem, ToyGANConfig]] = {}
    for name, (problem, cfg) in jobs.items():
        payload = load_checkpoint(checkpoint_path(*_cache_key(problem, cfg)))
        if payload is not None:
            results[name] = {**payload, "cached": 1}
        else:
            todo[name] = (problem, cfg)
    workers = workers if workers is not None else min(len(todo), os.cpu_count() or 1)
    if todo and device.type == "cpu" and workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {name: pool.submit(_train_job, p, c, "cpu") for name, (p, c) in todo.items()}
            fresh = {name: f.result() for name, f in futures.items()}
    else:
        fresh = {name: train_toy_gan(p, c, device, progress=True) for name, (p, c) in todo.items()}
    for name, payload in fresh.items():
        save_checkpoint(checkpoint_path(*_cache_key(*todo[name])), payload)
        results[name] = {**payload, "cached": 0}
    return {name: results[name] for name in jobs}


def scatter_panels(
    runs: dict[str, dict],
    problem: ToyProblem,
    lim: float | None = None,
    size: float = 2.2,
):
    """One row per run (e.g. ``{"GAN": payload, "PacGAN2": payload}``), one column per snapshot.

    Modes are drawn as red crosses; each panel's title gives the iteration and
    the modes covered / HQ fraction of that snapshot.
    """
    import matplotlib.pyplot as plt

    if lim is None:
        lim = float(problem.means.abs().max()) * 1.5
    ncol = max(len(r["snap_iters"]) for r in runs.values())
    fig, axes = plt.subplots(len(runs), ncol, figsize=(size * ncol, size * len(runs)), squeeze=False)
    for row, (name, run) in enumerate(runs.items()):
        for col in range(ncol):
            ax = axes[row, col]
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(run["snap_iters"]):
                ax.axis("off")
                continue
            pts = run["snap_samples"][col].numpy()
            m = mode_metrics(pts, problem)
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.3, c="k")
            ax.scatter(problem.means[:, 0], problem.means[:, 1], marker="x", c="r", s=12, linewidths=0.8)
            ax.set_title(f"{name} @{int(run['snap_iters'][col])}\n{m.modes}/{problem.n_modes} modes, HQ {m.hq:.2f}", fontsize=8)
    fig.tight_layout()
    return fig
