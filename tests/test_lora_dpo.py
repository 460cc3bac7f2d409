"""Chapter 11: the hand-written LoRA against peft, the DPO loss against trl and against its closed form,
the exact KL, the judge, the pairs, the sampler and the gpu profile (the sizes shared with chapter 06 are
checked in test_gpt2_finetune).

``aigc_utils.lora_dpo`` is generated from the notebook's ``#| export`` cells."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from aigc_utils import gpt2_finetune as g6
from aigc_utils import lora_dpo as l11


def tiny(seed: int = 0, n_layer: int = 1, n_embd: int = 16):
    return g6.new_gpt2(g6.tiny_gpt2_config(n_layer=n_layer, n_embd=n_embd, n_head=2, context=32),
                       seed).eval()


def nudge(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, g6.VOCAB_SIZE, shape, generator=torch.Generator().manual_seed(seed))


def test_lora_starts_as_the_base_trains_only_a_and_b_and_merges_exactly():
    base = tiny(n_layer=2)
    x = ids((2, 12), 1)
    model = l11.add_lora(copy.deepcopy(base), rank=4, alpha=8)
    assert torch.equal(model(input_ids=x).logits, base(input_ids=x).logits)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith((".A", ".B")) for n in names)
    assert len(names) == 2 * 3 * 2  # A and B of c_attn, attn.c_proj, mlp.c_proj in two blocks
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    moved = model(input_ids=x).logits
    assert (moved - base(input_ids=x).logits).abs().max() > 1e-2
    with l11.adapters_off(model):
        assert torch.equal(model(input_ids=x).logits, base(input_ids=x).logits)
    assert torch.equal(model(input_ids=x).logits, moved)  # switched back on
    merged = l11.merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, l11.LoRAConv1D) for m in merged.modules())
    torch.testing.assert_close(merged(input_ids=x).logits, moved, atol=1e-4, rtol=0)


def test_hand_written_lora_equals_peft_with_the_same_matrices():
    base = tiny(n_layer=2)
    x = ids((2, 10), 3)
    ours = l11.add_lora(copy.deepcopy(base), rank=4, alpha=8)
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
    theirs = l11.peft_lora(copy.deepcopy(base), rank=4, alpha=8).eval()
    assert l11.copy_adapters_into_peft(ours, theirs) == 6
    trainable = sum(p.numel() for n, p in theirs.named_parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in ours.parameters() if p.requires_grad)
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=x).logits, ours(input_ids=x).logits,
                                   atol=1e-5, rtol=0)


def test_completion_logprobs_equal_the_full_forward_pass():
    model = tiny()
    prompts, completions = ids((3, 5), 5), ids((3, 4), 6)
    x = torch.cat([prompts, completions], 1)
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=x).logits, -1)
        expected = sum(logp[:, 4 + t].gather(1, completions[:, t : t + 1]).squeeze(1)
                       for t in range(4))
        torch.testing.assert_close(l11.completion_logprobs(model, prompts, completions), expected)
        torch.testing.assert_close(l11.batched_logprobs(model, prompts, completions, batch=2),
                                   expected)


def test_dpo_loss_is_ln2_at_the_start_and_matches_its_closed_form():
    w, l = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    assert l11.dpo_loss(w, l, w, l, beta=0.1).item() == pytest.approx(math.log(2), abs=1e-7)
    ref_w, ref_l = torch.tensor([-3.5, -5.0]), torch.tensor([-4.0, -4.0])
    margins = 0.5 * ((w - ref_w) - (l - ref_l))
    expected = torch.log1p(torch.exp(-margins)).mean()
    assert l11.dpo_loss(w, l, ref_w, ref_l, beta=0.5).item() == pytest.approx(expected.item())


def test_dpo_loss_equals_trls_dpo_trainer_on_the_same_token_ids():
    from aigc_utils.core import assets

    reference = tiny()
    policy = nudge(copy.deepcopy(reference), seed=7)
    prompts, chosen, rejected = ids((4, 6), 8), ids((4, 5), 9), ids((4, 5), 10)
    with torch.no_grad():
        ours = l11.dpo_loss(l11.completion_logprobs(policy, prompts, chosen),
                            l11.completion_logprobs(policy, prompts, rejected),
                            l11.completion_logprobs(reference, prompts, chosen),
                            l11.completion_logprobs(reference, prompts, rejected), beta=0.5).item()
    theirs = l11.trl_dpo_loss(policy, reference, prompts, chosen, rejected, 0.5,
                              assets.gpt2_tokenizer())
    assert abs(ours - math.log(2)) > 1e-3  # the nudge moved the loss off ln 2
    assert theirs == pytest.approx(ours, abs=1e-5)


def test_train_dpo_raises_the_chosen_over_the_rejected_and_sft_raises_the_chosen():
    base = tiny()
    prompts, chosen, rejected = ids((8, 4), 11), ids((8, 3), 12), ids((8, 3), 13)
    ref_w = l11.batched_logprobs(base, prompts, chosen)
    ref_l = l11.batched_logprobs(base, prompts, rejected)
    policy = copy.deepcopy(base).requires_grad_(True)
    history = l11.train_dpo(policy, (prompts, chosen, rejected), ref_w, ref_l, beta=0.5, steps=6,
                            batch=4, lr=1e-2, seed=0)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)
    margin = ((l11.batched_logprobs(policy, prompts, chosen) - ref_w)
              - (l11.batched_logprobs(policy, prompts, rejected) - ref_l))
    assert (margin > 0).float().mean() >= 0.75
    sft = copy.deepcopy(base).requires_grad_(True)
    l11.train_dpo(sft, (prompts, chosen, rejected), ref_w, ref_l, beta=0.5, steps=6, batch=4,
                  lr=1e-2, seed=0, sft=True)
    assert l11.batched_logprobs(sft, prompts, chosen).mean() > ref_w.mean()


def test_kl_per_token_is_zero_for_the_same_model_and_equals_a_direct_sum():
    reference = tiny()
    policy = nudge(copy.deepcopy(reference), seed=14)
    prompts, completions = ids((3, 4), 15), ids((3, 5), 16)
    assert l11.kl_per_token(reference, reference, prompts, completions) == pytest.approx(0, abs=1e-6)
    x = torch.cat([prompts, completions], 1)
    with torch.no_grad():
        p = F.log_softmax(policy(input_ids=x).logits[:, 3:-1], -1)
        q = F.log_softmax(reference(input_ids=x).logits[:, 3:-1], -1)
    direct = (p.exp() * (p - q)).sum(-1).mean().item()
    got = l11.kl_per_token(policy, reference, prompts, completions, batch=2)
    assert got == pytest.approx(direct, rel=1e-4) and got > 0


def test_judge_win_rates_bootstrap_and_distinct_n():
    assert l11.judge("She gave her sister the letter; Mrs. Bennet smiled.") == 4
    assert l11.judge("Shelter, hereafter, mrs") == 1  # whole words only
    rates = l11.win_rates(torch.tensor([2, 0, 1]), torch.tensor([1, 0, 3]))
    assert rates.tolist() == [1.0, 0.5, 0.0]
    low, high = l11.bootstrap_interval(torch.tensor([0.0, 1.0] * 50), seed=0)
    assert low < 0.5 < high and high - low < 0.25
    assert l11.distinct_n(torch.tensor([[1, 2, 1, 2], [1, 2, 3, 4]])) == pytest.approx(4 / 6)


def test_preference_pairs_keep_best_against_worst_and_drop_ties():
    prompts = torch.arange(3).view(3, 1)
    samples = torch.arange(3 * 3 * 2).view(3, 3, 2)
    scores = torch.tensor([[0, 2, 1], [1, 1, 1], [3, 0, 0]])
    logprobs = -torch.arange(9.0).view(3, 3)
    (p, w, l), lw, ll = l11.preference_pairs(prompts, samples, scores, logprobs)
    assert p.tolist() == [[0], [2]]
    assert torch.equal(w, samples[[0, 2], [1, 0]]) and torch.equal(l, samples[[0, 2], [0, 1]])
    assert lw.tolist() == [-1.0, -6.0] and ll.tolist() == [-0.0, -7.0]


def test_sampler_is_seeded_matches_top_k_without_a_cache_and_sums_log_probabilities():
    model = tiny()
    prompts = ids((4, 3), 17)
    a, logp = l11.sample_completions(model, prompts, 5, top_k=1, seed=0)
    with torch.no_grad():  # top-1 is greedy: the same tokens from full forward passes
        x = prompts
        for _ in range(5):
            x = torch.cat([x, model(input_ids=x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(a, x[:, 3:])
    b, logp_b = l11.sample_completions(model, prompts, 5, top_k=20, seed=1, batch=2)
    again, _ = l11.sample_completions(model, prompts, 5, top_k=20, seed=1, batch=2)
    assert torch.equal(b, again) and not torch.equal(a, b)
    for tokens, summed in ((a, logp), (b, logp_b)):  # under the full distribution, not the top k
        torch.testing.assert_close(summed, l11.batched_logprobs(model, prompts, tokens),
                                   atol=1e-4, rtol=0)


def test_prompts_are_cut_from_sentences_and_too_few_is_a_clear_error():
    from aigc_utils.core import assets

    encode = assets.tiktoken_gpt2().encode_ordinary
    found = l11.sentences("Short one. This sentence has at least eight words in it! Tiny.")
    assert found == ["This sentence has at least eight words in it!"]
    assert l11.prompt_ids(found, 1, 3, encode, seed=0).tolist() == [encode(found[0])[:3]]
    with pytest.raises(ValueError, match="ask for fewer"):
        l11.prompt_ids(found, 2, 3, encode, seed=0)


def test_gpu_profile_builds_and_takes_a_dpo_step_with_lora():
    """The gpu profile's tiny GPT-2 (sizes from the notebook) with its LoRA rank, one DPO step on the
    CPU at a batch of 2 pairs of the profile's lengths."""
    from conftest import notebook_parameters

    gpu = notebook_parameters("11_lora_dpo")["SIZES"]["gpu"]
    assert set(gpu["hub"]) <= set(gpu)
    config = g6.tiny_gpt2_config(gpu["n_layer"], gpu["n_embd"], gpu["n_head"], gpu["context"])
    base = g6.new_gpt2(config, 0).eval()
    policy = l11.add_lora(copy.deepcopy(base), gpu["rank"], gpu["alpha"])
    prompts, chosen, rejected = (ids((2, gpu["prompt_tokens"]), 18), ids((2, gpu["new_tokens"]), 19),
                                 ids((2, gpu["new_tokens"]), 20))
    ref_w = l11.batched_logprobs(base, prompts, chosen)
    ref_l = l11.batched_logprobs(base, prompts, rejected)
    history = l11.train_dpo(policy, (prompts, chosen, rejected), ref_w, ref_l, beta=0.1, steps=2,
                            batch=2, lr=gpu["lora_dpo_lr"], seed=0)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-6)
    assert any(m.B.abs().sum() > 0 for m in policy.modules() if isinstance(m, l11.LoRAConv1D))
