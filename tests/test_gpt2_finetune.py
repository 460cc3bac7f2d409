"""Chapter 06: tokenizer parity, perplexity against a hand computation, the sampling filters against
transformers' processors, the sample statistics, the same pretrained base whatever the thread count or hash
seed, the page defining what runs, the gpu profile.

``aigc_utils.gpt2_finetune`` is generated from the notebook's ``#| export`` cells."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from aigc_utils import gpt2_finetune as g6

ROOT = Path(__file__).resolve().parents[1]


def tiny(context: int = 16, seed: int = 0):
    return g6.new_gpt2(g6.tiny_gpt2_config(n_layer=1, n_embd=16, n_head=2, context=context), seed).eval()


def test_tokenizer_parity_with_tiktoken():
    from aigc_utils.core import assets

    tok, enc = assets.gpt2_tokenizer(), assets.tiktoken_gpt2()
    texts = ["Hello world", "  two  spaces\n\nand\ttabs", "naïve café — ‘quotes’ 🤖 123,456.7",
             "It's they're we'll"]  # fmt: skip
    assert g6.tokenizer_parity(tok, enc, texts) == 1
    assert g6.bpe_pieces(tok, "Hello world") == [(15496, "Hello"), (995, " world")]
    pieces = g6.bpe_pieces(tok, "café 🤖")
    assert any(isinstance(p, bytes) for _, p in pieces)  # the emoji is split into bytes
    assert b"".join(p if isinstance(p, bytes) else p.encode() for _, p in pieces) == "café 🤖".encode()


def test_byte_map_recovers_every_token_as_tiktoken_does():
    from aigc_utils.core import assets

    tok, enc = assets.gpt2_tokenizer(), assets.tiktoken_gpt2()
    assert len(set(g6.byte_to_unicode().values())) == 256
    assert g6.byte_to_unicode()[32] == "Ġ" and g6.byte_to_unicode()[10] == "Ċ"
    ids = range(0, g6.VOCAB_SIZE - 1, 7)
    assert all(g6.token_bytes(tok, i) == enc.decode_single_token_bytes(i) for i in ids)


class _Broken:
    """A tokenizer that drops the last id: parity must say 0."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text):
        return {"input_ids": self.tok(text)["input_ids"][:-1]}


def test_tokenizer_parity_detects_a_difference():
    from aigc_utils.core import assets

    enc = assets.tiktoken_gpt2()
    assert g6.tokenizer_parity(_Broken(assets.gpt2_tokenizer()), enc, ["a b c"]) == 0


def hand_perplexity(model, ids: torch.Tensor, context: int, stride: int) -> float:
    """Token by token, with a plain loop: the first window scores tokens 1..C-1 from the start of the
    text; then each step moves the end by ``stride`` and scores the new tokens from the last C tokens."""
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
    assert got.mean_nll == pytest.approx(math.log(got.ppl), rel=1e-9)


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
        # the first window: token t sees t tokens; every later window: at least C - s
        assert all(f - b >= c - s for b, e, f in windows[1:])
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
    ours = g6.filter_next_token_logits(logits, prev, temperature=0.7, top_k=50, top_p=0.8,
                                       repetition_penalty=1.3)  # fmt: skip
    ref = logits.clone()
    for proc in (RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.7), TopKLogitsWarper(50),
                 TopPLogitsWarper(0.8)):  # fmt: skip
        ref = proc(prev, ref)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    keep = ~torch.isinf(ref)
    assert torch.allclose(ours[keep], ref[keep], atol=1e-5)


