"""Chapter 03's DCGAN (generated from its notebook): shapes and parameter counts, slerp, R1, the
chapter's D and G steps, the training step, sharing the GAN with chapter 10, the gpu profile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import notebook_parameters
from torch import nn

from aigc_utils import dcgan
from aigc_utils.core.train import count_parameters
from aigc_utils.dcgan import (
    BETAS,
    DCGANConfig,
    build_dcgan,
    dcgan_config,
    dcgan_d_step,
    dcgan_g_step,
    interpolate,
    r1_penalty,
    sample_images,
    slerp,
    train_dcgan,
)


def hand_count(z: int, g: tuple[int, int], d: tuple[int, int], classes: int) -> tuple[int, int]:
    """Parameters of G and D from the layer shapes (28×28 images, 1 channel, 7×7 base)."""
    cells = 7 * 7
    n_g = (classes * z  # label embedding
           + z * (2 if classes else 1) * g[0] * cells + 2 * g[0] * cells  # linear (no bias) + BN1d
           + g[0] * g[1] * 16 + 2 * g[1]  # ConvT 4×4 (no bias) + BN2d
           + g[1] * 16 + 1)  # ConvT 4×4 to one channel, with bias
    n_d = (16 * d[0] + d[0]  # Conv 4×4 with bias
           + d[0] * d[1] * 16 + 2 * d[1]  # Conv 4×4 (no bias) + BN2d
           + d[1] * cells + 1  # linear head
           + classes * d[1] * cells  # projection embedding
           + classes * d[1] * cells + classes)  # auxiliary class head (linear, with bias)
    return n_g, n_d


def assert_sees_its_label(G: nn.Module, D: nn.Module) -> None:
    """At this width both networks' outputs change with the label, by more than 1 % of their size
    (at DCGAN's initialisation every output is small): the conditioning is not lost."""
    G, D = copy.deepcopy(G).eval(), copy.deepcopy(D).eval()
    z = torch.randn(4, G.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        images = G(z, zeros)
        for a, b in ((images, G(z, ones)), (D(images, zeros), D(images, ones))):
            assert (a - b).abs().max() > 0.01 * a.abs().max()


@pytest.mark.parametrize("num_classes", [0, 10])
def test_shapes_ranges_and_parameter_counts(num_classes):
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8), num_classes=num_classes)
    G, D = build_dcgan(cfg)
    y = torch.arange(5) if num_classes else None
    x = G(torch.randn(5, 8), y)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (5,)
    counted = (count_parameters(G, trainable_only=True), count_parameters(D, trainable_only=True))
    assert counted == hand_count(8, (8, 4), (4, 8), num_classes)
    if num_classes:
        assert_sees_its_label(G, D)
        with pytest.raises(ValueError):
            G(torch.randn(5, 8))
    G, D = build_dcgan(dcgan_config(num_classes))
    want = {0: (240_321, 36_577), 10: (441_665, 99_307)}[num_classes]  # the page's pinned counts
    assert (count_parameters(G), count_parameters(D)) == want == hand_count(64, (64, 32), (32, 64),
                                                                            num_classes)


def test_the_chapter_config_is_the_sizes_cell_and_its_key_is_unchanged():
    """The checkpoint key holds str(cfg): chapter 10 finds chapter 03's cached GAN only if it stays."""
    cfg = dcgan_config()
    assert (cfg.z_dim, cfg.g_channels, cfg.d_channels) == (dcgan.Z_DIM, dcgan.G_CHANNELS,
                                                           dcgan.D_CHANNELS)
    assert dcgan.generator_key(cfg, 1800, 64, dcgan.LR, 0) == {
        "cfg": "DCGANConfig(z_dim=64, g_channels=(64, 32), d_channels=(32, 64), num_classes=0, "
               "image_channels=1, image_size=28)", "steps": 1800, "batch": 64, "lr": 5e-4, "seed": 0,
        "r1": 0.0, "class_weight": 0.0}


