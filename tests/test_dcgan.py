"""Chapter 03's DCGAN: shapes, the conditional variant, losses, and a training loop that learns."""

from __future__ import annotations

import math

import pytest
import torch

from aigc_utils.dcgan import (
    DCGANConfig,
    build_dcgan,
    count_parameters,
    discriminator_loss,
    generator_loss,
    interpolate,
    sample_images,
    slerp,
    train_dcgan,
)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_shapes_and_ranges(num_classes):
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8), num_classes=num_classes)
    G, D = build_dcgan(cfg)
    y = torch.arange(5) if num_classes else None
    x = G(torch.randn(5, 8), y)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (5,)
    assert count_parameters(G) > 0
    if num_classes:
        with pytest.raises(ValueError):
            G(torch.randn(5, 8))


def test_same_seed_same_weights():
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8))
    (g1, _), (g2, _) = build_dcgan(cfg, seed=3), build_dcgan(cfg, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(g1.parameters(), g2.parameters()))


def test_losses_match_bce_and_are_non_saturating():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([-3.0, 0.5])
    bce = torch.nn.functional.binary_cross_entropy
    want = bce(torch.sigmoid(real), torch.ones(2)) + bce(torch.sigmoid(fake), torch.zeros(2))
    assert discriminator_loss(real, fake).item() == pytest.approx(want.item(), rel=1e-6)
    # when D confidently rejects a fake (logit -8) the non-saturating gradient is ~-1, the saturating ~0
    logit = torch.tensor([-8.0], requires_grad=True)
    generator_loss(logit).backward()
    assert logit.grad.item() == pytest.approx(-1.0, abs=1e-3)
    logit2 = torch.tensor([-8.0], requires_grad=True)
    torch.log1p(-torch.sigmoid(logit2)).sum().backward()
    assert abs(logit2.grad.item()) < 1e-3


def test_slerp_endpoints_and_norm():
    z0, z1 = torch.randn(16), torch.randn(16)
    path = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)


def test_one_training_step_matches_a_hand_written_reference():
    """train_dcgan's step = D step on detached fakes (D grads fresh), then G step through the updated D."""
    import copy

    import torch.nn.functional as F

    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8))
    G, D = build_dcgan(cfg, seed=1)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    train_dcgan(G, D, images, None, steps=1, batch_size=16, lr=1e-3, seed=5, progress=False)

    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order, as train_dcgan
    idx = torch.randint(0, 40, (16,), generator=gen)
    x = images[idx] * 2 - 1
    z = torch.randn(16, 8, generator=gen)
    opt_g = torch.optim.Adam(G_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    fake = G_ref(z)
    d_loss = -F.logsigmoid(D_ref(x)).mean() - torch.log1p(-torch.sigmoid(D_ref(fake.detach()))).mean()
    opt_d.zero_grad()
    d_loss.backward()
    assert all(p.grad is None for p in G_ref.parameters())  # the D step never reaches G
    opt_d.step()
    g_loss = -F.logsigmoid(D_ref(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    for a, b in zip(list(G.parameters()) + list(D.parameters()), list(G_ref.parameters()) + list(D_ref.parameters())):
        assert torch.allclose(a, b, atol=1e-5)


def test_training_moves_samples_towards_data():
    # data: 28×28 images that are black with a bright centre square; a tiny GAN learns the mean quickly
    torch.manual_seed(0)
    images = torch.zeros(256, 1, 28, 28)
    images[:, :, 8:20, 8:20] = 1.0
    labels = torch.zeros(256, dtype=torch.long)
    cfg = DCGANConfig(z_dim=8, g_channels=(16, 8), d_channels=(8, 16), num_classes=2)
    G, D = build_dcgan(cfg, seed=0)
    before, _ = sample_images(G, 64, labels=torch.zeros(64, dtype=torch.long))
    hist = train_dcgan(G, D, images, labels, steps=150, batch_size=32, lr=2e-3, snapshot_every=50, progress=False)
    after, _ = sample_images(G, 64, labels=torch.zeros(64, dtype=torch.long))
    err_before = (before.mean(0) - images[0]).abs().mean().item()
    err_after = (after.mean(0) - images[0]).abs().mean().item()
    assert err_after < 0.8 * err_before
    mean = after.mean(0)[0]
    centre = mean[8:20, 8:20].mean()
    border = (mean.sum() - mean[8:20, 8:20].sum()) / (28 * 28 - 12 * 12)
    assert centre - border > 0.15  # bright square on a dark ground (untrained: ~0.5 everywhere)
    assert len(hist.d_loss) == 150 and all(math.isfinite(v) for v in hist.g_loss)
    assert [s for s, _ in hist.snapshots] == [0, 50, 100, 150]
    strip = interpolate(G, torch.randn(8), torch.randn(8), n_steps=6, y=0)
    assert strip.shape == (6, 1, 28, 28) and strip.min() >= 0 and strip.max() <= 1
