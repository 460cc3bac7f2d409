"""Chapter 06: tokenizer parity, perplexity against a hand computation, the sampling filters against
transformers' processors, the schedule against transformers', one recipe in two loops, the accelerate script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from aigc_utils import gpt2_finetune as g6

ROOT = Path(__file__).resolve().parents[1]


def tiny(context: int = 16, seed: int = 0):
    return g6.new_gpt2(g6.tiny_gpt2_config(n_layer=1, n_embd=16, n_head=2, context=context), seed).eval()


def test_tokenizer_parity_with_tiktoken():
    from aigc_utils import assets

    tok, enc = assets.gpt2_tokenizer(), assets.tiktoken_gpt2()
    texts = ["Hello world", "  two  spaces\n\nand\ttabs", "naïve café — ‘quotes’ 🤖 123,456.7", "It's they're we'll"]
    assert g6.tokenizer_parity(tok, enc, texts) == 1
    assert g6.bpe_pieces(tok, "Hello world") == [(15496, "Hello"), (995, " world")]
    assert b"".join(p if isinstance(p, bytes) else p.encode() for _, p in g6.bpe_pieces(tok, "café 🤖")) == "café 🤖".encode()


def test_byte_map_recovers_every_token_as_tiktoken_does():
    from aigc_utils import assets

    tok, enc = assets.gpt2_tokenizer(), assets.tiktoken_gpt2()
    assert len(set(g6.byte_to_unicode().values())) == 256
    assert all(g6.token_bytes(tok, i) == enc.decode_single_token_bytes(i) for i in range(0, g6.VOCAB_SIZE - 1, 7))


class _Broken:
    """A tokenizer that drops the last id: parity must say 0."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text):
        return {"input_ids": self.tok(text)["input_ids"][:-1]}


def test_tokenizer_parity_detects_a_difference():
    from aigc_utils import assets

    assert g6.tokenizer_parity(_Broken(assets.gpt2_tokenizer()), assets.tiktoken_gpt2(), ["a b c"]) == 0


def hand_perplexity(model, ids: torch.Tensor, context: int, stride: int) -> float:
    """Token by token, with a plain loop: the first window scores tokens 1..C-1 from the start of the text;
    then each step moves the end by ``stride`` and scores the new tokens from the last C tokens."""
    nll, n = 0.0, 0
    end = min(context, len(ids))
    spans = [(0, 1, end)]
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        spans.append((max(0, new_end - context), end, new_end))
        end = new_end
    for begin, first, stop in spans:
        for t in range(first, stop):
            with torch.no_grad():
                logits = model(input_ids=ids[begin:t].unsqueeze(0)).logits[0, -1]
            assert t - begin >= min(t, context - stride)  # enough context
            nll += -F.log_softmax(logits.double(), -1)[ids[t]].item()
            n += 1
    return math.exp(nll / n)


@pytest.mark.parametrize("stride", [3, 7])
def test_perplexity_matches_a_hand_computation(stride):
    model = tiny(context=8)
    ids = torch.randint(0, g6.VOCAB_SIZE, (29,), generator=torch.Generator().manual_seed(1))
    got = g6.perplexity(model, ids, context=8, stride=stride, batch_size=3)
    assert got.n_tokens == len(ids) - 1  # every token after the first is scored exactly once
    assert got.ppl == pytest.approx(hand_perplexity(model, ids, 8, stride), rel=1e-5)


