"""Chapter 02's 2-D toy problems (PacGAN): the mixtures, the mode / high-quality metrics, packing, training."""

from __future__ import annotations

import math
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from aigc_utils.gan_toy import (
    PackedDiscriminator,
    ToyGANConfig,
    ToyGenerator,
    cached_toy_gans,
    grid_problem,
    lr_factor,
    mode_metrics,
    ring_problem,
    scatter_panels,
    train_toy_gan,
)

pytestmark = pytest.mark.usefixtures("one_thread")


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
    a = train_toy_gan(ring_problem(), cfg, progress=False)
    b = train_toy_gan(ring_problem(), cfg, progress=False)
    assert torch.equal(a["samples"], b["samples"])
    assert a["snap_samples"].shape == (3, 100, 2) and a["snap_iters"].tolist() == [10, 20, 30]
    assert np.isfinite(a["d_loss"].numpy()).all()
    c = train_toy_gan(ring_problem(), replace(cfg, seed=4), progress=False)
    assert not torch.equal(a["samples"], c["samples"])
    jobs = {"a": (ring_problem(), cfg), "b": (ring_problem(), replace(cfg, seed=4))}
    first = cached_toy_gans(jobs, workers=1)
    assert [r["cached"] for r in first.values()] == [0, 0]
    assert torch.equal(first["a"]["samples"], a["samples"])  # same numbers as a direct call
    second = cached_toy_gans(jobs, workers=1)
    assert [r["cached"] for r in second.values()] == [1, 1]
    assert torch.equal(first["b"]["samples"], second["b"]["samples"])
    first, second = first["a"], second["a"]
    fig = scatter_panels({"GAN": first, "PacGAN2": second}, ring_problem())
    assert len(fig.axes) == 6


def test_a_short_run_moves_samples_towards_the_ring():
    # 300 iterations do not reach PacGAN's 3-sigma precision, but they pull the samples towards the
    # unit circle: median | |x| - 1 | falls from about 0.94 (untrained G, outputs near 0) to about 0.3.
    cfg = ToyGANConfig(pack=1, iters=300, batch=128, hidden=64, depth=3, snapshots=1, n_eval=1000, seed=0)
    samples = train_toy_gan(ring_problem(), cfg, progress=False)["samples"]
    torch.manual_seed(0)
    untrained = ToyGenerator(16, 64, 3)(torch.randn(1000, 16)).detach()
    off_ring = lambda x: float((x.norm(dim=1) - 1).abs().median())  # noqa: E731
    assert off_ring(untrained) > 0.8
    assert off_ring(samples) < 0.5
