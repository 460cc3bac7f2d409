"""Chapter 05's GPT (written on the page, generated into aigc_utils.decoder) against HF's GPT-2 and
PyTorch's attention; its KV cache against none; its sampler and initialisation against their definitions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from aigc_utils.core.train import warmup_cosine
from aigc_utils.decoder import (
    CausalSelfAttention,
    CharTokenizer,
    Decoder,
    DecoderConfig,
    attention_maps,
    bigram_sample,
    from_hf_gpt2,
    generate,
    generate_cached,
    ngram_nll,
    random_batch,
    sample_next_token,
    stream_loss,
    time_generation,
    token_nll,
    train_char_lm,
)
from conftest import notebook_parameters

STEM = "05_transformer_decoder"
SIZES = notebook_parameters(STEM)["SIZES"]


def _hf_gpt2(seed: int = 0, vocab: int = 97, positions: int = 64) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=48, n_layer=3, n_head=4,
                        bos_token_id=0, eos_token_id=0)
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
    config = DecoderConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = Decoder(config).eval()
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
    maps = attention_maps(model, torch.randint(0, 50, (16,)))
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
    config = DecoderConfig(vocab_size=60, block_size=50, n_layer=2, n_head=4, n_embd=32)
    model = Decoder(config).eval()
    prompt = torch.randint(0, 60, (3, 5), generator=torch.Generator().manual_seed(6))
    outs = [
        sampler(model, prompt, 40, greedy=greedy, top_k=20, generator=torch.Generator().manual_seed(7))
        for sampler in (generate, generate_cached)
    ]
    assert outs[0].shape == (3, 45)
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError):
        generate_cached(model, prompt, 46)


def test_char_tokenizer_roundtrip_and_unk() -> None:
    tok = CharTokenizer.from_texts(["春眠不觉晓，", "处处闻啼鸟。"])
    assert tok.vocab_size == 12  # 11 distinct characters (处 twice) + unk
    assert tok.decode(tok.encode("春眠不觉晓")) == "春眠不觉晓"
    assert tok.encode("夜") == [0] and tok.decode([0]) == tok.unk


def _mean_nll(train: list[int], val: list[int], vocab_size: int, order: int, alpha: float) -> float:
    return ngram_nll(train, val, vocab_size, order, alpha).mean().item()


def test_ngram_baselines_uniform_text() -> None:
    train, val = [0, 1, 2, 3] * 50, [0, 1, 2, 3] * 10
    assert _mean_nll(train, val, 4, 1, alpha=1.0) == pytest.approx(math.log(4), abs=1e-9)
    assert _mean_nll(train, val, 4, 2, alpha=1.0) < 0.1  # a cycle: the previous character tells the next


def _ngram_reference(train: list[int], val: list[int], V: int, order: int, alpha: float) -> list[float]:
    """The same back-off model written out with dictionaries, one probability at a time."""
    def count(n: int, seq: list[int]) -> dict[tuple[int, ...], int]:
        out: dict[tuple[int, ...], int] = {}
        for i in range(len(seq) - n + 1):
            out[tuple(seq[i : i + n])] = out.get(tuple(seq[i : i + n]), 0) + 1
        return out

    def prob(c: int, ctx: tuple[int, ...]) -> float:
        if not ctx:
            return (train.count(c) + alpha) / (len(train) + alpha * V)
        n_ctx = count(len(ctx), train[:-1]).get(ctx, 0)
        n_gram = count(len(ctx) + 1, train).get((*ctx, c), 0)
        return (n_gram + alpha * V * prob(c, ctx[1:])) / (n_ctx + alpha * V)

    return [-math.log(prob(val[t], tuple(val[max(0, t - order + 1) : t]))) for t in range(1, len(val))]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_nll_matches_a_dictionary_reference(order: int) -> None:
    g = torch.Generator().manual_seed(order)
    train = torch.randint(0, 5, (300,), generator=g).tolist()
    val = torch.randint(0, 6, (40,), generator=g).tolist()  # 5 never occurs in training
    got = ngram_nll(train, val, 6, order, alpha=0.3)
    assert got.shape == (39,)
    assert got.tolist() == pytest.approx(_ngram_reference(train, val, 6, order, 0.3), rel=1e-9)


def test_trigram_predicts_a_pattern_the_bigram_cannot() -> None:
    # after 0 comes 1 or 2 with equal counts; which one is fixed by the character before the 0
    train = [3, 0, 1, 4, 0, 2] * 100
    unigram, bigram, trigram = (_mean_nll(train, train[:60], 5, n, alpha=0.01) for n in (1, 2, 3))
    assert bigram > 0.1 and trigram < 0.01
    assert trigram < bigram < unigram


def test_bigram_sample_follows_a_deterministic_cycle() -> None:
    out = bigram_sample(torch.tensor([0, 1, 2, 3] * 50), 4, start=2, n=9, alpha=1e-6,
                        generator=torch.Generator().manual_seed(0))
    assert out == [2, 3, 0, 1, 2, 3, 0, 1, 2, 3]


def test_uncached_generation_slides_past_the_context() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    fed: list[int] = []
    hook = model.wte.register_forward_hook(lambda m, inputs, out: fed.append(inputs[0].size(1)))
    out = generate(model, prompt, 20, greedy=True)
    hook.remove()
    assert fed == [min(3 + i, 8) for i in range(20)]  # the whole sequence, at most the last 8
    idx = prompt
    with torch.no_grad():
        for _ in range(20):  # by hand: the last 8 tokens score the next one
            idx = torch.cat([idx, model(idx[:, -8:]).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert out.shape == (1, 23) and torch.equal(out, idx)
    with pytest.raises(ValueError):  # the cache cannot go past the learned positions
        generate_cached(model, prompt, 20, greedy=True)


def test_token_nll_is_per_token_and_its_mean_is_stream_loss() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    data = torch.randint(0, 20, (30,), generator=torch.Generator().manual_seed(1))
    per_token = token_nll(model, data, 8, batch_size=2)
    with torch.no_grad():  # token 9 is the first target of the second window: context data[8] only
        first_of_window = F.cross_entropy(model(data[None, 8:9]).logits[0], data[9:10]).item()
    assert per_token.shape == (29,)
    assert per_token[8].item() == pytest.approx(first_of_window, abs=1e-5)
    assert per_token.double().mean().item() == pytest.approx(stream_loss(model, data, 8), abs=1e-9)


def test_sizes_cover_every_profile_with_the_same_knobs() -> None:
    assert set(SIZES) == {"smoke", "cpu", "gpu"}
    assert SIZES["smoke"].keys() == SIZES["cpu"].keys() == SIZES["gpu"].keys()
    for cfg in SIZES.values():
        assert cfg["n_embd"] % cfg["n_head"] == 0
        assert max(cfg["timing_lengths"]) < cfg["timing_block"]


def test_training_beats_unigram_on_a_tiny_corpus() -> None:
    text = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n\n" * 30
    tok = CharTokenizer.from_texts([text])
    data = torch.tensor(tok.encode(text))
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2,
                                  n_embd=32))
    h = train_char_lm(model, data, data[:200], steps=60, batch_size=8, lr=1e-2, warmup=20,
                      eval_every=30, progress=False)
    assert h["step"] == [30.0, 60.0]
    assert h["val"][-1] < 0.5 * math.log(tok.vocab_size)
    assert stream_loss(model, data[:200], 32) == pytest.approx(h["val"][-1], abs=1e-6)
    # the shared schedule: linear warm-up over 20 steps, then cosine down to 10 % of the peak
    expected = [1e-2 * warmup_cosine(i, 20, 60, floor=0.1) for i in range(60)]
    assert h["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_random_batch_targets_are_the_next_characters() -> None:
    data = torch.arange(100)
    x, y = random_batch(data, 5, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16)
    assert torch.equal(y, x + 1)  # in an arange stream the next token is the id plus one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(5, 15, dtype=torch.long))


def test_stream_loss_is_the_token_weighted_mean_nll() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=20, block_size=64, n_layer=1, n_head=2, n_embd=16))
    data = torch.randint(0, 20, (50,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # one window covers the stream: plain cross-entropy
        whole = F.cross_entropy(model(data[None, :-1]).logits[0], data[1:]).item()
        # windows of 7: 49 predicted tokens in 7 windows, each scored with its own context only
        nll = [F.cross_entropy(model(data[None, s : s + 7]).logits[0], data[s + 1 : s + 8],
                               reduction="sum").item() for s in range(0, 49, 7)]
    assert stream_loss(model, data, 64) == pytest.approx(whole, abs=1e-6)
    assert stream_loss(model, data, 7, batch_size=3) == pytest.approx(sum(nll) / 49, abs=1e-6)


def _sdpa_reference(attn: CausalSelfAttention, x: torch.Tensor, past=None) -> torch.Tensor:
    """The same projections, with PyTorch's fused attention doing the masked softmax."""
    B, T, d = x.shape
    q, k, v = (t.view(B, T, attn.n_head, -1).transpose(1, 2) for t in attn.c_attn(x).split(d, 2))
    if past is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:  # is_causal aligns the mask top-left; with a cache the queries are the *last* positions
        k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        keep = torch.ones(T, k.size(2), dtype=torch.bool).tril(diagonal=k.size(2) - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, d))