def test_perplexity_short_text_equals_the_model_loss():
    model = tiny(context=32)
    ids = torch.randint(0, g6.VOCAB_SIZE, (20,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loss = model(input_ids=ids[None], labels=ids[None]).loss.item()
    assert g6.perplexity(model, ids, context=32).ppl == pytest.approx(math.exp(loss), rel=1e-5)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    model = tiny(context=8)
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied head: every logit is 0
    ids = torch.randint(0, g6.VOCAB_SIZE, (30,), generator=torch.Generator().manual_seed(3))
    assert g6.perplexity(model, ids, context=8, stride=4).ppl == pytest.approx(g6.VOCAB_SIZE, rel=1e-6)


def test_sliding_windows_score_each_token_once():
    for n, c, s in [(10, 4, 2), (4, 8, 7), (17, 5, 4), (9, 3, 1), (100, 16, 8)]:
        windows = g6.sliding_windows(n, c, s)
        scored = [t for b, e, f in windows for t in range(f, e)]
        assert scored == list(range(1, n))
        assert all(e - b == min(c, n) and f > b for b, e, f in windows)
    with pytest.raises(ValueError, match="stride < context"):
        g6.sliding_windows(10, 4, 4)


def test_sampling_filters_match_transformers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 500, generator=gen) * 3
    prev = torch.randint(0, 500, (3, 7), generator=gen)
    ours = g6.filter_next_token_logits(logits, prev, temperature=0.7, top_k=50, top_p=0.8, repetition_penalty=1.3)
    ref = logits.clone()
    for proc in (
        RepetitionPenaltyLogitsProcessor(1.3),
        TemperatureLogitsWarper(0.7),
        TopKLogitsWarper(50),
        TopPLogitsWarper(0.8),
    ):
        ref = proc(prev, ref)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    keep = ~torch.isinf(ref)
    assert torch.allclose(ours[keep], ref[keep], atol=1e-5)


def test_schedule_matches_transformers():
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=5, num_training_steps=40)
    for step in range(40):
        assert g6.warmup_cosine(step, 5, 40) == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
        opt.step()
        sched.step()


def test_split_held_out_is_disjoint_and_deterministic():
    items = [str(i) for i in range(12_345)]
    train, held = g6.split_held_out(items)
    assert sorted(train + held, key=int) == items and not set(train) & set(held)
    assert 0.01 < len(held) / len(items) < 0.03
    assert g6.split_held_out(items) == (train, held)


def test_manual_loop_and_trainer_run_the_same_recipe():
    blocks = torch.randint(0, g6.VOCAB_SIZE, (16, 16), generator=torch.Generator().manual_seed(4))
    cfg = g6.TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup_steps=1)
    base = tiny(context=16)
    manual = g6.train_manual(g6.fresh_copy(base), blocks, cfg)
    trainer = g6.train_with_trainer(g6.fresh_copy(base), blocks, cfg, stop_after=3)
    assert len(manual.losses) == 4 and len(trainer.losses) == 3
    assert manual.lrs[:3] == pytest.approx(trainer.lrs, rel=1e-6)
    assert manual.losses[:3] == pytest.approx(trainer.losses, rel=1e-4)
    assert manual.losses[-1] < manual.losses[0]
    assert g6.tokens_per_second(manual, skip=0) > 0


def test_pretrained_tiny_gpt2_is_cached(tmp_cache):
    config = g6.tiny_gpt2_config(1, 16, 2, 16)
    cfg = g6.TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1)
    first, extras, hit = g6.pretrained_tiny_gpt2(config, cfg)
    again, extras2, hit2 = g6.pretrained_tiny_gpt2(config, cfg)
    assert (hit, hit2) == (False, True) and extras2["losses"] == extras["losses"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_offline_base_model_is_the_tiny_one(tmp_cache):
    config = g6.tiny_gpt2_config(1, 16, 2, 16)
    cfg = g6.TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1)
    model, name, reason, _ = g6.load_base_model("gpt2", config, cfg)
    assert "tiny" in name and "AIGC_OFFLINE=1" in reason
    assert not model.config.is_encoder_decoder


def test_accelerate_launch_smoke(tmp_path):
    """The multi-GPU script, run for real by ``accelerate launch`` on the CPU with one process."""
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch"] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "aigc_utils.finetune_cli",
            "--data", "kjv", "--init", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
            "--context", "32", "--batch-size", "2", "--steps", "4", "--warmup", "1", "--log-every", "2",
            "--eval-tokens", "128", "--out", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "AIGC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["processes"] == 1
    assert 1 < metrics["held_out_ppl"] < 2 * g6.VOCAB_SIZE
    from transformers import GPT2LMHeadModel

    assert GPT2LMHeadModel.from_pretrained(tmp_path / "run").config.n_embd == 32
