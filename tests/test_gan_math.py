"""Chapter 02: D*, C(G) = -log 4 + 2 JSD, the GAN losses and the D / G step (torch's binary
cross-entropy, scipy, autograd and the step written out by hand as oracles), and PacGAN's 2-D toy
problems: the mixtures, the mode / high-quality metrics, packing, training, the cache."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import notebook_parameters
from scipy.spatial.distance import jensenshannon
from torch import nn

from aigc_utils import gan_math
from aigc_utils.gan_math import (
    LOG4,
    GaussianMixture1D,
    PackedDiscriminator,
    ToyGANConfig,
    ToyGenerator,
    as_probability,
    c_of_g,
    cached_pacgans,
    d_step,
    discriminator_loss,
    early_training_1d,
    g_step,
    gan_value,
    generator_loss,
    generator_logit_gradients,
    grid_problem,
    jensen_shannon,
    lr_factor,
    mode_metrics,
    optimal_discriminator,
    packed_d_step,
    ring_problem,
    train_discriminator_1d,
    train_pacgan,
    value_by_quadrature,
    value_by_sampling,
)

pytestmark = pytest.mark.usefixtures("one_thread")
STEM = "02_gan_math"


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
    for key in ("saturating", "non_saturating"):
        loss = generator_loss(logits, non_saturating=key == "non_saturating")
        (grad,) = torch.autograd.grad(loss, logits)
        # the mean over N samples scales each per-sample gradient by 1/N; both point the same way (negative)
        assert np.allclose(-grad.numpy() * len(logits), closed[key], atol=1e-6)
    # the saturating loss equals log(1 - D) computed naively where that is stable
    a = torch.tensor([-2.0, 0.0, 2.0])
    assert torch.allclose(generator_loss(a, False), torch.log(1 - torch.sigmoid(a)).mean())
    assert torch.allclose(generator_loss(a, True), -torch.log(torch.sigmoid(a)).mean())


def test_discriminator_loss_is_minus_the_sampled_value():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(500, generator=g), torch.randn(700, generator=g) + 1
    d = lambda x: 1 / (1 + np.exp(-2.0 * x))  # noqa: E731 - D = sigmoid(2x), logits 2x
    v = value_by_sampling(d, real.double().numpy(), fake.double().numpy())
    assert discriminator_loss(2 * real, 2 * fake).item() == pytest.approx(-v, rel=1e-5)


def test_losses_equal_binary_cross_entropy():
    torch.manual_seed(0)
    real, fake = torch.randn(32) * 3, torch.randn(32) * 3
    bce = F.binary_cross_entropy_with_logits
    d_ref = bce(real, torch.ones(32)) + bce(fake, torch.zeros(32))
    assert discriminator_loss(real, fake).item() == pytest.approx(d_ref.item(), rel=1e-6)
    assert gan_value(real, fake).item() == pytest.approx(-d_ref.item(), rel=1e-6)
    assert generator_loss(fake).item() == pytest.approx(bce(fake, torch.ones(32)).item(), rel=1e-6)
    g_sat = torch.log(1 - torch.sigmoid(fake)).mean()
    assert generator_loss(fake, non_saturating=False).item() == pytest.approx(g_sat.item(), rel=1e-5)


def test_generator_gradients_saturate_only_for_the_minimax_loss():
    # d L / d logit = -D(G(z)) (saturating) and -(1 - D(G(z))) (non-saturating), per sample / N
    logits = torch.tensor([-8.0, 0.0, 3.0], requires_grad=True)
    d = torch.sigmoid(logits.detach())
    (g_sat,) = torch.autograd.grad(generator_loss(logits, non_saturating=False), logits)
    (g_ns,) = torch.autograd.grad(generator_loss(logits), logits)
    assert g_sat.tolist() == pytest.approx((-d / 3).tolist(), abs=1e-7)
    assert g_ns.tolist() == pytest.approx((-(1 - d) / 3).tolist(), abs=1e-7)
    assert abs(g_sat[0]) < 1e-3 < 0.3 < abs(g_ns[0])  # a confident D: only the non-saturating loss still pushes G


@pytest.mark.parametrize("non_saturating", [True, False])
def test_d_step_then_g_step_is_the_update_written_out_by_hand(non_saturating):
    """A D step on the real batch and the detached fake batch, then a G step through the updated D,
    against the same update written out with torch's binary cross-entropy."""
    torch.manual_seed(1)
    G, D = nn.Linear(2, 3), nn.Linear(3, 1)
    real, z = torch.randn(8, 3), torch.randn(8, 2)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)
    fake = G(z)
    out = d_step(D, real, fake, opt_d)
    assert all(p.grad is None for p in G.parameters())  # fake was detached: nothing reached G
    g_loss = g_step(D, fake, opt_g, non_saturating=non_saturating)

    # the same update written out by hand
    bce, ones, zeros = F.binary_cross_entropy_with_logits, torch.ones(8, 1), torch.zeros(8, 1)
    ref_opt_g, ref_opt_d = torch.optim.SGD(G_ref.parameters(), lr=0.1), torch.optim.SGD(D_ref.parameters(), lr=0.1)
    fake_ref = G_ref(z)
    real_logits, fake_logits = D_ref(real), D_ref(fake_ref.detach())
    d_loss = bce(real_logits, ones) + bce(fake_logits, zeros)
    ref_opt_d.zero_grad()
    d_loss.backward()
    ref_opt_d.step()
    d_after = copy.deepcopy(D_ref.state_dict())
    new_logits = D_ref(fake_ref)  # through the updated D
    ref_g_loss = bce(new_logits, ones) if non_saturating else torch.log(1 - torch.sigmoid(new_logits)).mean()
    ref_opt_g.zero_grad()
    ref_g_loss.backward()
    ref_opt_g.step()

    for a, b in zip(G.parameters(), G_ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for name, p in D.state_dict().items():  # D moved only in its own step
        assert torch.allclose(p, d_after[name], atol=1e-6)
    assert out["d_loss"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert out["d_real"] == pytest.approx(torch.sigmoid(real_logits).mean().item(), rel=1e-5)
    assert out["d_fake"] == pytest.approx(torch.sigmoid(fake_logits).mean().item(), rel=1e-5)
    assert g_loss == pytest.approx(ref_g_loss.item(), rel=1e-5)


def test_joint_scoring_with_a_packed_discriminator_equals_separate_passes():
    torch.manual_seed(3)
    D = PackedDiscriminator(pack=2, hidden=8, depth=1)
    real = torch.randn(8, 4)  # 8 packs of two 2-d samples, one pack per row
    fake = (torch.randn(8, 4) + 1).requires_grad_(True)
    D_sep = copy.deepcopy(D)
    joint = packed_d_step(D, real, fake, torch.optim.SGD(D.parameters(), lr=0.1))
    separate = d_step(D_sep, real, fake, torch.optim.SGD(D_sep.parameters(), lr=0.1))
    assert joint == pytest.approx(separate["d_loss"], rel=1e-6)
    for a, b in zip(D.parameters(), D_sep.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    assert fake.grad is None  # the generated packs were detached


def test_trained_discriminator_approaches_dstar():
    net, history = train_discriminator_1d(DATA, GEN, steps=250, batch=256, seed=0)
    losses = np.array(history["loss"])
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
    # The source text's 4.2.1: grad_g E_x[log D(x)] — the expression contains no G, so autograd finds no path.
    G = torch.nn.Linear(4, 1)
    D = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Sigmoid())
    real = torch.randn(16, 1)
    seed_loss = torch.log(D(real)).mean()
    assert all(g is None for g in torch.autograd.grad(seed_loss, list(G.parameters()), allow_unused=True))


def test_problems_are_pacgans():
    ring, grid = ring_problem(), grid_problem()
    assert ring.n_modes == 8 and ring.sigma == 0.01
    assert torch.allclose(ring.means.norm(dim=1), torch.ones(8))
    assert grid.n_modes == 25 and grid.sigma == 0.05
    assert sorted(set(grid.means[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(m) for m in grid.means.tolist()}) == 25


def test_metrics_on_true_samples_match_the_chi_square_closed_form():
    # A sample from an isotropic 2-D Gaussian is within 3 sigma with probability 1 - exp(-9/2).
    for problem in (ring_problem(), grid_problem()):
        x = problem.sample(20_000, torch.Generator().manual_seed(0))
        m = mode_metrics(x, problem)
        assert m.modes == problem.n_modes
        assert m.hq == pytest.approx(1 - math.exp(-4.5), abs=0.003)
        assert m.counts.sum() == round(m.hq * 20_000)


def test_metrics_see_collapse_and_junk():
    grid = grid_problem()
    collapsed = grid.means[7] + 0.01 * torch.randn(2500, 2)
    m = mode_metrics(collapsed, grid)
    assert (m.modes, m.hq) == (1, 1.0) and m.counts[7] == 2500
    between = torch.tensor([[1.0, 1.0], [3.0, -1.0]])  # between modes: nearest mode is 1.4 away = 28 sigma
    assert mode_metrics(between, grid).hq == 0.0 and mode_metrics(between, grid).modes == 0
    edge = grid.means[:1] + torch.tensor([[0.149, 0.0]])  # 2.98 sigma: still high quality
    assert mode_metrics(edge, grid).hq == 1.0


def test_packing_concatenates_consecutive_samples():
    torch.manual_seed(0)
    D = PackedDiscriminator(pack=2, hidden=16, depth=2)
    x = torch.randn(6, 2)
    out = D(x)
    assert out.shape == (3,)
    assert torch.allclose(out[1], D.net(torch.cat([x[2], x[3]]))[0])
    assert D.net[0].in_features == 4
    G = ToyGenerator(z_dim=16, hidden=128, depth=4)
    assert G(torch.randn(5, 16)).shape == (5, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules())


def test_lr_factor_is_flat_then_linear_to_zero():
    assert [lr_factor(s, 100, 0.5) for s in (0, 49, 50, 75, 100)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_training_is_seeded_and_cached(tmp_cache):
    cfg = ToyGANConfig(pack=2, iters=30, batch=32, hidden=32, depth=2, snapshots=2, n_eval=100, seed=3)
    a = train_pacgan(ring_problem(), cfg, progress=False)
    b = train_pacgan(ring_problem(), cfg, progress=False)
    assert torch.equal(a["samples"], b["samples"])
    assert a["snap_samples"].shape == (3, 100, 2) and a["snap_iters"].tolist() == [10, 20, 30]
    assert np.isfinite(a["d_loss"].numpy()).all()
    c = train_pacgan(ring_problem(), replace(cfg, seed=4), progress=False)
    assert not torch.equal(a["samples"], c["samples"])
    jobs = {"a": (ring_problem(), cfg), "b": (ring_problem(), replace(cfg, seed=4))}
    first = cached_pacgans(jobs, workers=1)
    assert [r["cached"] for r in first.values()] == [0, 0]
    assert torch.equal(first["a"]["samples"], a["samples"])  # same numbers as a direct call
    second = cached_pacgans(jobs, workers=1)
    assert [r["cached"] for r in second.values()] == [1, 1]
    assert torch.equal(first["b"]["samples"], second["b"]["samples"])


def test_a_short_run_moves_samples_towards_the_ring():
    # 300 iterations do not reach PacGAN's 3-sigma precision, but they pull the samples towards the
    # unit circle: median | |x| - 1 | falls from about 0.94 (untrained G, outputs near 0) to about 0.3.
    cfg = ToyGANConfig(pack=1, iters=300, batch=128, hidden=64, depth=3, snapshots=1, n_eval=1000, seed=0)
    samples = train_pacgan(ring_problem(), cfg, progress=False)["samples"]
    torch.manual_seed(0)
    untrained = ToyGenerator(16, 64, 3)(torch.randn(1000, 16)).detach()
    off_ring = lambda x: float((x.norm(dim=1) - 1).abs().median())  # noqa: E731
    assert off_ring(untrained) > 0.8
    assert off_ring(samples) < 0.5


def test_packed_training_is_the_hand_written_pacgan_step():
    """Two steps of train_pacgan equal the textbook loop: D on real packs -> 1 and fake packs -> 0, then
    G on -log D(G(z)) through the updated D, with packs of consecutive samples."""
    cfg = ToyGANConfig(pack=2, iters=2, batch=8, hidden=16, depth=2, snapshots=0, n_eval=20, seed=1)
    ring = ring_problem()
    ours = train_pacgan(ring, cfg, progress=False)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    G, D = ToyGenerator(cfg.z_dim, cfg.hidden, cfg.depth), PackedDiscriminator(2, cfg.hidden, cfg.depth)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    z_eval = torch.randn(cfg.n_eval, cfg.z_dim, generator=gen)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for step in range(cfg.iters):
        for o in (opt_g, opt_d):  # the schedule: flat for the first half, then linear to 0
            o.param_groups[0]["lr"] = cfg.lr * lr_factor(step, cfg.iters, cfg.decay_from)
        real, z = ring.sample(16, gen), torch.randn(16, cfg.z_dim, generator=gen)
        fake = G(z)
        d_loss = bce(D(real), torch.ones(8)) + bce(D(fake.detach()), torch.zeros(8))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        bce(D(fake), torch.ones(8)).backward()
        opt_g.step()
        assert ours["d_loss"][step].item() == pytest.approx(d_loss.item(), rel=1e-5)
    assert torch.allclose(ours["samples"], G(z_eval).detach(), atol=1e-5)


def test_the_toy_gans_train_with_the_exported_d_and_g_steps(monkeypatch):
    calls = []
    real_d, real_g = gan_math.d_step, gan_math.g_step

    def counting_d(*args, **kwargs):
        calls.append("D")
        return real_d(*args, **kwargs)

    def counting_g(*args, **kwargs):
        calls.append(kwargs.get("non_saturating", True))
        return real_g(*args, **kwargs)

    monkeypatch.setattr(gan_math, "d_step", counting_d)
    monkeypatch.setattr(gan_math, "g_step", counting_g)
    early = early_training_1d("saturating", DATA, (-3.0, 0.5), d_pretrain=3, steps=2, batch=8)
    assert calls == ["D", "D", "D", "D", False, "D", False]  # D alone, then D and G alternate
    assert len(early["mu"]) == 2 and len(early["d_loss"]) == 5
    calls.clear()
    cfg = ToyGANConfig(pack=2, iters=3, batch=4, hidden=8, depth=1, snapshots=0, n_eval=10)
    train_pacgan(ring_problem(), cfg, progress=False)
    assert calls == [True, True, True]  # the packed D step scores jointly; G's step is g_step


def test_gpu_profile_models_take_one_step_on_the_cpu():
    params = notebook_parameters(STEM)  # the reader's knobs, the sizes and the toy GANs' settings
    cfg, toy = params["SIZES"]["gpu"], params["TOY"]
    assert cfg["seeds"] >= 1 and cfg["ring_iters"] > 0 and cfg["grid_iters"] > 0
    for problem in (ring_problem(), grid_problem()):
        for m in (1, params["pack"]):
            job = ToyGANConfig(**{**toy, "batch": 2, "snapshots": 0}, pack=m, iters=1,
                               lr=params["LR"][problem.name])
            run = train_pacgan(problem, job, progress=False)
            assert run["samples"].shape == (toy["n_eval"], 2) and torch.isfinite(run["d_loss"]).all()
    data, g = GaussianMixture1D(*params["P_DATA"]), GaussianMixture1D(*params["P_G"])
    _, history = train_discriminator_1d(data, g, steps=1, batch=2)
    early = early_training_1d("non_saturating", GaussianMixture1D(*params["EARLY_DATA"]),
                              params["EARLY_G_INIT"], 1, 1, batch=2)
    assert len(history["loss"]) == 1 and len(early["mu"]) == 1