def test_hand_written_attention_equals_scaled_dot_product_attention() -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(DecoderConfig(n_head=4, n_embd=32)).eval()
    with torch.no_grad():
        attn.c_attn.weight.mul_(5)  # sharp attention, so a wrong mask or scale cannot hide
        x = torch.randn(2, 12, 32)
        ours, (k, v), weights = attn(x, return_attention=True)
        assert torch.allclose(ours, _sdpa_reference(attn, x), atol=1e-5)
        assert weights.triu(diagonal=1).abs().max().item() == 0.0
        cached, _, _ = attn(x[:, 8:], past=(k[:, :, :8], v[:, :, :8]))  # 4 new queries, cache of 8
        assert torch.allclose(cached, _sdpa_reference(attn, x[:, 8:], (k[:, :, :8], v[:, :, :8])),
                              atol=1e-5)
        assert torch.allclose(cached, ours[:, 8:], atol=1e-5)  # cached decoding = uncached


def test_time_generation_compares_like_with_like() -> None:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=30, block_size=40, n_layer=1, n_head=2, n_embd=16))
    timing = time_generation(model, torch.tensor([[1, 2]]), 20, repeats=1, seed=3)
    assert timing["outputs_equal"] is True
    assert timing["speedup"] == pytest.approx(timing["seconds_no_cache"] / timing["seconds_cache"])


