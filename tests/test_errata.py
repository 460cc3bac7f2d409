"""Chapter 09's corrected versions agree with the library oracles and with the closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aigc_utils import errata

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gan_value_matches_bce_and_literal_formula():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(32, 1, generator=g), torch.randn(32, 1, generator=g)
    literal = torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean()
    assert torch.allclose(errata.gan_value(real, fake), literal, atol=1e-6)
    bce = F.binary_cross_entropy(torch.sigmoid(real), torch.ones_like(real)) + F.binary_cross_entropy(
        torch.sigmoid(fake), torch.zeros_like(fake)
    )
    assert torch.allclose(errata.discriminator_loss(real, fake), bce, atol=1e-5)
    assert torch.allclose(errata.discriminator_loss(real, fake), -errata.gan_value(real, fake), atol=1e-6)


def test_optimal_discriminator_and_jsd_closed_form():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    d_star = errata.optimal_discriminator(p, q)
    v_star = errata.discrete_value(d_star, p, q)
    assert math.isclose(v_star.item(), -math.log(4) + 2 * errata.jensen_shannon(p, q).item(), abs_tol=1e-12)
    for d in torch.rand(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).clamp(1e-6, 1 - 1e-6):
        assert errata.discrete_value(d, p, q) <= v_star + 1e-12
    assert errata.jensen_shannon(p, p).abs().item() < 1e-12


def test_generator_losses_gradients():
    logits = torch.full((4, 1), -6.0, requires_grad=True)
    (g_sat,) = torch.autograd.grad(errata.generator_loss(logits, non_saturating=False), logits)
    (g_ns,) = torch.autograd.grad(errata.generator_loss(logits), logits)
    assert torch.allclose(g_sat, -torch.sigmoid(logits.detach()) / 4, atol=1e-7)
    assert torch.allclose(g_ns, -(1 - torch.sigmoid(logits.detach())) / 4, atol=1e-7)


def test_causal_attention_matches_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    ours = errata.causal_attention(q, k, v)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


def test_tiny_decoder_is_causal_and_shaped():
    torch.manual_seed(0)
    model = errata.TinyDecoderLM(vocab_size=11, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=10)
    ids = torch.randint(0, 11, (3, 10))
    logits = model(ids)
    assert logits.shape == (3, 10, 11)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    assert torch.allclose(model(changed)[:, :6], logits[:, :6], atol=1e-5)


def test_causal_lm_loss_matches_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=12,
                                       bos_token_id=0, eos_token_id=0))
    ids = torch.randint(1, 50, (2, 9))
    labels = ids.clone()
    labels[1, 6:] = -100
    out = model(input_ids=ids, labels=labels)
    assert torch.allclose(out.loss, errata.causal_lm_loss(out.logits, labels), atol=1e-5)
    assert not model.config.is_encoder_decoder


def test_train_and_evaluate_lm_on_repeated_text():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_embd=16, n_layer=1, n_head=2, n_positions=8,
                                       bos_token_id=0, eos_token_id=0))
    rows = errata.lm_blocks(torch.arange(200).remainder(10), 8)
    assert rows.shape == (25, 8)
    loader = torch.utils.data.DataLoader(rows, batch_size=5)
    before = errata.evaluate_lm(model, loader)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = errata.train_lm_epoch(model, loader, opt)
    after = errata.evaluate_lm(model, loader)
    assert math.isfinite(loss)
    assert after["perplexity"] < before["perplexity"] / 2
    assert math.isclose(after["perplexity"], math.exp(after["loss"]))
    assert 0 <= after["next_token_accuracy"] <= 1


def test_toy_gan_learns_a_gaussian():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    G, D = errata.mlp([4, 32, 32, 1]), errata.mlp([1, 32, 32, 1])
    errata.train_toy_gan(lambda n: 2.0 + 0.5 * torch.randn(n, 1, generator=g), G, D, 4, 200, generator_=g)
    with torch.no_grad():
        s = G(torch.randn(2000, 4, generator=g))
    assert abs(s.mean().item() - 2.0) < 0.35 and 0.25 < s.std().item() < 0.8


def test_python_supported_reads_metadata():
    assert errata.python_supported("torch", "3.11")
    assert not errata.python_supported("torch", "2.7")


def test_ledger_counts_and_refuses():
    ledger = errata.ErrataLedger()
    ledger.check("value_function", ok=True)
    with pytest.raises(AssertionError, match="bad"):
        ledger.check("gan_training", good=True, bad=False)
    with pytest.raises(KeyError):
        ledger.check("nonexistent", ok=True)
    assert ledger.metrics() == {"seed_blocks_listed": len(errata.SEED_BLOCKS), "seed_blocks_covered": 2,
                                "fixed_blocks_passing": 1}
    assert "FAILED" in ledger.table_markdown() and "not run" in ledger.table_markdown()
