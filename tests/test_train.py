"""The training core against hand computations and the libraries it mirrors."""

import math

import pytest
import torch
from torch import nn

from aigc_utils.core import train


def test_warmup_cosine_equals_transformers_schedule():
    from transformers import get_cosine_schedule_with_warmup

    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ref = get_cosine_schedule_with_warmup(opt, num_warmup_steps=7, num_training_steps=50)
    for step in range(50):
        assert train.warmup_cosine(step, 7, 50) == pytest.approx(ref.lr_lambdas[0](step), abs=1e-12)


def test_warmup_cosine_floor_by_hand():
    # warm-up is linear from 0; the cosine ends exactly at the floor and is halfway at the midpoint
    assert train.warmup_cosine(0, 10, 110, floor=0.1) == 0.0
    assert train.warmup_cosine(5, 10, 110, floor=0.1) == pytest.approx(0.5)
    assert train.warmup_cosine(10, 10, 110, floor=0.1) == pytest.approx(1.0)
    assert train.warmup_cosine(60, 10, 110, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert train.warmup_cosine(110, 10, 110, floor=0.1) == pytest.approx(0.1)
    assert train.warmup_cosine(500, 10, 110, floor=0.1) == pytest.approx(0.1)  # never below the floor


def test_scheduler_applies_the_multiplier():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    sched = train.warmup_cosine_scheduler(opt, 4, 20, floor=0.25)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * train.warmup_cosine(s, 4, 20, 0.25) for s in range(20)])


def test_param_groups_and_count_parameters():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    model[1].weight.requires_grad_(False)  # frozen: left out of both groups
    groups = train.param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in groups[1]["params"]} == {id(model[1].bias), id(model[2].bias)}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    no_embeddings = train.param_groups(model, 0.1, decay=lambda n, p: p.ndim >= 2 and not n.startswith("0."))
    assert {id(p) for p in no_embeddings[0]["params"]} == {id(model[2].weight)}
    total = 10 * 4 + 4 + 4 + 4 * 3 + 3
    assert train.count_parameters(model) == total
    assert train.count_parameters(model, trainable_only=True) == total - 4


def test_optimizer_step_clips_the_global_norm():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    value = train.optimizer_step(opt, (w * torch.tensor([3.0, 4.0])).sum(), clip=1.0)
    assert value == pytest.approx(25.0)
    # gradient (3, 4) has norm 5; clipped to norm 1 it is (0.6, 0.8)
    assert w.detach().tolist() == pytest.approx([2.4, 3.2])


def test_fit_matches_a_hand_written_loop():
    def run(use_fit: bool) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        x, y = torch.randn(64, 3), torch.randn(64, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05)
        sched = train.warmup_cosine_scheduler(opt, 2, 10)
        loss_of = lambda i: ((model(x[i * 6 : i * 6 + 6]) - y[i * 6 : i * 6 + 6]) ** 2).mean()  # noqa: E731
        if use_fit:
            hist = train.fit(loss_of, 10, opt, scheduler=sched, clip=0.5, progress=False)
            losses = hist["loss"]
            assert hist["lr"] == pytest.approx([0.05 * train.warmup_cosine(s, 2, 10) for s in range(10)])
        else:
            losses = []
            for i in range(10):
                loss = loss_of(i)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                opt.step()
                sched.step()
                losses.append(loss.item())
        return losses, model.weight.detach().clone()

    (a, wa), (b, wb) = run(True), run(False)
    assert a == b
    assert torch.equal(wa, wb)


def test_fit_records_evaluations_and_own_updates():
    calls = []
    hist = train.fit(lambda i: {"d_loss": float(i), "g_loss": -float(i)}, 7, evaluate=lambda: {"val": 1.5},
                     eval_every=3, on_step=calls.append, progress=False)
    assert hist["d_loss"] == [float(i) for i in range(7)] and hist["g_loss"][-1] == -6.0
    assert hist.evals == {"step": [3.0, 6.0, 7.0], "val": [1.5, 1.5, 1.5]}
    assert calls == list(range(7)) and len(hist.step_ends) == 7 and hist.seconds > 0
    assert hist.last("d_loss", 2) == 5.5


def test_epoch_batches_are_the_per_epoch_permutations():
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = list(train.epoch_batches(10, 4, 2, gen_a))
    expected = [b for _ in range(2) for b in torch.randperm(10, generator=gen_b).split(4)]
    assert [t.tolist() for t in got] == [t.tolist() for t in expected]
    assert len(got) == 2 * train.steps_per_epoch(10, 4) == 6
    assert sorted(torch.cat(got[:3]).tolist()) == list(range(10))  # one epoch sees every example once


def test_stopwatch_and_best_of_measure_wall_time():
    import time

    with train.Stopwatch() as sw:
        time.sleep(0.05)
    assert 0.045 <= sw.seconds < 0.5
    durations = iter([0.03, 0.01, 0.02])
    assert train.best_of(lambda: time.sleep(next(durations)), repeats=3) == pytest.approx(0.01, abs=0.008)
    assert math.isfinite(sw.seconds)