def test_the_page_runs_the_model_it_defines() -> None:
    """The attention, decoder and both samplers are written in the page's exported cells, and the page
    trains and samples from them, never from the module it generates."""
    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{STEM}.ipynb"
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
            if c["cell_type"] == "code"]
    exported = "\n".join(c for c in code if c.startswith("#| export"))
    for definition in ("class CausalSelfAttention(", "class Decoder(", "def init_gpt2_weights(",
                       "def sample_next_token(", "def generate(", "def generate_cached("):
        assert definition in exported, definition
    text = "\n".join(code)
    assert "aigc_utils.decoder" not in text and "from aigc_utils import decoder" not in text
    assert "Decoder(model_config)" in text and "generate(model, prompt" in text


def test_gpu_profile_builds_and_takes_one_step_on_cpu(one_thread) -> None:
    cfg = SIZES["gpu"]
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=2600, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=cfg["dropout"])
    model = Decoder(config)
    data = torch.randint(0, 2600, (4 * cfg["block_size"],), generator=torch.Generator())
    before = model.wte.weight.detach().clone()
    h = train_char_lm(model, data, data[: cfg["block_size"] + 2], steps=1, batch_size=2,
                      lr=cfg["lr"], warmup=0, progress=False)
    assert len(h["loss"]) == 1 and h["loss"][0] == pytest.approx(math.log(2600), abs=0.3)
    assert not torch.equal(before, model.wte.weight)  # the step updated the weights


def test_top_k_draws_only_and_all_of_the_k_largest_logits() -> None:
    # six close logits, then a tail: a seventh candidate would be drawn often if it survived the filter
    logits = torch.tensor([0.3, 2.0, -1.0, 1.9, 1.6, 0.5, 1.8, 1.7, -3.0, 1.5])
    order = logits.argsort(descending=True).tolist()  # 1, 3, 6, 7, 4, 9, ...
    for k in (1, 3, 5):
        draws = sample_next_token(logits.expand(4000, -1), top_k=k,
                                  generator=torch.Generator().manual_seed(k)).flatten()
        counts = torch.bincount(draws, minlength=10).double()
        assert set(draws.tolist()) == set(order[:k])  # only the k largest, and every one of them
        expected = torch.zeros(10).index_put_((torch.tensor(order[:k]),), logits[order[:k]].softmax(0))
        assert torch.allclose(counts / 4000, expected.double(), atol=0.03)  # in renormalised proportions
    # k larger than the vocabulary: every token stays
    wide = sample_next_token(logits.expand(4000, -1), top_k=50, generator=torch.Generator().manual_seed(0))
    assert set(wide.flatten().tolist()) == set(range(10))


def test_top_1_sampling_is_greedy_decoding() -> None:
    """Generation with top_k=1 may only ever draw the largest logit, with or without the cache."""
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=40, block_size=24, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # spread logits: a second candidate would be drawn at once
    prompt = torch.randint(0, 40, (4, 3), generator=torch.Generator().manual_seed(1))
    greedy = generate(model, prompt, 20, greedy=True)
    for sampler in (generate, generate_cached):
        top1 = sampler(model, prompt, 20, temperature=2.0, top_k=1,
                       generator=torch.Generator().manual_seed(2))
        assert torch.equal(top1, greedy)


def test_residual_projections_start_with_gpt2_scaled_init() -> None:
    """GPT-2's initialisation: N(0, 0.02²) weights, zero biases, c_proj weights with std 0.02/sqrt(2L)."""
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=500, block_size=64, n_layer=6, n_head=4, n_embd=128)
    params = dict(Decoder(config).named_parameters())
    projections = [name for name in params if name.endswith("c_proj.weight")]
    assert len(projections) == 2 * config.n_layer  # attention's W^O and the MLP's second layer, per block
    for name, p in params.items():
        if p.dim() == 2:  # wte (tied to lm_head), wpe, c_attn, c_fc, c_proj
            expected = 0.02 / math.sqrt(2 * config.n_layer) if name in projections else 0.02
            assert p.mean().abs().item() < 0.1 * expected, name
            assert p.std().item() == pytest.approx(expected, rel=0.03), name
        elif "ln_" in name:  # LayerNorm: weight 1, bias 0
            assert torch.equal(p, torch.full_like(p, float(name.endswith("weight")))), name
        else:  # the linear layers' biases
            assert torch.count_nonzero(p) == 0, name
