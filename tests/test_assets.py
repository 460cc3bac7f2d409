"""The offline asset layer: every loader works with the network blocked, and a missing asset says what to do."""

import numpy as np
import pytest
import torch

from aigc_utils.core import assets


def test_fashion_mnist_full_70k():
    x, y = assets.fashion_mnist("train")
    xt, yt = assets.fashion_mnist("test")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.bincount(yt).tolist() == [1000] * 10
    with pytest.raises(ValueError):
        assets.fashion_mnist("validation")


def test_small_image_sets():
    x, y = assets.mnist5k()
    assert x.shape == (5000, 1, 28, 28) and torch.bincount(y).tolist() == [500] * 10
    d, t = assets.sklearn_digits()
    assert d.shape == (1797, 1, 8, 8) and float(d.max()) == 1.0


@pytest.mark.parametrize("name", ["astronaut", "camera", "china", "grace_hopper", "brick"])
def test_photos_are_rgb_uint8(name):
    img = assets.photo(name)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_unknown_photo():
    with pytest.raises(KeyError, match="choose from"):
        assets.photo("mona_lisa")


def test_corpora():
    novels = assets.austen_novels()
    assert set(novels) == set(assets.AUSTEN_NOVELS)
    assert "It is a truth universally acknowledged" in novels["prideprejudice"]
    verses = assets.kjv_verses()
    assert len(verses) == 31102 and verses[0].startswith("In the beginning God created")
    assert len(assets.fortunes()) > 10000
    poems = assets.tang300()
    assert len(poems) > 300 and "\x1b" not in "".join(poems)


def test_gpt2_tokenizer_matches_tiktoken():
    tok, enc = assets.gpt2_tokenizer(), assets.tiktoken_gpt2()
    text = "It is a truth universally acknowledged — 生成对抗网络, GPT-2's BPE!\n  spaces   and 1234567"
    assert len(tok) == 50257
    assert tok(text)["input_ids"] == enc.encode(text)
    assert tok.eos_token_id == 50256 == enc.eot_token


def test_pretrained_weights_load():
    model = assets.mobilenet_v2_imagenet()
    assert not model.training and sum(p.numel() for p in model.parameters()) == 3504872
    tok, bert = assets.minilm()
    assert bert.config.hidden_size == 384 and bert.config.num_hidden_layers == 6
    out = bert(**tok(["a cat sat on the mat"], return_tensors="pt")).last_hidden_state
    assert out.shape[-1] == 384 and torch.isfinite(out).all()


def test_missing_asset_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_DATA", str(tmp_path))
    monkeypatch.setattr(assets, "debian_file", lambda package, relpath: None)
    with pytest.raises(assets.AssetMissing, match="make setup"):
        assets.ensure("fashion-mnist")
    with pytest.raises(assets.AssetMissing, match="AIGC_OFFLINE"):
        assets.ensure("gpt2-tokenizer")


def test_layers_in_order_cache_first(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_DATA", str(tmp_path))
    calls = []
    fake = assets.Asset("fake", "fake.txt", "a test asset", "none", "none", from_disk=lambda d: calls.append("disk") or d.write_text("x") or True)
    monkeypatch.setitem(assets.ASSETS, "fake", fake)
    assert assets.ensure("fake").read_text() == "x" and calls == ["disk"]
    assets.ensure("fake")
    assert calls == ["disk"]  # the second call is served from the cache


def test_each_layer_is_tried_in_turn_and_failures_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_DATA", str(tmp_path))
    monkeypatch.setenv("AIGC_OFFLINE", "0")
    monkeypatch.setattr(assets, "reachable", lambda host: True)
    calls = []

    def broken_online(dest):
        calls.append("online")
        raise OSError("mirror answered 503")

    def registry(dest):
        calls.append("registry")
        dest.write_text("from the registry")

    fake = assets.Asset("fake", "fake.txt", "a test asset", "none", "none", "somewhere",
                        lambda d: calls.append("disk") or False, "example.org", broken_online, registry)
    monkeypatch.setitem(assets.ASSETS, "fake", fake)
    assert assets.ensure("fake").read_text() == "from the registry"
    assert calls == ["disk", "online", "registry"]
    (tmp_path / "fake.txt").unlink()
    broken = assets.Asset("fake", "fake.txt", "a test asset", "none", "none", "somewhere",
                          lambda d: False, "example.org", broken_online, None)
    monkeypatch.setitem(assets.ASSETS, "fake", broken)
    with pytest.raises(assets.AssetMissing, match=r"online: mirror answered 503.*run `make setup`"):
        assets.ensure("fake")
