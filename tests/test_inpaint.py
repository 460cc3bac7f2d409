"""Chapter 08 (aigc_utils.inpaint, generated from notebooks/08_inpainting.ipynb): masks are deterministic,
metrics agree with the libraries, fills keep the known pixels, the hole-patch GAN losses and steps match a
hand computation, training is cached, and the gpu sizes build."""

from __future__ import annotations

import copy
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio

from aigc_utils import inpaint as ip
from conftest import notebook_parameters


def _pair(n: int = 6, size: int = 28, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 1, size, size, generator=gen)
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    masks, _ = ip.make_masks(n, size, seed)
    return pred, target, masks


def test_masks_are_deterministic_and_cycle_kinds():
    a, kinds = ip.make_masks(9, 28, seed=3)
    b, _ = ip.make_masks(9, 28, seed=3)
    c, _ = ip.make_masks(4, 28, seed=3)
    d, _ = ip.make_masks(9, 28, seed=4)
    assert torch.equal(a, b) and torch.equal(a[:4], c)  # same call, same masks; prefixes agree
    assert not torch.equal(a, d)
    assert kinds == list(ip.MASK_KINDS) * 3
    assert a.shape == (9, 1, 28, 28) and set(a.unique().tolist()) <= {0.0, 1.0}
    ratios = a.mean((1, 2, 3))
    assert (ratios > 0).all() and (ratios < 1).all()


def test_centre_mask_is_centred_square():
    m = ip.centre_square_mask(28, np.random.default_rng(0))
    rows, cols = np.nonzero(m)
    assert rows.min() == cols.min() and rows.max() == cols.max()
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 0.5


def test_ratio_bins():
    expected = ["<10%", "10-20%", "10-20%", "20-30%", ">=30%", ">=30%"]
    assert ip.ratio_bin([0.05, 0.1, 0.15, 0.29, 0.3, 0.9]) == expected


def test_hole_psnr_matches_skimage_and_torchmetrics_on_hole_pixels():
    pred, target, masks = _pair()
    sel = masks.bool()
    ours = ip.psnr_pooled(pred, target, masks)
    ref_sk = peak_signal_noise_ratio(target[sel].numpy(), pred[sel].numpy(), data_range=1.0)
    ref_tm = PeakSignalNoiseRatio(data_range=1.0)(pred[sel], target[sel]).item()
    assert ours == pytest.approx(ref_sk, abs=1e-6)
    assert ours == pytest.approx(ref_tm, abs=1e-3)


def test_whole_image_psnr_is_pooled_like_torchmetrics():
    pred, target, _ = _pair()
    metric = PeakSignalNoiseRatio(data_range=1.0)
    for i in range(len(pred)):  # accumulated over batches = one pooled MSE
        metric.update(pred[i : i + 1], target[i : i + 1])
    assert ip.psnr_pooled(pred, target) == pytest.approx(metric.compute().item(), abs=1e-3)


def test_background_only_hole_is_finite_when_pooled():
    target = torch.zeros(2, 1, 8, 8)
    target[1, :, 4:, 4:] = 1.0
    masks = torch.zeros_like(target)
    masks[:, :, :3, :3] = 1.0  # image 0: the hole covers only background...
    masks[1, :, 4:6, 4:6] = 1.0
    pred = target.clone()
    pred[1, :, 4:6, 4:6] = 0.5  # ...and image 1 has a real error
    assert math.isinf(ip.psnr_pooled(pred[:1], target[:1], masks[:1]))  # per image: infinite
    pooled = ip.psnr_pooled(pred, target, masks)
    assert math.isfinite(pooled)
    assert pooled == pytest.approx(10 * math.log10((9 + 9 + 4) / (4 * 0.25)))


def test_bin_table_all_row_equals_pooled_psnr():
    pred, target, masks = _pair(n=12)
    table = ip.bin_table({"m": pred}, target, masks, kinds=list(ip.MASK_KINDS) * 4)
    assert table.loc["all", "m"] == pytest.approx(ip.psnr_pooled(pred, target, masks), abs=1e-9)
    assert table.loc["all", "n"] == 12


