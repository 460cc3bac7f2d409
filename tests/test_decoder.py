"""Chapter 05's hand-written GPT against HF's GPT-2 (the oracle), and its KV cache against no cache."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_utils.decoder import (
    CharTokenizer,
    Decoder,
    DecoderConfig,
    from_hf_gpt2,
    ngram_baselines,
    stream_loss,
    train_char_lm,
)


def _hf_gpt2(seed: int = 0, vocab: int = 97, positions: int = 64) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_positions=positions, n_embd=48, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def test_logit_parity_with_random_hf_gpt2() -> None:
    hf = _hf_gpt2()
    # HF initialises biases and LayerNorms to 0/1: perturb everything so every copied tensor matters
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = from_hf_gpt2(hf)
    x = torch.randint(0, 97, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(x).logits
        got = ours(x).logits
    assert got.shape == expected.shape == (3, 64, 97)
    assert (got - expected).abs().max().item() <= 1e-4
    assert ours.lm_head.weight.data_ptr() == ours.wte.weight.data_ptr()  # tied head


def test_loss_matches_hf_shifted_loss() -> None:
    hf = _hf_gpt2(seed=2)
    ours = from_hf_gpt2(hf)
    x = torch.randint(0, 97, (2, 33), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hf_loss = hf(x, labels=x).loss  # HF shifts the labels inside
        our_loss = ours(x[:, :-1], x[:, 1:]).loss
    assert abs(hf_loss.item() - our_loss.item()) < 1e-5


def test_causal_mask_hides_the_future() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    a = torch.randint(0, 50, (1, 20))
    b = a.clone()
    b[0, 12:] = (b[0, 12:] + 1) % 50  # change only the future of position 11
    with torch.no_grad():
        la, lb = model(a).logits, model(b).logits
    assert torch.allclose(la[0, :12], lb[0, :12], atol=1e-6)
    assert not torch.allclose(la[0, 12:], lb[0, 12:], atol=1e-3)


def test_attention_maps_are_causal_distributions() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32))
    maps = model.attention_maps(torch.randint(0, 50, (16,)))
    assert maps.shape == (2, 4, 16, 16)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, 16), atol=1e-6)
    assert maps.triu(diagonal=1).abs().max().item() == 0.0


def test_cached_forward_matches_full_forward() -> None:
    hf = _hf_gpt2(seed=4)
    ours = from_hf_gpt2(hf)
    x = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = ours(x).logits
        out = ours(x[:, :25], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(25, 40):
            out = ours(x[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache[0][0].shape == (2, 4, 40, 12)


@pytest.mark.parametrize("greedy", [True, False])
def test_cached_and_uncached_generation_identical(greedy: bool) -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=60, block_size=50, n_layer=2, n_head=4, n_embd=32)).eval()
    prompt = torch.randint(0, 60, (3, 5), generator=torch.Generator().manual_seed(6))
    outs = [
        model.generate(prompt, 40, greedy=greedy, top_k=20, use_cache=c, generator=torch.Generator().manual_seed(7))
        for c in (False, True)
    ]
    assert outs[0].shape == (3, 45)
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError):
        model.generate(prompt, 46)


def test_char_tokenizer_roundtrip_and_unk() -> None:
    tok = CharTokenizer.from_texts(["春眠不觉晓，", "处处闻啼鸟。"])
    assert tok.vocab_size == 12  # 11 distinct characters (处 twice) + unk
    assert tok.decode(tok.encode("春眠不觉晓")) == "春眠不觉晓"
    assert tok.encode("夜") == [0] and tok.decode([0]) == tok.unk


def test_ngram_baselines_uniform_text() -> None:
    base = ngram_baselines([0, 1, 2, 3] * 50, [0, 1, 2, 3] * 10, vocab_size=4, alpha=1.0)
    assert base["unigram"] == pytest.approx(math.log(4), abs=1e-9)
    assert base["bigram"] < 0.1  # a cycle is fully predictable from the previous character


def test_training_beats_unigram_on_a_tiny_corpus() -> None:
    text = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n\n" * 30
    tok = CharTokenizer.from_texts([text])
    data = torch.tensor(tok.encode(text))
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32))
    history = train_char_lm(model, data, data[:200], steps=60, batch_size=8, lr=1e-2, eval_every=30, progress=False)
    assert history["val"][-1] < 0.5 * math.log(tok.vocab_size)
    assert stream_loss(model, data[:200], 32) == pytest.approx(history["val"][-1], abs=1e-6)
