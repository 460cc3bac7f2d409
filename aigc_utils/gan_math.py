"""Chapter 02 · the GAN objective checked numerically on 1-D densities.

The value function (Goodfellow et al., 2014), chapter 02 eq. (1):

$$V(D, G) = \\mathbb E_{x\\sim p_{\\text{data}}}[\\log D(x)] + \\mathbb E_{z\\sim p_z}[\\log(1 - D(G(z)))],
\\qquad \\min_G \\max_D V(D, G).$$

For a fixed generator with density $p_g$, eq. (2): $D^*(x) = p_{\\text{data}}(x) / (p_{\\text{data}}(x) + p_g(x))$,
and eq. (3): $C(G) = V(D^*, G) = -\\log 4 + 2\\,\\mathrm{JSD}(p_{\\text{data}} \\,\\|\\, p_g)$.

Everything here is small and exact enough to be checked: densities are NumPy callables, integrals are
trapezoid rules on a fine grid, expectations are Monte Carlo averages over samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

Density = Callable[[np.ndarray], np.ndarray]
LOG4 = math.log(4.0)


@dataclass(frozen=True)
class GaussianMixture1D:
    """$p(x) = \\sum_k w_k\\, \\mathcal N(x; \\mu_k, s_k^2)$ — a density you can evaluate *and* sample."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def pdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)[..., None]
        w, m, s = (np.asarray(v, dtype=float) for v in (self.weights, self.means, self.stds))
        return (w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples as a float tensor of shape ``(n,)``."""
        idx = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), n, replacement=True, generator=generator)
        mean = torch.tensor(self.means, dtype=torch.float32)[idx]
        std = torch.tensor(self.stds, dtype=torch.float32)[idx]
        return mean + std * torch.randn(n, generator=generator)


def optimal_discriminator(p_data: Density, p_g: Density, x: np.ndarray) -> np.ndarray:
    """Chapter 02 eq. (2): $D^*(x) = \\dfrac{p_{\\text{data}}(x)}{p_{\\text{data}}(x) + p_g(x)}$ (0.5 where both vanish)."""
    a, b = p_data(x), p_g(x)
    total = a + b
    return np.divide(a, total, out=np.full_like(total, 0.5), where=total > 0)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """$x \\log y$ with the convention $0 \\log 0 = 0$."""
    out = np.zeros_like(x, dtype=float)
    mask = x > 0
    out[mask] = x[mask] * np.log(y[mask])
    return out


def value_by_quadrature(d: Callable[[np.ndarray], np.ndarray], p_data: Density, p_g: Density, x: np.ndarray) -> float:
    """$V(D, G) = \\int p_{\\text{data}}(x) \\log D(x) + p_g(x) \\log(1 - D(x))\\, dx$ by the trapezoid rule on ``x``."""
    dx = np.clip(d(x), 1e-300, 1.0)
    integrand = _xlogy(p_data(x), dx) + _xlogy(p_g(x), np.clip(1.0 - d(x), 1e-300, 1.0))
    return float(np.trapezoid(integrand, x))


def value_by_sampling(d: Callable[[np.ndarray], np.ndarray], real: np.ndarray, fake: np.ndarray) -> float:
    """$V(D, G)$ by its definition: $\\frac1N\\sum_i \\log D(x_i) + \\frac1M\\sum_j \\log(1 - D(G(z_j)))$."""
    eps = 1e-12
    return float(np.mean(np.log(np.clip(d(real), eps, 1))) + np.mean(np.log(np.clip(1 - d(fake), eps, 1))))


def kl_divergence(p: Density, q: Density, x: np.ndarray) -> float:
    """$\\mathrm{KL}(p\\,\\|\\,q) = \\int p \\log (p / q)\\, dx$ by the trapezoid rule on ``x``."""
    px, qx = p(x), q(x)
    ratio = np.divide(px, qx, out=np.ones_like(px), where=qx > 0)
    return float(np.trapezoid(_xlogy(px, ratio), x))


def jensen_shannon(p: Density, q: Density, x: np.ndarray) -> float:
    """$\\mathrm{JSD}(p\\,\\|\\,q) = \\tfrac12 \\mathrm{KL}(p\\,\\|\\,m) + \\tfrac12 \\mathrm{KL}(q\\,\\|\\,m)$, $m = (p+q)/2$; in nats, in $[0, \\log 2]$."""

    def m(t: np.ndarray) -> np.ndarray:
        return 0.5 * (p(t) + q(t))

    return 0.5 * kl_divergence(p, m, x) + 0.5 * kl_divergence(q, m, x)


def c_of_g(p_data: Density, p_g: Density, x: np.ndarray) -> float:
    """Chapter 02 eq. (3): $C(G) = -\\log 4 + 2\\,\\mathrm{JSD}(p_{\\text{data}}\\,\\|\\,p_g)$."""
    return -LOG4 + 2.0 * jensen_shannon(p_data, p_g, x)


def discriminator_1d(hidden: int = 64, depth: int = 2) -> nn.Sequential:
    """A small MLP $\\mathbb R \\to \\mathbb R$ returning the logit $a(x)$; $D(x) = \\sigma(a(x))$."""
    layers: list[nn.Module] = []
    width = 1
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def train_discriminator_1d(
    data: GaussianMixture1D,
    gen: GaussianMixture1D,
    steps: int,
    batch: int = 512,
    lr: float = 3e-3,
    hidden: int = 64,
    depth: int = 2,
    seed: int = 0,
) -> tuple[nn.Module, np.ndarray]:
    """Maximise $V(D, G)$ over $D$ for a *fixed* $p_g$ from fresh samples (= minimise the binary cross-entropy).

    The per-step loss is $-\\hat V = -\\frac1B\\sum \\log D(x_i) - \\frac1B\\sum \\log(1 - D(\\tilde x_i))$
    with $x_i \\sim p_{\\text{data}}$, $\\tilde x_i \\sim p_g$; the learning rate decays linearly to 0.
    Returns the network (logits) and the loss per step.
    """
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = discriminator_1d(hidden, depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
    losses = np.zeros(steps, np.float32)
    for step in range(steps):
        real = data.sample(batch, rng)[:, None]
        fake = gen.sample(batch, rng)[:, None]
        loss = F.binary_cross_entropy_with_logits(net(real), ones) + F.binary_cross_entropy_with_logits(net(fake), zeros)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[step] = loss.item()
    return net, losses


def as_probability(net: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a logit network as a NumPy function $x \\mapsto \\sigma(a(x))$."""

    def d(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1)
            return torch.sigmoid(net(t)).double().numpy().reshape(np.shape(x))

    return d


# --- generator losses: saturating vs non-saturating ------------------------------------------------


def saturating_generator_loss(d_logit_fake: torch.Tensor) -> torch.Tensor:
    """The minimax generator loss $\\mathcal L_G^{\\text{sat}} = \\mathbb E_z[\\log(1 - D(G(z)))]$ (G minimises it).

    With $D = \\sigma(a)$: $\\partial \\mathcal L / \\partial a = -\\sigma(a) = -D(G(z))$, which vanishes
    when $D$ confidently rejects the fakes ($D(G(z)) \\to 0$) — the generator learns nothing.
    """
    return -F.softplus(d_logit_fake).mean()  # log(1 - sigmoid(a)) = -softplus(a)


def non_saturating_generator_loss(d_logit_fake: torch.Tensor) -> torch.Tensor:
    """The heuristic generator loss $\\mathcal L_G^{\\text{ns}} = -\\mathbb E_z[\\log D(G(z))]$.

    $\\partial \\mathcal L / \\partial a = -(1 - \\sigma(a)) = -(1 - D(G(z)))$: largest exactly when $D$ rejects the
    fakes. Same fixed point as the minimax game, much stronger early gradients.
    """
    return F.softplus(-d_logit_fake).mean()  # -log sigmoid(a) = softplus(-a)


def generator_logit_gradients(d_fake: np.ndarray) -> dict[str, np.ndarray]:
    """Closed-form $|\\partial \\mathcal L_G / \\partial a|$ per sample for both losses, as a function of $D(G(z))$."""
    d_fake = np.asarray(d_fake, dtype=float)
    return {"saturating": d_fake, "non_saturating": 1.0 - d_fake}


def early_training_1d(
    loss: str,
    data: GaussianMixture1D,
    g_init: tuple[float, float],
    d_pretrain: int,
    steps: int,
    batch: int = 256,
    g_lr: float = 0.05,
    d_lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A 1-D GAN whose generator is $G(z) = \\mu + s z$, started far from the data, with ``loss`` in
    ``{"saturating", "non_saturating"}``.

    The discriminator is first trained alone for ``d_pretrain`` steps (so it confidently rejects the
    fakes, as it does early in real training), then D (Adam) and G (plain SGD, so that the step is
    proportional to the gradient) alternate for ``steps`` steps. Same seed ⇒ same D and same data for
    both losses. Returns the generator mean $\\mu$, $|\\partial \\mathcal L_G/\\partial \\mu|$ and the mean
    $D(G(z))$ per step.
    """
    if loss not in ("saturating", "non_saturating"):
        raise ValueError(f"loss must be 'saturating' or 'non_saturating', got {loss!r}")
    g_loss_fn = saturating_generator_loss if loss == "saturating" else non_saturating_generator_loss
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu = torch.tensor(float(g_init[0]), requires_grad=True)
    log_s = torch.tensor(math.log(g_init[1]), requires_grad=True)
    net = discriminator_1d(32, 2)
    opt_d = torch.optim.Adam(net.parameters(), lr=d_lr, betas=(0.5, 0.999))
    opt_g = torch.optim.SGD([mu, log_s], lr=g_lr)
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
    mus, grads, d_fakes = (np.zeros(steps, np.float64) for _ in range(3))
    for step in range(d_pretrain + steps):
        real = data.sample(batch, rng)[:, None]
        fake = (mu + log_s.exp() * torch.randn(batch, generator=rng))[:, None]
        d_loss = F.binary_cross_entropy_with_logits(net(real), ones) + F.binary_cross_entropy_with_logits(net(fake.detach()), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if step < d_pretrain:
            continue
        logit = net(fake)
        g_loss = g_loss_fn(logit)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        i = step - d_pretrain
        grads[i] = abs(float(mu.grad))
        d_fakes[i] = float(torch.sigmoid(logit.detach()).mean())
        opt_g.step()
        mus[i] = float(mu.detach())
    return {"mu": mus, "grad_mu": grads, "d_fake": d_fakes}