def test_gradient_ratio_is_one_for_the_truth_and_small_for_a_flat_fill():
    _, target, masks = _pair()
    assert ip.hole_gradient_ratio(target, target, masks) == pytest.approx(1.0)
    assert ip.hole_gradient_ratio(ip.mean_fill(target, masks), target, masks) < 0.6


def test_highfreq_ratio_matches_scipy_laplacian():
    """The hole high-frequency ratio by hand with scipy's 5-point Laplacian (zero padding)."""
    from scipy.ndimage import laplace

    pred, target, masks = _pair(n=4)
    pred = torch.cat([pred, pred.flip(-1)], 1)  # two channels, each filtered on its own
    target, masks = torch.cat([target, target], 1), masks.expand(-1, 2, -1, -1)

    def energy(x):
        lap = np.stack([[laplace(ch, mode="constant", cval=0.0) for ch in img]
                        for img in x.double().numpy()])
        return (lap**2 * masks.double().numpy()).sum()

    expected = energy(pred) / energy(target)
    assert ip.hole_highfreq_ratio(pred, target, masks) == pytest.approx(expected, rel=1e-9)
    assert ip.hole_highfreq_ratio(target, target, masks) == pytest.approx(1.0)
    assert ip.hole_highfreq_ratio(ip.mean_fill(target, masks), target, masks) < 0.3


def test_by_ratio_rows_are_the_bins_scored_on_their_own():
    pred, target, masks = _pair(n=18)
    fills = {"noisy": pred, "mean": ip.mean_fill(target, masks)}
    table = ip.by_ratio(fills, target, masks)
    bins = np.asarray(ip.ratio_bin(masks.mean((1, 2, 3)).numpy()))
    assert list(dict.fromkeys(table["bin"])) == [b for b in ip.RATIO_LABELS if (bins == b).any()]
    assert table.groupby("method")["n"].sum().tolist() == [18, 18]
    for row in table.itertuples():
        sel = torch.from_numpy(bins == row.bin)
        fill = fills[row.method]
        assert row.psnr == pytest.approx(ip.psnr_pooled(fill[sel], target[sel], masks[sel]))
        assert row.ssim == pytest.approx(ip.ssim_mean(fill[sel], target[sel]))
        assert row.ratio == pytest.approx(float(masks[sel].mean()))
    scores = ip.repair_scores(pred, target, masks)
    assert scores["psnr_hole"] == ip.psnr_pooled(pred, target, masks) and len(scores) == 4


def test_classical_fills_keep_known_pixels_and_solve_easy_cases():
    ramp = torch.linspace(0, 1, 28).expand(2, 1, 28, 28).contiguous()
    masks, _ = ip.make_masks(2, 28, seed=1)
    for fill in (ip.mean_fill, ip.biharmonic_fill, ip.telea_fill):
        out = fill(ramp, masks)
        assert torch.equal(out * (1 - masks), ramp * (1 - masks))
    # a linear ramp is biharmonic, so biharmonic inpainting restores it exactly
    assert ip.psnr_pooled(ip.biharmonic_fill(ramp, masks), ramp, masks) > 40
    const = torch.full((1, 3, 20, 20), 0.4)
    m = torch.zeros(1, 1, 20, 20)
    m[..., 5:12, 6:15] = 1
    assert (ip.telea_fill(const, m) - const).abs().max() < 2 / 255
    assert torch.allclose(ip.mean_fill(const, m), const)


