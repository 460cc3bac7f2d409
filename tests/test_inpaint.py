"""Chapter 08 helpers: masks are deterministic, the hand-written metrics agree with the libraries,
the classical fills and the network respect the known pixels, and training is cached."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image import PeakSignalNoiseRatio

from aigc_utils import inpaint as ip


def _pair(n: int = 6, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    assert torch.equal(a, b) and torch.equal(a[:4], c)  # same call, same masks; a prefix stays the same
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
    assert ip.ratio_bin([0.05, 0.1, 0.15, 0.29, 0.3, 0.9]) == ["<10%", "10-20%", "10-20%", "20-30%", ">=30%", ">=30%"]


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


def test_ssim_agrees_with_skimage_gaussian_ssim():
    pred, target, _ = _pair(n=3, size=32)
    ours = ip.ssim_mean(pred, target)
    ref = np.mean([
        structural_similarity(target[i, 0].numpy(), pred[i, 0].numpy(), data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for i in range(3)
    ])  # fmt: skip
    assert ours == pytest.approx(ref, abs=0.02)


def test_gradient_ratio_is_one_for_the_truth_and_small_for_a_flat_fill():
    _, target, masks = _pair()
    assert ip.hole_gradient_ratio(target, target, masks) == pytest.approx(1.0)
    assert ip.hole_gradient_ratio(ip.mean_fill(target, masks), target, masks) < 0.6


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


def test_fit_inpainter_learns_and_is_cached(tmp_cache):
    gen = torch.Generator().manual_seed(0)
    # easy data: horizontal stripes with a random phase — the hole is predictable from its border
    phase = torch.randint(0, 4, (64,), generator=gen)
    rows = torch.arange(16)
    images = ((rows[None, :] + phase[:, None]) % 4 < 2).float()[:, None, :, None].expand(64, 1, 16, 16).contiguous()
    bank, _ = ip.make_masks(32, 16, seed=9)
    cfg = ip.UNetConfig(in_ch=2, out_ch=1, width=4, dilations=(2,))
    args = dict(key={"data": "stripes"}, images=images, mask_bank=bank, cfg=cfg, steps=60, batch=16, lr=1e-2, seed=0)
    net, extras, hit = ip.fit_inpainter(**args)
    assert not hit and np.mean(extras["l1"][-10:]) < np.mean(extras["l1"][:5])
    again, extras2, hit2 = ip.fit_inpainter(**args)
    assert hit2 and extras2 == extras
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    adv, extras3, hit3 = ip.fit_inpainter(**{**args, "steps": 5}, init=net, adv_weight=0.1, disc_width=4)
    assert not hit3 and len(extras3["adv_d"]) == 5


def test_denoiser_and_classical_denoisers_reduce_noise(tmp_cache):
    x = torch.linspace(0, 1, 16).expand(2, 1, 16, 16).contiguous()
    noisy = ip.add_noise(x, 0.2, seed=0)
    assert torch.equal(noisy, ip.add_noise(x, 0.2, seed=0))
    base = ip.psnr_pooled(noisy, x)
    for method, strength in (("tv", 0.1), ("nlm", 1.0)):
        assert ip.psnr_pooled(ip.classical_denoise(noisy, method, strength, 0.2), x) > base + 2
    net, extras, hit = ip.fit_denoiser({"data": "ramp"}, x, ip.UNetConfig(1, 1, 4, (2,)), 0.2, 3, 2, 1e-3, 0)
    assert not hit and len(extras["mse"]) == 3