def random_logits(seed: int, rows: int = 4, vocab: int = 300) -> torch.Tensor:
    """Logits without ties (so "the k largest" is one set)."""
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_keeps_exactly_the_k_largest_logits(k):
    """Top-k alone: the k largest logits of each row survive unchanged, every other one is -inf — as
    transformers' TopKLogitsWarper does (the chained test above cannot see top-k once top-p follows)."""
    from transformers.generation.logits_process import TopKLogitsWarper

    logits = random_logits(k)
    got = g6.top_k_filter(logits, k)
    kept = ~torch.isinf(got)
    assert kept.sum(-1).tolist() == [k] * len(logits)
    largest = torch.zeros_like(kept).scatter(-1, logits.topk(k, dim=-1).indices, True)
    assert torch.equal(kept, largest) and torch.equal(got[kept], logits[kept])
    assert torch.equal(got, TopKLogitsWarper(k)(None, logits))
    assert torch.equal(g6.filter_next_token_logits(logits, top_k=k), got)
    for off in (0, logits.shape[-1]):  # 0 (off) and k >= V keep everything
        assert torch.equal(g6.top_k_filter(logits, off), logits)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_top_p_keeps_the_smallest_set_that_reaches_p(p):
    """Top-p alone: the m most likely tokens survive, m the smallest count whose probability reaches p —
    as transformers' TopPLogitsWarper does."""
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = random_logits(int(p * 100))
    got = g6.top_p_filter(logits, p)
    kept = ~torch.isinf(got)
    for row in range(len(logits)):
        ranked, order = logits[row].softmax(-1).double().sort(descending=True)
        m = int((ranked.cumsum(0) < p).sum()) + 1  # the first m reach p, the first m - 1 do not
        assert set(kept[row].nonzero().flatten().tolist()) == set(order[:m].tolist())
    assert torch.equal(got[kept], logits[kept])
    assert torch.equal(got, TopPLogitsWarper(p)(None, logits))
    assert torch.equal(g6.filter_next_token_logits(logits, top_p=p), got)
    by_hand = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()  # 0.5 + 0.3 reach 0.7, not 0.85
    assert (~torch.isinf(g6.top_p_filter(by_hand, 0.7))).tolist() == [[False, True, False, True]]
    assert (~torch.isinf(g6.top_p_filter(by_hand, 0.85))).tolist() == [[True, True, False, True]]
    assert torch.equal(g6.top_p_filter(logits, 1.0), logits)


def test_repetition_penalty_and_temperature_alone_match_transformers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
    )

    logits = random_logits(7)
    prev = torch.randint(0, logits.shape[-1], (len(logits), 9), generator=torch.Generator().manual_seed(8))
    ref = RepetitionPenaltyLogitsProcessor(1.3)(prev, logits.clone())
    assert torch.allclose(g6.penalize_repetition(logits, prev, 1.3), ref, rtol=0, atol=1e-6)
    assert torch.allclose(g6.filter_next_token_logits(logits, prev, repetition_penalty=1.3), ref,
                          rtol=0, atol=1e-6)  # fmt: skip
    assert torch.allclose(g6.filter_next_token_logits(logits, temperature=0.7),
                          TemperatureLogitsWarper(0.7)(prev, logits.clone()), rtol=1e-6)  # fmt: skip


def test_core_param_groups_decay_what_the_gpt2_rule_decays():
    """core.train's rule (decay every >= 2-D tensor) picks the same GPT-2 tensors as the chapter's
    former rule (no decay for biases, LayerNorm gains and anything 1-D)."""
    from aigc_utils.core.train import param_groups

    model = tiny()
    on, off = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    old_off = {n for n, p in model.named_parameters() if p.ndim < 2 or "bias" in n or "ln_" in n}
    assert {names[id(p)] for p in off["params"]} == old_off
    assert {names[id(p)] for p in on["params"]} == set(names.values()) - old_off
    assert "transformer.wte.weight" not in old_off and (on["weight_decay"], off["weight_decay"]) == (0.1, 0)


def test_split_held_out_is_disjoint_and_deterministic():
    items = [str(i) for i in range(12_345)]
    train, held = g6.split_held_out(items)
    assert sorted(train + held, key=int) == items and not set(train) & set(held)
    # blocks of 100; blocks 7, 57 and 107 are held out
    assert held == [str(i) for b in (7, 57, 107) for i in range(100 * b, 100 * b + 100)]
    assert g6.split_held_out(items) == (train, held)


def test_make_blocks_shuffles_whole_blocks_and_repeats_epochs():
    ids = torch.arange(50)
    blocks = g6.make_blocks(ids, 8, n_blocks=9, seed=3)
    assert blocks.shape == (9, 8) and all(int(b[0]) % 8 == 0 and torch.equal(b, b[0] + torch.arange(8))
                                          for b in blocks)  # fmt: skip
    assert sorted(int(b[0]) for b in blocks[:6]) == [0, 8, 16, 24, 32, 40]  # one epoch, then the next
    assert not torch.equal(blocks[:6], g6.make_blocks(ids, 8, seed=4))