def test_unet_inpaint_keeps_known_pixels_and_handles_odd_sizes():
    torch.manual_seed(0)
    net = ip.UNet(ip.UNetConfig(in_ch=4, out_ch=3, width=4)).eval()
    x = torch.rand(2, 3, 30, 30)
    m = torch.zeros(2, 1, 30, 30)
    m[..., 10:20, 5:25] = 1
    out = ip.inpaint(net, x, m)
    assert out.shape == x.shape
    assert torch.equal(out * (1 - m), x * (1 - m))
    den = ip.UNet(ip.UNetConfig(in_ch=1, out_ch=1, width=4)).eval()
    with torch.no_grad():
        assert ip.denoise(den, torch.rand(3, 1, 28, 28)).shape == (3, 1, 28, 28)


def test_discriminator_gives_one_logit_per_patch():
    d = ip.PatchDiscriminator(2, 8)
    assert d(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)).shape == (2, 1, 7, 7)


def _stripes(n: int = 64, size: int = 16) -> torch.Tensor:
    """Horizontal stripes with a random phase: a hole is predictable from its border."""
    phase = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(0))
    rows = ((torch.arange(size)[None, :] + phase[:, None]) % 4 < 2).float()
    return rows[:, None, :, None].expand(n, 1, size, size).contiguous()


def test_cached_unet_learns_caches_and_fine_tunes(tmp_cache, one_thread):
    images, (bank, _) = _stripes(), ip.make_masks(32, 16, seed=9)
    cfg = ip.UNetConfig(in_ch=2, out_ch=1, width=4, dilations=(2,))
    run = {"steps": 60, "batch": 16, "lr": 1e-2, "seed": 0}

    def train(net):
        return ip.train_inpainter(net, images, bank, **run)

    net, curves, hit = ip.cached_unet("stripes", {"data": "stripes", **run}, cfg, train)
    assert not hit and np.mean(curves["loss"][-10:]) < 0.5 * np.mean(curves["loss"][:5])
    again, curves2, hit2 = ip.cached_unet("stripes", {"data": "stripes", **run}, cfg, train)
    assert hit2 and curves2 == curves
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    adv = {"steps": 5, "batch": 16, "lr": 1e-3, "seed": 1, "adv_weight": 0.1}
    tuned, curves3, hit3 = ip.cached_unet(
        "stripes", {"data": "stripes", **adv, "init": run}, cfg, init=net,
        train=lambda m: ip.train_adversarial(m, ip.PatchDiscriminator(2, 4), images, bank, **adv))
    assert not hit3 and len(curves3["d_loss"]) == 5 and len(curves3["l1"]) == 5
    assert not torch.equal(tuned.head.weight, net.head.weight)  # it started from net and moved


