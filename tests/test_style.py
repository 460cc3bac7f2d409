"""Chapter 07: Gram matrices, style/content/TV losses, Gatys optimisation, the fast stylizer.

The code under test is ``aigc_utils.style``, generated from the chapter's notebook; the sizes are the
notebook's parameters cell."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import notebook_parameters
from torch import nn

from aigc_utils import style as st

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_style_transfer.ipynb"


def tiny_features() -> st.StyleFeatures:
    """A random 3-layer CNN with the same interface as the ImageNet backbones (fast, no assets)."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
    )
    backbone = st.Backbone("tiny", {"r1": 1, "r2": 3}, ("r3", 5), style_weight=1e2, tv_weight=0.0)
    return st.StyleFeatures(features, backbone)


def test_gram_matrix_of_a_known_feature_map():
    # two channels over two positions: F = [[1, 2], [3, 4]];  F F^T / M = [[5, 11], [11, 25]] / 2
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    assert torch.allclose(st.gram_matrix(f), torch.tensor([[[2.5, 5.5], [5.5, 12.5]]]))


def test_gram_matrix_ignores_layout_and_resolution():
    f = torch.randn(2, 5, 6, 7)
    perm = torch.randperm(42)
    shuffled = f.reshape(2, 5, 42)[..., perm].reshape(2, 5, 6, 7)
    assert torch.allclose(st.gram_matrix(f), st.gram_matrix(shuffled), atol=1e-5)
    tiled = f.repeat(1, 1, 2, 2)  # the same statistics over 4x the positions
    assert torch.allclose(st.gram_matrix(f), st.gram_matrix(tiled), atol=1e-5)
    # against an explicit double loop over channels
    flat = f.reshape(2, 5, 42)
    loop = torch.tensor([[[float((flat[b, i] * flat[b, j]).mean()) for j in range(5)] for i in range(5)]
                         for b in range(2)])
    assert torch.allclose(st.gram_matrix(f), loop, atol=1e-5)


def test_style_term_is_four_times_gatys_layer_loss():
    f, a = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    n, m = 4, 25
    fl, al = f.reshape(n, m), a.reshape(n, m)
    gatys_e = ((fl @ fl.T - al @ al.T) ** 2).sum() / (4 * n**2 * m**2)
    ours = st.style_loss({"x": f}, {"x": st.gram_matrix(a)})
    assert torch.allclose(ours, 4 * gatys_e, rtol=1e-5)


