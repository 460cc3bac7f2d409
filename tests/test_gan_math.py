"""Chapter 02's GAN math: D*, C(G) = -log 4 + 2 JSD, the two generator losses (scipy / autograd as oracles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from aigc_utils.gan_math import (
    LOG4,
    GaussianMixture1D,
    as_probability,
    c_of_g,
    early_training_1d,
    generator_logit_gradients,
    jensen_shannon,
    non_saturating_generator_loss,
    optimal_discriminator,
    saturating_generator_loss,
    train_discriminator_1d,
    value_by_quadrature,
    value_by_sampling,
)

pytestmark = pytest.mark.usefixtures("one_thread")


DATA = GaussianMixture1D((0.5, 0.5), (-1.2, 1.2), (0.5, 0.5))
GEN = GaussianMixture1D((1.0,), (0.0,), (1.5,))
X = np.linspace(-12, 12, 24001)


def test_mixture_pdf_integrates_to_one_and_samples_match():
    assert np.trapezoid(DATA.pdf(X), X) == pytest.approx(1.0, abs=1e-9)
    s = DATA.sample(200_000, torch.Generator().manual_seed(0)).numpy()
    assert s.mean() == pytest.approx(0.0, abs=0.01)
    assert s.var() == pytest.approx(0.25 + 1.44, abs=0.02)  # within-mode + between-mode variance


def test_optimal_discriminator_maximises_the_pointwise_integrand():
    # For fixed a = p_data(x), b = p_g(x): y -> a log y + b log(1-y) peaks at a / (a + b).
    ys = np.linspace(1e-4, 1 - 1e-4, 200_001)
    for x in (-2.0, -0.3, 0.0, 1.1, 2.5):
        a, b = DATA.pdf(np.array([x]))[0], GEN.pdf(np.array([x]))[0]
        best = ys[np.argmax(a * np.log(ys) + b * np.log(1 - ys))]
        assert optimal_discriminator(DATA.pdf, GEN.pdf, np.array([x]))[0] == pytest.approx(best, abs=1e-4)


def test_value_at_dstar_is_minus_log4_plus_2jsd():
    d_star = lambda x: optimal_discriminator(DATA.pdf, GEN.pdf, x)  # noqa: E731
    assert value_by_quadrature(d_star, DATA.pdf, GEN.pdf, X) == pytest.approx(c_of_g(DATA.pdf, GEN.pdf, X), abs=1e-9)
    # any other discriminator does worse
    assert value_by_quadrature(lambda x: np.full_like(x, 0.5), DATA.pdf, GEN.pdf, X) == pytest.approx(-LOG4, abs=1e-9)
    assert value_by_quadrature(lambda x: np.full_like(x, 0.5), DATA.pdf, GEN.pdf, X) < c_of_g(DATA.pdf, GEN.pdf, X)
    # Monte Carlo estimate of V(D*, G) by its definition agrees with the quadrature
    g = torch.Generator().manual_seed(1)
    mc = value_by_sampling(d_star, DATA.sample(200_000, g).numpy(), GEN.sample(200_000, g).numpy())
    assert mc == pytest.approx(c_of_g(DATA.pdf, GEN.pdf, X), abs=0.01)


def test_jsd_matches_scipy_and_its_bounds():
    p, q = DATA.pdf(X), GEN.pdf(X)
    dx = X[1] - X[0]
    oracle = jensenshannon(p * dx, q * dx) ** 2  # scipy returns the square root, natural log by default
    assert jensen_shannon(DATA.pdf, GEN.pdf, X) == pytest.approx(oracle, abs=1e-6)
    assert jensen_shannon(DATA.pdf, DATA.pdf, X) == pytest.approx(0.0, abs=1e-12)
    far = GaussianMixture1D((1.0,), (100.0,), (0.5,))
    wide = np.linspace(-20, 120, 140_001)
    assert jensen_shannon(DATA.pdf, far.pdf, wide) == pytest.approx(math.log(2), abs=1e-6)
    assert c_of_g(DATA.pdf, DATA.pdf, X) == pytest.approx(-LOG4, abs=1e-9)


def test_generator_losses_have_the_closed_form_gradients():
    logits = torch.linspace(-9, 9, 37, requires_grad=True)
    d = torch.sigmoid(logits).detach().numpy()
    closed = generator_logit_gradients(d)
    for fn, key in ((saturating_generator_loss, "saturating"), (non_saturating_generator_loss, "non_saturating")):
        (grad,) = torch.autograd.grad(fn(logits), logits)
        # the mean over N samples scales each per-sample gradient by 1/N; both point the same way (negative)
        assert np.allclose(-grad.numpy() * len(logits), closed[key], atol=1e-6)
    # the saturating loss equals log(1 - D) computed naively where that is stable
    a = torch.tensor([-2.0, 0.0, 2.0])
    assert torch.allclose(saturating_generator_loss(a), torch.log(1 - torch.sigmoid(a)).mean())
    assert torch.allclose(non_saturating_generator_loss(a), -torch.log(torch.sigmoid(a)).mean())


def test_trained_discriminator_approaches_dstar():
    net, losses = train_discriminator_1d(DATA, GEN, steps=250, batch=256, seed=0)
    xs = np.linspace(-3, 3, 301)
    mae = np.abs(as_probability(net)(xs) - optimal_discriminator(DATA.pdf, GEN.pdf, xs)).mean()
    assert mae < 0.08
    assert losses[-50:].mean() < losses[:10].mean()


def test_non_saturating_loss_moves_the_generator_when_d_rejects_fakes():
    data = GaussianMixture1D((1.0,), (3.0,), (0.5,))
    runs = {k: early_training_1d(k, data, (-3.0, 0.5), d_pretrain=100, steps=60, seed=0) for k in ("saturating", "non_saturating")}
    assert runs["saturating"]["d_fake"][0] < 0.05  # D is confident at the start
    assert runs["non_saturating"]["grad_mu"][0] > 20 * runs["saturating"]["grad_mu"][0]
    assert abs(runs["non_saturating"]["mu"][-1] - 3.0) < abs(runs["saturating"]["mu"][-1] - 3.0) - 1.0
    with pytest.raises(ValueError):
        early_training_1d("wgan", data, (-3.0, 0.5), 1, 1)


def test_the_seeds_generator_gradient_is_identically_zero():
    # Seed 4.2.1: grad_g E_x[log D(x)] — the expression contains no G, so autograd finds no path.
    G = torch.nn.Linear(4, 1)
    D = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Sigmoid())
    real = torch.randn(16, 1)
    seed_loss = torch.log(D(real)).mean()
    assert all(g is None for g in torch.autograd.grad(seed_loss, list(G.parameters()), allow_unused=True))