def test_adversarial_steps_match_a_hand_computation(one_thread):
    """Fine-tune steps by hand: D on real vs composite (hole patches), then G on L1 + λ·(-log D)."""
    torch.manual_seed(0)
    images, (bank, _) = torch.rand(8, 1, 16, 16), ip.make_masks(8, 16, seed=2)
    net, disc = ip.UNet(ip.UNetConfig(2, 1, 4, (2,))), ip.PatchDiscriminator(2, 4)
    net2, disc2 = ip.UNet(net.cfg), ip.PatchDiscriminator(2, 4)
    net2.load_state_dict(net.state_dict()), disc2.load_state_dict(disc.state_dict())
    lr, lam, batch, steps = 1e-2, 0.5, 4, 2
    start = net.head.weight.detach().clone()
    ip.train_adversarial(net, disc, images, bank, steps, batch, lr, seed=3, adv_weight=lam)

    gen = torch.Generator().manual_seed(3)  # the same draws, by hand
    opt_d = torch.optim.Adam(disc2.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net2.parameters(), lr=lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, max_lr=lr, total_steps=steps, pct_start=0.15)
    net2.train()
    for _ in range(steps):
        x = images[torch.randint(8, (batch,), generator=gen)]
        m = bank[torch.randint(8, (batch,), generator=gen)]
        flip = torch.rand(batch, generator=gen) < 0.5
        m = torch.where(flip[:, None, None, None], m.flip(-1), m)
        fake = ip.composite(net2, x, m)
        w = F.max_pool2d(m, 4)  # 16x16 -> 4x4 patches: 1 where a patch touches the hole
        d_fake = (F.softplus(disc2(fake.detach(), m)) * w).sum() / w.sum()  # -log(1 - D), holes
        d_loss = F.softplus(-disc2(x, m)).mean() + d_fake  # -log D(x), every patch
        opt_d.zero_grad(), d_loss.backward(), opt_d.step()
        g_adv = (F.softplus(-disc2(fake, m)) * w).sum() / w.sum()  # -log D(x_hat) through the new D
        g_loss = ((fake - x).abs() * m).sum() / m.sum() + lam * g_adv
        opt_g.zero_grad(), g_loss.backward(), opt_g.step(), sched.step()
    moved = [*net.parameters(), *disc.parameters()]
    for a, b in zip(moved, [*net2.parameters(), *disc2.parameters()], strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert (net.head.weight - start).abs().max() > 1e-3  # the steps were not trivially small


def test_weighted_fake_term_averages_over_the_weighted_positions():
    fake = torch.tensor([1.0, -2.0, 0.5, 4.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = (F.softplus(fake[0]) + F.softplus(fake[2])) / 2
    real = torch.zeros(1)
    d_loss = ip.hole_discriminator_loss(real, fake, weight)
    assert (d_loss - F.softplus(-real).mean()).item() == pytest.approx(expected.item())
    g_expected = (F.softplus(-fake[0]) + F.softplus(-fake[2])) / 2
    assert ip.hole_generator_loss(fake, weight).item() == pytest.approx(g_expected.item())


def test_hole_patches_mark_the_patches_that_touch_the_hole():
    m = torch.zeros(1, 1, 16, 16)
    m[..., 5, 9] = 1.0  # one pixel: row 5 -> patch row 1, column 9 -> patch column 2
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 1, 2] = 1.0
    assert torch.equal(ip.hole_patches(m), expected)
    assert ip.hole_patches(torch.ones(2, 1, 28, 28)).shape == (2, 1, 7, 7)  # D's patch grid


def test_gan_step_adds_the_extra_generator_loss():
    torch.manual_seed(2)
    G, D = nn.Linear(2, 3), nn.Linear(3, 1)
    real, z = torch.randn(4, 3), torch.randn(4, 2)
    hole = torch.ones(4, 1)
    G2 = copy.deepcopy(G)
    D2 = copy.deepcopy(D)
    for g, d, extra in ((G, D, None), (G2, D2, "l1")):
        opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
        fake = g(z)
        reconstruction = (fake - real).abs().mean() if extra else torch.zeros(())
        ip.hole_d_step(d, real, fake, hole, opt_d)
        ip.hole_g_step(d, fake, hole, reconstruction, opt_g, adv_weight=0.5)
    assert not torch.allclose(G.weight, G2.weight)  # the reconstruction term changed G's update
    # and written out: G's gradient is that of reconstruction + 0.5 * the generator loss
    G3, D3 = copy.deepcopy(G2), copy.deepcopy(D2)
    fake = G3(z)
    reconstruction = (fake - real).abs().mean()
    (reconstruction + 0.5 * F.softplus(-D3(fake)).mean()).backward()
    expected = G3.weight.detach() - 0.1 * G3.weight.grad
    fake = G2(z)
    ip.hole_g_step(D2, fake, hole, (fake - real).abs().mean(), torch.optim.SGD(G2.parameters(), lr=0.1),
                   adv_weight=0.5)
    assert torch.allclose(G2.weight, expected, atol=1e-7)


def test_notebook_defines_the_lesson_it_runs():
    """The page defines (and exports) the lesson, runs it, and never imports its own module."""
    path = Path(__file__).resolve().parents[1] / "notebooks" / "08_inpainting.ipynb"
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    exported = "\n".join(c for c in code if c.startswith("#| export"))
    for fn in ("masked_l1", "train_inpainter", "hole_discriminator_loss", "hole_g_step",
               "train_adversarial", "denoise"):
        assert f"def {fn}(" in exported
    runs = "\n".join(c for c in code if not c.startswith("#| export"))
    assert "train_inpainter(" in runs and "train_adversarial(" in runs and "denoise(" in runs
    assert "aigc_utils.inpaint" not in runs and "import inpaint" not in runs
    assert "masked_l1(composite(net, x, m), x, m)" in inspect.getsource(ip.train_inpainter)
    assert "core.gan" not in inspect.getsource(ip)


def test_residual_denoiser_formula_and_training(tmp_cache, one_thread):
    x = torch.linspace(0, 1, 16).expand(2, 1, 16, 16).contiguous()
    noisy = ip.add_noise(x, 0.2, seed=0)
    assert torch.equal(noisy, ip.add_noise(x, 0.2, seed=0))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(noisy - x, 0.2 * eps)
    base = ip.psnr_pooled(noisy, x)
    for method, strength in (("tv", 0.1), ("nlm", 1.0)):
        assert ip.psnr_pooled(ip.classical_denoise(noisy, method, strength, 0.2), x) > base + 2
    # the residual formula by hand: y - net(y), clipped
    net = ip.UNet(ip.UNetConfig(1, 1, 4, (2,))).eval()
    y = torch.rand(2, 1, 12, 12) * 1.4 - 0.2
    with torch.no_grad():
        assert torch.allclose(ip.denoise(net, y), (y - net(y)).clamp(0, 1))
    # trained briefly on smooth ramps, it beats the noisy input clearly
    gen = torch.Generator().manual_seed(1)
    slopes = torch.rand(64, 1, 1, 1, generator=gen)
    ramps = (slopes * torch.linspace(0, 1, 16)).expand(64, 1, 16, 16).contiguous()
    torch.manual_seed(0)
    net = ip.UNet(ip.UNetConfig(1, 1, 8, (2,)))
    ip.train_denoiser(net, ramps[:48], 0.2, steps=80, batch=16, lr=1e-2, seed=0)
    test, test_noisy = ramps[48:], ip.add_noise(ramps[48:], 0.2, seed=5)
    with torch.no_grad():
        denoised = ip.denoise(net, test_noisy)
    assert ip.psnr_pooled(denoised, test) > ip.psnr_pooled(test_noisy, test) + 3


def test_gpu_profile_builds_and_steps_on_cpu(one_thread):
    params = notebook_parameters("08_inpainting")
    gpu, width = params["SIZES"]["gpu"], params["width"]
    bank, _ = ip.make_masks(4, 28, seed=0)
    inpainter = ip.UNet(ip.UNetConfig(2, 1, width))
    ip.train_inpainter(inpainter, torch.rand(4, 1, 28, 28), bank, 2, 2, params["lr"], 0)
    ip.train_adversarial(inpainter, ip.PatchDiscriminator(2, params["disc_width"]),
                         torch.rand(4, 1, 28, 28), bank, 2, 2, params["adv_lr"], 1,
                         adv_weight=params["adv_weight"])
    ip.train_denoiser(ip.UNet(ip.UNetConfig(1, 1, width)), torch.rand(4, 1, 28, 28),
                      params["noise_sigma"], 2, 2, params["lr"], 0)
    photo_net = ip.UNet(ip.UNetConfig(4, 3, width))
    photo_bank, _ = ip.make_masks(4, 32, seed=0)
    ip.train_inpainter(photo_net, torch.rand(4, 3, 32, 32), photo_bank, 2, 2, params["lr"], 0)
    crop = torch.rand(1, 3, gpu["photo_crop"], gpu["photo_crop"])
    hole = ip.free_form_mask(gpu["photo_crop"], np.random.default_rng(0))
    hole = torch.from_numpy(hole)[None, None]
    out = ip.batched(lambda a, b: ip.inpaint(photo_net, a, b), crop, hole)
    assert out.shape == crop.shape and torch.equal(out * (1 - hole), crop * (1 - hole))