def test_content_loss_and_perceptual_loss_by_hand():
    f, c = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    assert st.content_loss(f, c).item() == pytest.approx(((f - c) ** 2).sum().item() / 48, rel=1e-5)
    ext = tiny_features()
    x, content, style = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    targets = st.style_targets(ext, style, content)
    loss, parts = st.perceptual_loss(ext, x, targets, style_weight=7.0, content_weight=0.5, tv_weight=3.0)
    fx, fs, fc = ext(x), ext(style), ext(content)
    style_by_hand = sum(((st.gram_matrix(fx[n]) - st.gram_matrix(fs[n])) ** 2).mean() for n in ("r1", "r2"))
    content_by_hand = ((fx["r3"] - fc["r3"]) ** 2).mean()
    assert parts["style"] == pytest.approx(style_by_hand.item(), rel=1e-5)
    assert parts["content"] == pytest.approx(content_by_hand.item(), rel=1e-5)
    expected = 0.5 * parts["content"] + 7.0 * parts["style"] + 3.0 * parts["tv"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_tv_loss_values():
    assert st.tv_loss(torch.full((1, 3, 8, 8), 0.3)).item() == pytest.approx(0.0)
    ramp = torch.arange(8.0).repeat(8, 1).expand(1, 3, 8, 8) * 0.1  # +0.1 per column, constant down rows
    assert st.tv_loss(ramp).item() == pytest.approx(0.01, rel=1e-5)
    steps = torch.zeros(1, 1, 3, 3)
    steps[..., 1, :] = 1.0  # rows 0, 1, 0: both vertical differences are ±1, horizontal ones 0
    assert st.tv_loss(steps).item() == pytest.approx(1.0)


def test_yiq_matches_scikit_image():
    from skimage.color import rgb2yiq, yiq2rgb

    img = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    hwc = img.permute(0, 2, 3, 1).double().numpy()
    ours = st.rgb_to_yiq(img).permute(0, 2, 3, 1).double().numpy()
    # the book keeps the FCC NTSC coefficients; scikit-image rounds them differently in the 4th digit
    assert abs(ours - rgb2yiq(hwc)).max() < 2e-3
    back = st.yiq_to_rgb(torch.from_numpy(rgb2yiq(hwc)).permute(0, 3, 1, 2).float())
    assert abs(back.permute(0, 2, 3, 1).double().numpy() - yiq2rgb(rgb2yiq(hwc))).max() < 2e-3


def test_yiq_round_trip_and_luminance_row():
    img = torch.rand(2, 3, 5, 5)
    assert torch.allclose(st.yiq_to_rgb(st.rgb_to_yiq(img)), img, atol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.4)
    yiq = st.rgb_to_yiq(grey)
    assert torch.allclose(yiq[:, 0], torch.full((1, 2, 2), 0.4), atol=1e-6)
    assert yiq[:, 1:].abs().max() < 1e-5  # grey has no chroma


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_lowers_style_loss_within_its_budget(optimizer):
    ext = tiny_features()
    # mid-grey content: pixels away from the [0, 1] clamp, which would otherwise stall L-BFGS's first steps
    content, style = torch.rand(1, 3, 32, 32) * 0.5 + 0.25, torch.rand(1, 3, 32, 32)
    image, h = st.gatys_transfer(ext, content, style, 1e3, evaluations=30, optimizer=optimizer, lr=0.05)
    assert st.style_ratio(h) < 0.7  # L-BFGS reaches ~0.5 in 30 passes on this random net; Adam lower
    assert 30 <= len(h["loss"]) <= 33  # the budget is passes; one L-BFGS step may overshoot by a few
    assert h["content"][0] == pytest.approx(0.0, abs=1e-10)  # it starts at the content image
    assert image.min() >= 0 and image.max() <= 1
    # the final losses are those of the returned image
    _, final = st.perceptual_loss(ext, image, st.style_targets(ext, style, content), 1e3)
    assert h.evals["style"][-1] == pytest.approx(final["style"], rel=1e-4)
    assert h.evals["content"][-1] == pytest.approx(final["content"], rel=1e-4)


def test_luminance_transfer_keeps_content_colours():
    ext = tiny_features()
    content, style = torch.rand(1, 3, 32, 32) * 0.5 + 0.25, torch.rand(1, 3, 32, 32)
    rgb, grey, _ = st.luminance_transfer(ext, content, style, style_weight=1e3, evaluations=10)
    assert rgb.shape == content.shape
    iq_out, iq_in = st.rgb_to_yiq(rgb)[:, 1:], st.rgb_to_yiq(content)[:, 1:]
    inside = ((rgb > 0.01) & (rgb < 0.99)).all(dim=1, keepdim=True)
    y_out = st.rgb_to_yiq(rgb)[:, :1]  # the luminance is the optimised grey image's
    assert torch.allclose(y_out[inside], grey.mean(dim=1, keepdim=True)[inside], atol=1e-4)
    inside = inside.expand_as(iq_in)
    assert torch.allclose(iq_out[inside], iq_in[inside], atol=1e-4)
    assert not torch.allclose(st.rgb_to_yiq(rgb)[:, :1], st.rgb_to_yiq(content)[:, :1], atol=1e-3)


def test_mobilenet_taps_equal_the_torchvision_features():
    from aigc_utils.core import assets

    model = assets.mobilenet_v2_imagenet()
    ext = st.StyleFeatures(model.features, st.MOBILENET_V2)
    x = torch.rand(1, 3, 64, 64)
    feats = ext(x)
    h = (x - ext.mean) / ext.std
    with torch.no_grad():
        for index in range(14):
            h = model.features[index](h)
            for name, tap in [*st.MOBILENET_V2.style_layers.items(), st.MOBILENET_V2.content_layer]:
                if tap == index:
                    assert torch.allclose(feats[name], h, atol=1e-5), name
    assert not any(p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.body.training  # BatchNorm keeps its ImageNet statistics


def test_vgg19_is_never_downloaded_offline(monkeypatch, tmp_path):
    from aigc_utils.core import assets

    monkeypatch.setenv("AIGC_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    with pytest.raises(assets.AssetMissing):
        assets.vgg19_imagenet()
    assert st.load_style_features("auto", prefer_vgg=True).backbone.name == "mobilenet_v2"
    with pytest.raises(assets.AssetMissing):
        st.load_style_features("vgg19")


def test_transformer_net_shapes_and_range():
    net = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3)
    x = torch.rand(2, 3, 24, 32)
    out = net(x)
    assert out.shape == (2, 3, 24, 32)
    assert torch.allclose(out, torch.sigmoid(net.net(x)))  # without the skip: σ(g(c))


def test_transformer_net_with_skip_starts_as_the_identity():
    net = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3, skip=True)
    x = torch.rand(1, 3, 16, 20) * 0.9 + 0.05
    assert torch.allclose(net(x), x, atol=1e-5)
    plain = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3)
    assert not torch.allclose(plain(x), x, atol=1e-2)
    with torch.no_grad():
        net.net[-1][1].bias.fill_(0.5)  # a change that pushes pixels past 1
    assert net(x).max() > 1.0  # training mode: unclamped, so saturated pixels keep their gradient
    assert net.eval()(x).max() <= 1.0