def test_new_gpt2_names_its_loss():
    from transformers.loss.loss_utils import LOSS_MAPPING

    model = tiny()
    assert model.loss_type == "ForCausalLM" and model.loss_function is LOSS_MAPPING["ForCausalLM"]


def test_manual_loop_learns_on_the_transformers_schedule():
    from transformers import get_cosine_schedule_with_warmup

    blocks = torch.randint(0, g6.VOCAB_SIZE, (12, 16), generator=torch.Generator().manual_seed(4))
    cfg = g6.TrainConfig(steps=6, batch_size=2, lr=3e-3, warmup_steps=2)
    history = g6.train_manual(tiny(), blocks, cfg, progress=False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    expected = []
    for _ in range(6):
        expected.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert history["lr"] == pytest.approx(expected, abs=1e-12)
    assert history["loss"][-1] < history["loss"][0] and len(history.step_ends) == 6


def test_word_statistics_by_hand():
    counts = g6.word_counts(["Unto thee, O LORD; unto thee!", "Mr. Darcy's fortune"])
    assert counts == {"unto": 2, "thee": 2, "o": 1, "lord": 1, "mr": 1, "darcy's": 1, "fortune": 1}
    target = g6.word_counts(["unto " * 30 + "the " * 30 + "lord " * 19])  # 79 words
    source = g6.word_counts(["the " * 50 + "unto " * 2 + "fortune " * 48])  # 100 words
    # unto: 30/79 against 2/100 (19x): typical; the: 30/79 < 10 x 50/100; lord: absent from the
    # source (counted once, 12.7x) but seen only 19 < 20 times
    assert g6.typical_words(target, source) == {"unto"}
    assert g6.typical_words(target, source, min_count=19) == {"unto", "lord"}
    assert g6.typical_words(target, source, ratio=20.0) == set()
    assert g6.word_share(["Unto the LORD, unto thee"], {"unto", "lord"}) == pytest.approx(3 / 5)
    assert g6.word_share(["", "123"], {"unto"}) == 0.0


def test_most_frequent_of_by_hand():
    texts = ["unto the LORD, unto thee; thee and thee", "Unto Mrs Bennet"]
    assert g6.most_frequent_of(texts, {"unto", "thee", "lord", "mrs"}) == ["thee", "unto", "lord", "mrs"]
    assert g6.most_frequent_of(texts, {"unto", "thee", "lord", "mrs"}, n=2) == ["thee", "unto"]  # 3, 3
    assert g6.most_frequent_of(texts, {"begat"}) == []


def test_repeated_ngram_share_by_hand():
    assert g6.repeated_ngram_share([1, 2, 3, 4, 5]) == 0.0  # three trigrams, none seen before
    assert g6.repeated_ngram_share([1, 2, 3, 1, 2, 3, 1, 2]) == pytest.approx(3 / 6)
    assert g6.repeated_ngram_share([7] * 6) == pytest.approx(3 / 4)  # a loop: all but the first
    assert g6.repeated_ngram_share([1, 2, 1, 2], n=2) == pytest.approx(1 / 3)  # (1, 2) again
    assert g6.repeated_ngram_share([1, 2]) == 0.0  # no trigram at all


AUSTEN_TOKENS = 993_333  # the six novels of Debian's r-cran-janeaustenr 1.0.0, five <|endoftext|> between
AUSTEN_SHA256 = "0589e34dc8156bd06c73f6c9edde825b99e9511d320cab015536c88e31ec53e6"
BASE_RUN = """
import hashlib, json, torch
from aigc_utils import gpt2_finetune as g6
from aigc_utils.core import assets
ids = g6.encode_documents(assets.tiktoken_gpt2(), g6.pretraining_texts(), "<|endoftext|>")
config = g6.tiny_gpt2_config(n_layer=1, n_embd=64, n_head=2, context=64)
cfg = g6.TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup_steps=2)
model, extras, hit = g6.pretrained_tiny_gpt2(config, cfg)
weights = torch.cat([v.flatten() for v in model.state_dict().values()])
print(json.dumps({"threads": torch.get_num_threads(), "hit": hit, "n": len(ids),
                  "corpus": hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
                  "losses": extras["losses"],
                  "weights": hashlib.sha256(weights.numpy().tobytes()).hexdigest()}))
"""


def test_the_pretrained_base_repeats_whatever_the_hash_seed_and_differs_only_by_rounding(tmp_path):
    """The base's pretraining in three fresh processes, each with an empty cache. Two differ only in
    PYTHONHASHSEED and working folder: the same corpus, token for token (the pinned Debian text, in one
    fixed order), and bit for bit the same losses and weights. The third runs one thread instead of two,
    which adds floats in another order: its losses agree to rounding (as the page says, the machine's
    summation order is the one thing that moves the base)."""
    import os
    import subprocess
    import sys

    runs = []
    for name, hash_seed, threads in (("a", "0", "2"), ("b", "12345", "2"), ("c", "7", "1")):
        (tmp_path / name).mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": threads,
               "AIGC_CACHE": str(tmp_path / name / "cache"), "CUDA_VISIBLE_DEVICES": ""}
        runs.append(subprocess.Popen([sys.executable, "-c", BASE_RUN], env=env, cwd=tmp_path / name,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    done = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        done.append(json.loads(out.strip().splitlines()[-1]))
    a, b, c = done
    assert [run["threads"] for run in done] == [2, 2, 1] and not any(run["hit"] for run in done)
    for run in done:
        assert (run["n"], run["corpus"]) == (AUSTEN_TOKENS, AUSTEN_SHA256), (
            "the Austen corpus is not Debian's janeaustenr 1.0.0 text in janeaustenr's order")
    assert a["losses"] == b["losses"] and a["weights"] == b["weights"]  # bit for bit
    assert c["losses"] == pytest.approx(a["losses"], rel=1e-5)  # rounding, not another run


BASE_SIZES = ["hub_model", "n_layer", "n_embd", "n_head", "context", "batch_size", "pretrain_steps",
              "pretrain_lr", "warmup"]  # fmt: skip


@pytest.mark.parametrize("stem, keys", [
    ("A1_training_tooling", [*BASE_SIZES, "finetune_steps", "finetune_lr", "hub"]),
    ("11_lora_dpo", BASE_SIZES),  # its hub entry holds chapter 11's own learning rates
])  # fmt: skip
def test_pages_on_chapter_06s_base_load_it_at_chapter_06s_sizes(stem, keys):
    """Appendix C and chapter 11 ask chapter 06's load_base_model for the same model chapter 06
    pretrains (so a whole-book run loads it from the cache): the base's sizes agree in every profile."""
    from conftest import notebook_parameters

    chapter = notebook_parameters("06_gpt2_finetuning")["SIZES"]
    page = notebook_parameters(stem)["SIZES"]
    assert set(chapter) == set(page)
    for profile in chapter:
        assert {k: chapter[profile][k] for k in keys} == {k: page[profile][k] for k in keys}, profile


def test_pretrained_tiny_gpt2_is_cached(tmp_cache):
    config = g6.tiny_gpt2_config(1, 16, 2, 16)
    cfg = g6.TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1)
    first, extras, hit = g6.pretrained_tiny_gpt2(config, cfg)
    again, extras2, hit2 = g6.pretrained_tiny_gpt2(config, cfg)
    assert (hit, hit2) == (False, True) and extras2["losses"] == extras["losses"]
    assert len(extras["losses"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_offline_base_model_is_the_tiny_one(tmp_cache):
    from aigc_utils.core import assets

    with pytest.raises(assets.AssetMissing, match="AIGC_OFFLINE=1"):
        assets.hub_gpt2("gpt2")
    config = g6.tiny_gpt2_config(1, 16, 2, 16)
    cfg = g6.TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1)
    model, name, reason, extras = g6.load_base_model("gpt2", config, cfg)
    assert "tiny" in name and "AIGC_OFFLINE=1" in reason and extras["cache_hit"] is False
    assert not model.config.is_encoder_decoder and model.config.n_embd == 16


def test_finetune_vs_scratch_is_the_pages_two_runs_composed():
    """One seed of the transfer check equals, to the bit, the page's steps written out by hand:
    blocks shuffled with the seed, a fine-tuned copy, a scratch model initialised with seed + 1."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (2000,), generator=gen)
    held = torch.randint(0, 300, (200,), generator=gen)
    base = tiny(context=16)
    cfg = g6.TrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1, seed=5)
    got = g6.finetune_vs_scratch(base, ids, held, cfg, 16, 8, progress=False)
    blocks = g6.make_blocks(ids, 16, cfg.steps * cfg.batch_size, cfg.seed)
    tuned = g6.new_gpt2(base.config, 0)
    tuned.load_state_dict(base.state_dict())
    g6.train_manual(tuned, blocks, cfg, progress=False)
    scratch = g6.new_gpt2(base.config, cfg.seed + 1)
    g6.train_manual(scratch, blocks, cfg, progress=False)
    assert got["after"] == g6.perplexity(tuned, held, 16, 8).ppl
    assert got["scratch"] == g6.perplexity(scratch, held, 16, 8).ppl
    assert got["after"] != got["scratch"]
    untouched = tiny(context=16)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                  untouched.state_dict().values()))  # base not trained


def test_sizes_live_in_the_parameters_cell_and_the_bars_check_both_seeds():
    from conftest import notebook_parameters

    params = notebook_parameters("06_gpt2_finetuning")
    assert not hasattr(g6, "SIZES")  # the sizes are the page's, not the package's
    assert set(params["SIZES"]) == {"smoke", "cpu", "gpu"}
    for profile in ("cpu", "gpu"):
        assert "ppl_after <= 0.85 * ppl_scratch" in params["BARS"][profile]
        assert "ppl_after_seed1 <= 0.85 * ppl_scratch_seed1" in params["BARS"][profile]


def page_code() -> list[str]:
    cells = json.loads((ROOT / "notebooks" / "06_gpt2_finetuning.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def defined(cells: list[str]) -> set[str]:
    return set(re.findall(r"^(?:def|class) (\w+)", "\n".join(cells), re.M))


def test_the_page_defines_the_lesson_it_runs():
    """Every function and class of the generated module is written in an exported cell of the page, the
    page calls them, and it never imports its own module or shows code with show_source (what the reader
    edits is what runs). The tooling (Trainer, throughput, the multi-process script) is Appendix C's."""
    code = page_code()
    assert sum(c.startswith("#| default_exp gpt2_finetune\n") for c in code) == 1
    to_module = [c for c in code if c.startswith("#| export\n")]
    assert not [c for c in code if c.startswith("#| export ")], "every saved cell goes to gpt2_finetune"
    assert defined(to_module) == set(g6.__all__) - {"VOCAB_SIZE", "EOS_ID"}
    assert {"train_manual", "perplexity", "sliding_windows", "top_k_filter", "top_p_filter",
            "make_blocks", "tiny_gpt2_config", "pretrained_tiny_gpt2", "typical_words",
            "repeated_ngram_share"} <= defined(to_module)  # fmt: skip
    rest = "\n".join(c for c in code if not c.startswith("#| export"))
    for name in ("train_manual", "perplexity", "make_blocks", "top_k_filter", "filter_next_token_logits",
                 "finetune_vs_scratch", "load_base_model", "typical_words", "word_share",
                 "repeated_ngram_share", "most_frequent_of"):  # fmt: skip
        assert re.search(rf"\b{name}\(", rest), f"{name} is defined on the page but never called there"
    everything = "\n".join(code)
    assert not re.findall(r"^\s*(?:from|import)\s.*(?:gpt2_finetune|finetune_cli).*$", everything, re.M)
    assert "show_source(" not in everything
    assert not re.search(r"\b(?:train_with_trainer|TrainingArguments|Accelerator)\b", everything)


def test_gpu_profile_builds_and_takes_one_step():
    """The gpu profile's tiny GPT-2 (sizes from the notebook) at batch 2 on the CPU: the warm-up step
    (learning rate 0) and one real optimizer step."""
    from conftest import notebook_parameters

    gpu = notebook_parameters("06_gpt2_finetuning")["SIZES"]["gpu"]
    assert set(gpu["hub"]) <= set(gpu)
    config = g6.tiny_gpt2_config(gpu["n_layer"], gpu["n_embd"], gpu["n_head"], gpu["context"])
    model = g6.new_gpt2(config, 0)
    cfg = g6.TrainConfig(steps=gpu["finetune_steps"], batch_size=2, lr=gpu["finetune_lr"],
                         warmup_steps=gpu["warmup"])  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, g6.VOCAB_SIZE, (4, gpu["context"]), generator=gen)
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    history = g6.train_manual(model, blocks, cfg, stop_after=2, progress=False)
    assert history["loss"][0] == pytest.approx(math.log(g6.VOCAB_SIZE), rel=0.05)  # a fresh model
    assert history["lr"] == pytest.approx([0.0, gpu["finetune_lr"] / gpu["warmup"]])
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)