def test_same_seed_same_weights():
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8))
    (g1, _), (g2, _), (g3, _) = build_dcgan(cfg, seed=3), build_dcgan(cfg, seed=3), build_dcgan(cfg, 4)
    assert all(torch.equal(a, b) for a, b in zip(g1.parameters(), g2.parameters()))
    assert not torch.equal(g1.net[0].weight, g3.net[0].weight)


def test_projection_embedding_starts_small():
    """D's class embedding is drawn like DCGAN's other weights, N(0, 0.02²): the projection term
    <e(y), h(x)> then starts near zero instead of at logits of tens."""
    G, D = build_dcgan(dcgan_config(num_classes=10), seed=0)
    w = D.embed.weight
    assert w.shape == (10, 64 * 7 * 7) and abs(w.mean().item()) < 0.002
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    x, y = torch.rand(16, 1, 28, 28) * 2 - 1, torch.arange(16) % 10
    D.train()  # batch statistics, as in training: h(x) has entries of order one
    with torch.no_grad():
        h = D.net(x)
        projection = D(x, y) - D.head(h).squeeze(1)
    assert torch.allclose(projection, (w[y] * h).sum(1), atol=1e-5)
    assert projection.abs().max() < 5  # with N(0, 1) it is tens


def test_conditional_d_returns_its_class_loss_on_request():
    _, D = build_dcgan(DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8), num_classes=10))
    assert_sees_its_label(*build_dcgan(D.cfg))
    D.eval()
    x, y = torch.rand(6, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 3, 4, 9])
    logits, class_loss = D(x, y, class_weight=0.5)
    assert torch.allclose(logits, D(x, y))
    want = 0.5 * F.cross_entropy(D.classify(D.net(x)), y)
    assert class_loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_slerp_endpoints_and_norm():
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    z1 = z1 * z0.norm() / z1.norm()  # equal norms: slerp stays on that sphere
    path = slerp(z0, z1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), z0.norm().expand(5), rtol=1e-5)
    # the midpoint lies on the bisector of z0 and z1; the straight line's midpoint is shorter
    mid = (z0 + z1) / 2
    assert torch.allclose(path[2], mid * z0.norm() / mid.norm(), atol=1e-5)
    assert mid.norm() < 0.99 * z0.norm()


def test_r1_penalty_of_a_linear_discriminator_is_half_its_squared_weight_norm():
    D = nn.Linear(5, 1)
    real = torch.randn(7, 5, requires_grad=True)
    penalty = r1_penalty(D(real).squeeze(1), real)
    assert penalty.item() == pytest.approx(0.5 * D.weight.pow(2).sum().item(), rel=1e-6)
    penalty.backward()  # create_graph: the penalty itself trains D
    assert torch.allclose(D.weight.grad, D.weight.detach(), atol=1e-6)