def test_fast_stylizer_trains_with_the_cosine_schedule():
    ext = tiny_features()
    style = torch.rand(1, 3, 32, 32)
    photos = [torch.rand(1, 3, 40, 48), torch.rand(1, 3, 36, 36)]
    config = st.FastConfig(steps=12, batch_size=2, crop=24, style_weight=1e3, lr=1e-2, lr_floor=0.1)
    torch.manual_seed(0)
    net = st.TransformerNet(width=4, n_residual=1, end_kernel=3)
    h = st.train_fast_stylizer(net, ext, style, photos, config, progress=False)
    assert len(h["style"]) == 12 and h["style"][-1] < h["style"][0]
    # CosineAnnealingLR's closed form, from lr down to lr_floor · lr
    expected = [1e-3 + 9e-3 * 0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)]
    assert h["lr"] == pytest.approx(expected, rel=1e-6)
    assert not net.training


def test_random_crops_shape_and_determinism():
    photos = [torch.rand(1, 3, 50, 70)]
    a = st.random_crops(photos, 3, 16, torch.Generator().manual_seed(1))
    b = st.random_crops(photos, 3, 16, torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    whole = st.random_crops([torch.rand(1, 3, 16, 16)], 1, 16, torch.Generator().manual_seed(0), 1.0)
    assert whole.shape == (1, 3, 16, 16)  # a photo the size of the crop comes back whole (maybe flipped)


def test_tensor_digest_sees_values_and_shapes():
    a = torch.zeros(2, 3)
    assert st.tensor_digest(a) == st.tensor_digest(a.clone())
    assert st.tensor_digest(a) != st.tensor_digest(torch.zeros(3, 2))
    b = a.clone()
    b[0, 0] = 1e-6
    assert st.tensor_digest(a) != st.tensor_digest(b)


def test_the_page_defines_the_lesson_and_never_imports_its_module():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    for name in ("gram_matrix", "content_loss", "style_loss", "tv_loss", "perceptual_loss", "gatys_transfer",
                 "luminance_transfer", "TransformerNet", "train_fast_stylizer"):
        assert re.search(rf"^(def|class) {name}\b", code, re.M), f"{name} is not defined on the page"
        assert re.search(rf"\b{name}\(", code.replace(f"def {name}(", "").replace(f"class {name}(", "")), name
    assert not re.search(r"aigc_utils\.style\b|from aigc_utils import .*\bstyle\b|\bst\.", code)
    assert "SIZES = {" in next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "ASSETS.md" not in markdown + code and "σ(g)" not in markdown


def test_gpu_profile_builds_and_steps_on_cpu():
    from torchvision.models.vgg import cfgs, make_layers

    params = notebook_parameters("07_style_transfer")  # sizes and the reader's knobs: fast_skip, fast_style
    cfg, shape = params["SIZES"]["gpu"], params["FAST_NET"]
    assert cfg["vgg"] and cfg["fast_crop"] % 2 ** shape["n_down"] == 0
    # the gpu backbone: VGG19's layer stack (random weights; the real ones are a 548 MB download)
    vgg = st.StyleFeatures(make_layers(cfgs["E"]), st.VGG19)
    fast_vgg = vgg.with_content_layer(st.VGG19.fast_content_layer)
    with torch.no_grad():
        taps = fast_vgg(torch.rand(1, 3, 32, 32))
    channels = {"relu1_1": 64, "relu2_1": 128, "relu2_2": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
    assert {name: t.shape[1] for name, t in taps.items()} == channels
    assert all(isinstance(vgg.body[i], nn.ReLU) for i in [*st.VGG19.style_layers.values(), 22, 8])
    # one optimisation step of the gpu-sized stylizer on gpu-sized crops, batch 2 (tiny features: CPU time)
    torch.manual_seed(0)
    net = st.TransformerNet(width=cfg["fast_width"], skip=params["fast_skip"], **shape)
    crop = cfg["fast_crop"]
    config = st.FastConfig(steps=1, batch_size=2, crop=crop, style_weight=params["fast_style"] * 1e5,
                           tv_weight=st.VGG19.tv_weight, lr=cfg["fast_lr"])
    photos = [torch.rand(1, 3, cfg["photo_side"], cfg["photo_side"])]
    before = [p.detach().clone() for p in net.parameters()]
    h = st.train_fast_stylizer(net, tiny_features(), torch.rand(1, 3, cfg["size"], cfg["size"]), photos,
                               config, progress=False)
    assert len(h["loss"]) == 1 and math.isfinite(h["loss"][0])
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    assert net(torch.rand(1, 3, cfg["size"], cfg["size"])).shape == (1, 3, cfg["size"], cfg["size"])
