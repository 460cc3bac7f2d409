"""Chapter 07: Gram matrices, style/content/TV losses, Gatys optimisation, the fast stylizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aigc_utils import style as st


def tiny_extractor() -> st.FeatureExtractor:
    """A random 3-layer CNN with the same interface as the ImageNet extractors (fast, no assets)."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
    )  # fmt: skip
    backbone = st.Backbone("tiny", {"r1": 1, "r2": 3}, ("r3", 5), style_weight=1e2, tv_weight=0.0)
    return st.FeatureExtractor(features, backbone)


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
    g = st.gram_matrix(f)
    assert torch.allclose(g, g.transpose(1, 2))
    assert torch.linalg.eigvalsh(g).min() > -1e-5  # positive semi-definite


def test_style_term_is_four_times_gatys_layer_loss():
    f, a = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    n, m = 4, 25
    fl, al = f.reshape(n, m), a.reshape(n, m)
    gatys_e = ((fl @ fl.T - al @ al.T) ** 2).sum() / (4 * n**2 * m**2)
    ours = st.style_loss({"x": f}, {"x": st.gram_matrix(a)})
    assert torch.allclose(ours, 4 * gatys_e, rtol=1e-5)


def test_losses_vanish_for_identical_images():
    ext = tiny_extractor()
    img = torch.rand(1, 3, 32, 32)
    targets = st.style_targets(ext, img, img)
    _, parts = st.total_loss(ext, img, targets, style_weight=1e3, tv_weight=1.0)
    assert parts["style"] == pytest.approx(0.0, abs=1e-10)
    assert parts["content"] == pytest.approx(0.0, abs=1e-10)
    other = st.style_targets(ext, torch.rand(1, 3, 32, 32), img)
    assert st.total_loss(ext, img, other, style_weight=1.0)[1]["style"] > 0


def test_tv_loss_values():
    assert st.tv_loss(torch.full((1, 3, 8, 8), 0.3)).item() == pytest.approx(0.0)
    ramp = torch.arange(8.0).repeat(8, 1).expand(1, 3, 8, 8) * 0.1  # +0.1 per column, constant down rows
    assert st.tv_loss(ramp).item() == pytest.approx(0.01, rel=1e-5)


def test_yiq_round_trip_and_luminance_row():
    img = torch.rand(2, 3, 5, 5)
    assert torch.allclose(st.yiq_to_rgb(st.rgb_to_yiq(img)), img, atol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.4)
    yiq = st.rgb_to_yiq(grey)
    assert torch.allclose(yiq[:, 0], torch.full((1, 2, 2), 0.4), atol=1e-6)
    assert yiq[:, 1:].abs().max() < 1e-5  # grey has no chroma


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_lowers_style_loss(optimizer):
    ext = tiny_extractor()
    # mid-grey content: pixels away from the [0, 1] clamp, which would otherwise stall L-BFGS's first steps
    content, style = torch.rand(1, 3, 32, 32) * 0.5 + 0.25, torch.rand(1, 3, 32, 32)
    result = st.gatys_transfer(ext, content, style, 1e3, evaluations=30, optimizer=optimizer, lr=0.05, progress=False)
    assert result.style_ratio < 0.7  # L-BFGS reaches ~0.5 in 30 passes on this random net; Adam lower
    assert len(result.history["style"]) <= 30
    assert result.image.min() >= 0 and result.image.max() <= 1


def test_luminance_transfer_keeps_content_colours():
    ext = tiny_extractor()
    content, style = torch.rand(1, 3, 32, 32) * 0.5 + 0.25, torch.rand(1, 3, 32, 32)
    rgb, result = st.luminance_transfer(ext, content, style, style_weight=1e3, evaluations=10, progress=False)
    assert rgb.shape == content.shape
    iq_out, iq_in = st.rgb_to_yiq(rgb)[:, 1:], st.rgb_to_yiq(content)[:, 1:]
    inside = ((rgb > 0.01) & (rgb < 0.99)).all(dim=1, keepdim=True).expand_as(iq_in)
    assert torch.allclose(iq_out[inside], iq_in[inside], atol=1e-4)
    assert not torch.allclose(st.rgb_to_yiq(rgb)[:, :1], st.rgb_to_yiq(content)[:, :1], atol=1e-3)


def test_mobilenet_taps_equal_the_torchvision_features():
    from aigc_utils import assets

    model = assets.mobilenet_v2_imagenet()
    ext = st.FeatureExtractor(model.features, st.MOBILENET_V2)
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


def test_vgg19_is_never_tried_offline(monkeypatch):
    monkeypatch.setenv("AIGC_OFFLINE", "1")
    assert st.vgg19_reachable() is False
    assert st.pick_extractor("auto", prefer_vgg=True).backbone.name == "mobilenet_v2"


def test_transformer_net_shapes_and_range():
    net = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3)
    out = net(torch.rand(2, 3, 24, 32))
    assert out.shape == (2, 3, 24, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_transformer_net_with_skip_starts_as_the_identity():
    net = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3, skip=True)
    x = torch.rand(1, 3, 16, 20) * 0.9 + 0.05
    assert torch.allclose(net(x), x, atol=1e-5)
    plain = st.TransformerNet(width=4, n_residual=1, n_down=2, end_kernel=3)
    assert not torch.allclose(plain(x), x, atol=1e-2)


def test_fast_config_is_frozen_and_keys_the_cache():
    cfg = st.FastConfig(steps=3, batch_size=2, crop=16, style_weight=1.0)
    with pytest.raises(Exception):
        cfg.steps = 4  # type: ignore[misc]
    assert cfg == st.FastConfig(3, 2, 16, 1.0) and hash(cfg) == hash(st.FastConfig(3, 2, 16, 1.0))


def test_fast_stylizer_trains_and_is_cached(tmp_cache):
    from dataclasses import replace

    ext = tiny_extractor()
    style = torch.rand(1, 3, 32, 32)
    photos = [torch.rand(1, 3, 40, 48), torch.rand(1, 3, 36, 36)]
    config = st.FastConfig(steps=12, batch_size=2, crop=24, style_weight=1e3, lr=1e-2, seed=0)

    def make() -> st.TransformerNet:
        torch.manual_seed(0)
        return st.TransformerNet(width=4, n_residual=1, end_kernel=3)

    net, extras, hit = st.cached_fast_stylizer("test-stylizer", make(), ext, style, photos, config)
    assert not hit and len(extras["style"]) == 12
    assert extras["style"][-1] < extras["style"][0]
    again, extras2, hit2 = st.cached_fast_stylizer("test-stylizer", make(), ext, style, photos, config)
    assert hit2 and extras2["style"] == extras["style"]
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    _, _, hit3 = st.cached_fast_stylizer("test-stylizer", make(), ext, style, photos, replace(config, steps=13))
    assert not hit3  # a different setting is a different checkpoint


def test_random_crops_shape_and_determinism():
    photos = [torch.rand(1, 3, 50, 70)]
    a = st.random_crops(photos, 3, 16, torch.Generator().manual_seed(1))
    b = st.random_crops(photos, 3, 16, torch.Generator().manual_seed(1))
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