def test_gan_step_with_r1_and_a_class_loss_equals_the_update_written_out():
    torch.manual_seed(4)
    G, D, C = nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(3, 4)  # C: D's class head
    real, z, y = torch.randn(8, 3), torch.randn(8, 2), torch.arange(8) % 4
    G_ref, D_ref, C_ref = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(C)

    def discriminate(x):
        return D(x).squeeze(1), F.cross_entropy(C(x), y)

    opt_g = torch.optim.SGD(G.parameters(), lr=0.1)
    opt_d = torch.optim.SGD([*D.parameters(), *C.parameters()], lr=0.1)
    fake = G(z)
    out = dcgan_d_step(discriminate, real, fake, opt_d, r1=2.0)
    g_loss = dcgan_g_step(discriminate, fake, opt_g)

    ref_opt_g = torch.optim.SGD(G_ref.parameters(), lr=0.1)
    ref_opt_d = torch.optim.SGD([*D_ref.parameters(), *C_ref.parameters()], lr=0.1)
    fake, x = G_ref(z), real.clone().requires_grad_(True)
    real_logits, fake_logits = D_ref(x).squeeze(1), D_ref(fake.detach()).squeeze(1)
    (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    d_adv = -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()
    d_total = d_adv + F.cross_entropy(C_ref(x), y) + 2.0 * 0.5 * grad.pow(2).sum(1).mean()
    ref_opt_d.zero_grad()
    d_total.backward()
    ref_opt_d.step()
    g_adv = -F.logsigmoid(D_ref(fake).squeeze(1)).mean()
    ref_opt_g.zero_grad()
    (g_adv + F.cross_entropy(C_ref(fake), y)).backward()
    ref_opt_g.step()
    for a, b in zip([*G.parameters(), *D.parameters(), *C.parameters()],
                    [*G_ref.parameters(), *D_ref.parameters(), *C_ref.parameters()]):
        assert torch.allclose(a, b, atol=1e-6)
    assert out["d_loss"] == pytest.approx(d_adv.item(), rel=1e-5)  # the adversarial parts only
    assert g_loss == pytest.approx(g_adv.item(), rel=1e-5)
    assert out["d_real"] == pytest.approx(torch.sigmoid(real_logits).mean().item(), rel=1e-6)
    assert out["d_fake"] == pytest.approx(torch.sigmoid(fake_logits).mean().item(), rel=1e-6)


@pytest.mark.parametrize(("snapshot_every", "num_classes"), [(0, 0), (1, 0), (0, 10)])
def test_one_training_step_matches_a_hand_written_reference(snapshot_every, num_classes):
    """train_dcgan's step = D step on detached fakes (+ the class loss of the real images and
    R1 when conditional), then G step through the updated D (+ the class loss); same draws."""
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8), num_classes=num_classes)
    G, D = build_dcgan(cfg, seed=1)
    if num_classes:
        assert_sees_its_label(G, D)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(40) % 10
    r1, mu = (0.5, 0.7) if num_classes else (0.0, 0.0)
    hist, snaps = train_dcgan(G, D, images, labels if num_classes else None, steps=1, batch_size=16,
                              lr=1e-3, betas=(0.5, 0.999), r1=r1, class_weight=mu, seed=5,
                              snapshot_every=snapshot_every, progress=False)

    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order, as train_dcgan
    if snapshot_every:
        fixed_z = torch.randn(64, 8, generator=gen)
        with torch.no_grad():
            assert torch.allclose(snaps[0][1], (G_ref.eval()(fixed_z).clamp(-1, 1) + 1) / 2)
        G_ref.train()
    idx = torch.randint(0, 40, (16,), generator=gen)
    x, y = images[idx] * 2 - 1, (labels[idx] if num_classes else None)
    x.requires_grad_(bool(num_classes))  # R1 needs the gradient with respect to the images
    z = torch.randn(16, 8, generator=gen)
    opt_g = torch.optim.Adam(G_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    fake = G_ref(z, y)
    real_logits, fake_logits = D_ref(x, y), D_ref(fake.detach(), y)
    d_loss = -F.logsigmoid(real_logits).mean() - torch.log1p(-torch.sigmoid(fake_logits)).mean()
    d_total = d_loss
    if num_classes:
        (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
        d_total = (d_loss + mu * F.cross_entropy(D_ref.classify(D_ref.net(x)), y)
                   + r1 * 0.5 * grad.pow(2).flatten(1).sum(1).mean())
    opt_d.zero_grad()
    d_total.backward()
    assert all(p.grad is None for p in G_ref.parameters())  # the D step never reaches G
    opt_d.step()
    g_loss = -F.logsigmoid(D_ref(fake, y)).mean()
    g_total = g_loss + (mu * F.cross_entropy(D_ref.classify(D_ref.net(fake)), y) if num_classes else 0)
    opt_g.zero_grad()
    g_total.backward()
    opt_g.step()
    for a, b in zip([*G.parameters(), *D.parameters()], [*G_ref.parameters(), *D_ref.parameters()]):
        assert torch.allclose(a, b, atol=1e-5)
    want = {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
            "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item()}
    assert {k: hist[k][0] for k in want} == pytest.approx(want, rel=1e-5) and len(hist["d_loss"]) == 1
    assert [s for s, _ in snaps] == ([0, 1] if snapshot_every else [])


def test_training_moves_samples_towards_data():
    # data: 28×28 images that are black with a bright centre square; a tiny GAN learns the mean quickly
    torch.manual_seed(0)
    images = torch.zeros(256, 1, 28, 28)
    images[:, :, 8:20, 8:20] = 1.0
    labels = torch.zeros(256, dtype=torch.long)
    cfg = DCGANConfig(z_dim=8, g_channels=(16, 8), d_channels=(8, 16), num_classes=2)
    G, D = build_dcgan(cfg, seed=0)
    assert_sees_its_label(G, D)
    before, _ = sample_images(G, 64, labels=torch.zeros(64, dtype=torch.long))
    hist, snaps = train_dcgan(G, D, images, labels, steps=150, batch_size=32, lr=2e-3, betas=BETAS,
                              snapshot_every=60, progress=False)
    after, _ = sample_images(G, 64, labels=torch.zeros(64, dtype=torch.long))
    err_before = (before.mean(0) - images[0]).abs().mean().item()
    err_after = (after.mean(0) - images[0]).abs().mean().item()
    assert err_after < 0.8 * err_before
    mean = after.mean(0)[0]
    centre = mean[8:20, 8:20].mean()
    border = (mean.sum() - mean[8:20, 8:20].sum()) / (28 * 28 - 12 * 12)
    assert centre - border > 0.15  # bright square on a dark ground (untrained: ~0.5 everywhere)
    assert len(hist["d_loss"]) == 150
    assert [s for s, _ in snaps] == [0, 60, 120, 150]  # every 60 steps, and the end
    z0, z1 = torch.randn(8), torch.randn(8)
    strip = interpolate(G, z0, z1, n_steps=6, y=0)
    G.eval()
    with torch.no_grad():
        ends = (G(torch.stack([z0, z1]), torch.zeros(2, dtype=torch.long)).clamp(-1, 1) + 1) / 2
    assert strip.shape == (6, 1, 28, 28)
    assert torch.allclose(strip[[0, -1]], ends, atol=1e-5)


def test_chapter10_gets_the_generator_chapter03_shared_or_trains_it_the_same_way(tmp_cache, one_thread):
    """trained_generator loads chapter 03's shared run (never training a fallback when it is
    there); without it, it trains fallback_steps with train_dcgan and the chapter's sizes."""
    sizes = dcgan.SIZES["smoke"]
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    G, extras, hit = dcgan.trained_generator(images, "smoke", fallback_steps=2, seed=0)
    assert not hit and extras["steps"] == 2
    G_ref, D_ref = build_dcgan(dcgan_config(), seed=0)
    train_dcgan(G_ref, D_ref, images, None, steps=2, batch_size=sizes["batch"], lr=dcgan.LR,
                betas=BETAS, seed=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_ref.state_dict().values()))
    assert not G.training

    shared, _ = build_dcgan(dcgan_config(), seed=3)
    key = dcgan.generator_key(dcgan_config(), sizes["steps_uncond"], sizes["batch"], dcgan.LR, 0)
    dcgan.share_generator(shared, key, 12.5)
    loaded, info, hit = dcgan.trained_generator(images, "smoke", fallback_steps=2, seed=0)
    assert hit and info == {"steps": sizes["steps_uncond"], "train_seconds": 12.5}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  shared.state_dict().values()))


def test_gpu_profile_models_take_one_step_on_cpu(one_thread):
    p = notebook_parameters("03_image_gan")
    sizes = dcgan.SIZES["gpu"]
    assert sizes["steps_uncond"] // (sizes["snapshots"] - 1) >= 1 and sizes["n_eval"] <= 10_000
    assert set(sizes) == set(dcgan.SIZES["cpu"]) == set(dcgan.SIZES["smoke"])
    images = torch.rand(8, 1, 28, 28)
    labels = torch.arange(8) % 10
    for classes in (0, 10):
        G, D = build_dcgan(dcgan_config(classes), seed=p["seed"])
        hist, snaps = train_dcgan(G, D, images, labels if classes else None, steps=1, batch_size=2,
                                  lr=dcgan.LR, betas=BETAS, snapshot_every=1, progress=False,
                                  **({"r1": dcgan.COND_R1, "class_weight": dcgan.COND_CLASS_WEIGHT}
                                     if classes else {}))
        assert all(torch.isfinite(torch.tensor(v)).all() for v in hist.curves.values())
        assert snaps[-1][1].shape == (64, 1, 28, 28)
