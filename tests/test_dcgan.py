"""Chapter 03's DCGAN: shapes and parameter counts, slerp, the training step, and the gpu profile."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import notebook_parameters

from aigc_utils import dcgan
from aigc_utils.core import gan
from aigc_utils.core.train import count_parameters
from aigc_utils.dcgan import DCGANConfig, build_dcgan, interpolate, sample_images, slerp, train_dcgan

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_image_gan.ipynb"


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
        with pytest.raises(ValueError):
            G(torch.randn(5, 8))
    default = DCGANConfig(num_classes=num_classes)
    G, D = build_dcgan(default)
    want = {0: (240_321, 36_577), 10: (441_665, 99_307)}[num_classes]  # the page's pinned counts
    assert (count_parameters(G), count_parameters(D)) == want == hand_count(64, (64, 32), (32, 64),
                                                                            num_classes)


def test_same_seed_same_weights():
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8))
    (g1, _), (g2, _), (g3, _) = build_dcgan(cfg, seed=3), build_dcgan(cfg, seed=3), build_dcgan(cfg, 4)
    assert all(torch.equal(a, b) for a, b in zip(g1.parameters(), g2.parameters()))
    assert not torch.equal(g1.net[0].weight, g3.net[0].weight)


def test_projection_embedding_starts_small():
    """D's class embedding is drawn like DCGAN's other weights, N(0, 0.02²): the projection term
    <e(y), h(x)> then starts near zero instead of at logits of tens."""
    G, D = build_dcgan(DCGANConfig(num_classes=10), seed=0)
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


@pytest.mark.parametrize("snapshot_every", [0, 1])
def test_one_training_step_matches_a_hand_written_reference(snapshot_every):
    """train_dcgan's step = D step on detached fakes, then G step through the updated D; same draws."""
    cfg = DCGANConfig(z_dim=8, g_channels=(8, 4), d_channels=(4, 8))
    G, D = build_dcgan(cfg, seed=1)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    hist, snaps = train_dcgan(G, D, images, None, steps=1, batch_size=16, lr=1e-3, seed=5,
                              snapshot_every=snapshot_every, progress=False)

    gen = torch.Generator().manual_seed(5)  # the same draws, in the same order, as train_dcgan
    if snapshot_every:
        fixed_z = torch.randn(64, 8, generator=gen)
        with torch.no_grad():
            assert torch.allclose(snaps[0][1], (G_ref.eval()(fixed_z).clamp(-1, 1) + 1) / 2)
        G_ref.train()
    idx = torch.randint(0, 40, (16,), generator=gen)
    x = images[idx] * 2 - 1
    z = torch.randn(16, 8, generator=gen)
    opt_g = torch.optim.Adam(G_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D_ref.parameters(), lr=1e-3, betas=(0.5, 0.999))
    fake = G_ref(z)
    real_logits, fake_logits = D_ref(x), D_ref(fake.detach())
    d_loss = -F.logsigmoid(real_logits).mean() - torch.log1p(-torch.sigmoid(fake_logits)).mean()
    opt_d.zero_grad()
    d_loss.backward()
    assert all(p.grad is None for p in G_ref.parameters())  # the D step never reaches G
    opt_d.step()
    g_loss = -F.logsigmoid(D_ref(fake)).mean()
    opt_g.zero_grad()
    g_loss.backward()
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
    before, _ = sample_images(G, 64, labels=torch.zeros(64, dtype=torch.long))
    hist, snaps = train_dcgan(G, D, images, labels, steps=150, batch_size=32, lr=2e-3,
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


def test_the_page_shows_the_step_the_notebook_runs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "show_source(gan.discriminator_loss, gan.generator_loss, gan.gan_step)" in code
    assert "show_source(train_dcgan)" in code and code.count("train_dcgan(") >= 2
    assert dcgan.gan_step is gan.gan_step and "gan_step(" in inspect.getsource(train_dcgan)
    assert not hasattr(dcgan, "discriminator_loss") and not hasattr(dcgan, "count_parameters")


def test_gpu_profile_models_take_one_step_on_cpu(one_thread):
    p = notebook_parameters("03_image_gan")
    sizes = dcgan.SIZES["gpu"]
    assert sizes["steps_uncond"] // (sizes["snapshots"] - 1) >= 1 and sizes["n_eval"] <= 10_000
    images = torch.rand(8, 1, 28, 28)
    labels = torch.arange(8) % 10
    for classes in (0, 10):
        cfg = DCGANConfig(z_dim=p["Z_DIM"], g_channels=p["G_CHANNELS"], d_channels=p["D_CHANNELS"],
                          num_classes=classes)
        G, D = build_dcgan(cfg, seed=p["seed"])
        hist, snaps = train_dcgan(G, D, images, labels if classes else None, steps=1, batch_size=2,
                                  lr=p["LR"], betas=p["BETAS"], snapshot_every=1, progress=False,
                                  **({"r1": p["COND_R1"], "class_weight": p["COND_CLASS_WEIGHT"]}
                                     if classes else {}))
        assert all(torch.isfinite(torch.tensor(v)).all() for v in hist.curves.values())
        assert snaps[-1][1].shape == (64, 1, 28, 28)
