"""Appendix C, training tooling: ``finetune_cli`` (generated from ``notebooks/A1_training_tooling.ipynb``) —
chapter 06's recipe through HF ``Trainer``, throughput measured the same way for both loops, and the
data-parallel script run for real, as two CPU processes and as one, and as ``python -m``.

Two processes with a per-process batch of B and one process with a batch of 2B see the same blocks
at every optimizer step, so after the same steps they must hold the same parameters. Only a real
data-parallel run gives that: two processes that each train alone, or read the same shard, do not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from aigc_utils import finetune_cli
from aigc_utils import gpt2_finetune as g6
from aigc_utils.gpt2_finetune import VOCAB_SIZE

ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, LOG_EVERY = 6, 2, 3
TINY = ["--data", "kjv", "--init", "scratch", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
        "--context", "32", "--steps", str(STEPS), "--warmup", "1", "--lr", "1e-2",
        "--log-every", str(LOG_EVERY), "--eval-tokens", "256", "--seed", "0"]  # fmt: skip
TWO_CPU_PROCESSES = ["--standalone", "--nproc_per_node", "2", "-m", "aigc_utils.finetune_cli"]


@dataclass
class Run:
    """One launch: its output folder, stdout, metrics.json and shards.json."""

    out: Path
    stdout: str
    metrics: dict
    shards: list[list[int]]


def launcher(name: str, module: str) -> list[str]:
    """The venv's console script ``name``, else ``python -m module`` (the same program)."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def start(cmd: list[str], out: Path) -> subprocess.Popen[str]:
    """Start ``cmd --out out`` on the CPU (no GPU even where there is one)."""
    env = {**os.environ, "AIGC_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([*cmd, "--out", str(out)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def finish(process: subprocess.Popen[str], out: Path) -> Run:
    """Wait for a launch and read what it wrote."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    shards = json.loads((out / "shards.json").read_text())["blocks_per_process"]
    return Run(out, stdout, json.loads((out / "metrics.json").read_text()), shards)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The documented two-CPU-process command (batch B each) and one process (batch 2B), at once."""
    tmp = tmp_path_factory.mktemp("finetune_cli")
    two = start([*launcher("torchrun", "torch.distributed.run"), *TWO_CPU_PROCESSES, *TINY,
                 "--batch-size", str(BATCH)], tmp / "two")  # fmt: skip
    one = start([*launcher("accelerate", "accelerate.commands.launch"), "launch", "--cpu",
                 "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                 "--dynamo_backend", "no", "-m", "aigc_utils.finetune_cli", *TINY,
                 "--batch-size", str(2 * BATCH)], tmp / "one")  # fmt: skip
    try:
        return {"two": finish(two, tmp / "two"), "one": finish(one, tmp / "one")}
    finally:
        for process in (two, one):
            if process.poll() is None:
                process.kill()


PAGE = ROOT / "notebooks" / "A1_training_tooling.ipynb"


def page_cells(kind: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(PAGE.read_text())["cells"] if c["cell_type"] == kind]


def test_the_tested_command_is_the_documented_one():
    """The documented torchrun line, and the page's own run of it (python -m torch.distributed.run is
    torchrun), launch the same thing as this file."""
    assert "torchrun " + " ".join(TWO_CPU_PROCESSES) in "\n".join(page_cells("markdown"))
    page = re.sub(r"\s+", " ", "\n".join(page_cells("code")))
    assert '"--standalone", "--nproc_per_node", "2", "-m", "aigc_utils.finetune_cli"' in page


def test_the_page_defines_the_script_it_runs():
    """Every function of ``finetune_cli`` is written in an exported cell of the appendix, which calls the
    tooling it defines and takes chapter 06's functions from chapter 06's module, never its own."""
    code = page_cells("code")
    assert sum(c.startswith("#| default_exp finetune_cli\n") for c in code) == 1
    exported = "\n".join(c for c in code if c.startswith("#| export\n"))
    assert set(re.findall(r"^(?:def|class) (\w+)", exported, re.M)) == set(finetune_cli.__all__)
    rest = "\n".join(c for c in code if not c.startswith("#| export"))
    for name in ("train_with_trainer", "interleaved_throughput", "tokens_per_second", "build_parser",
                 "launch", "parameter_gap", "flops_per_token", "load_base_model"):  # fmt: skip
        assert re.search(rf"\b{name}\(", rest), f"{name} is never called on the page"
    imports = re.findall(r"^\s*(?:from|import)\s.*(?:gpt2_finetune|finetune_cli).*$", "\n".join(code), re.M)
    assert imports == ["from aigc_utils.gpt2_finetune import ("]


def test_python_dash_m_runs_the_script():
    """`python -m aigc_utils.finetune_cli` reaches main() through the module's __main__ guard (importing
    it, as this file does, runs nothing)."""
    env = {**os.environ, "AIGC_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "aigc_utils.finetune_cli", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == finetune_cli.build_parser().format_help()


def test_two_processes_read_disjoint_shards_of_the_same_steps(runs):
    two, one = runs["two"], runs["one"]
    assert (two.metrics["processes"], one.metrics["processes"]) == (2, 1)
    assert two.metrics["steps"] == one.metrics["steps"] == STEPS
    assert two.metrics["blocks_per_step"] == one.metrics["blocks_per_step"] == 2 * BATCH
    rank0, rank1 = two.shards
    assert len(rank0) == len(rank1) == STEPS * BATCH and not set(rank0) & set(rank1)
    (everything,) = one.shards
    assert everything == list(range(STEPS * 2 * BATCH))
    for k in range(STEPS):  # step k: the two shards together are the one process's batch k
        together = rank0[k * BATCH : (k + 1) * BATCH] + rank1[k * BATCH : (k + 1) * BATCH]
        assert sorted(together) == everything[k * 2 * BATCH : (k + 1) * 2 * BATCH]


def test_two_processes_end_where_one_with_twice_the_batch_ends(runs):
    from safetensors.torch import load_file

    two = load_file(runs["two"].out / "model.safetensors")
    one = load_file(runs["one"].out / "model.safetensors")
    assert two.keys() == one.keys()
    gap = max((two[k] - one[k]).abs().max().item() for k in two)
    print(f"max |two - one| over all parameters: {gap:.2e}")
    assert gap < 1e-4, f"parameters differ by up to {gap:.2e}: not one data-parallel run"


def test_only_process_zero_logs_and_writes(runs):
    two = runs["two"]
    assert two.metrics["written_by"] == 0
    assert [line for line in two.stdout.splitlines() if " wrote " in line] == [
        f"process 0 wrote {two.out}"
    ]
    assert sum(line.startswith("step ") for line in two.stdout.splitlines()) == STEPS // LOG_EVERY
    assert sorted(p.name for p in two.out.iterdir()) == [
        "config.json", "generation_config.json", "metrics.json", "model.safetensors", "shards.json"
    ]  # fmt: skip
    assert json.loads((two.out / "config.json").read_text())["n_embd"] == 32


def test_training_lowers_held_out_perplexity(runs):
    for run in runs.values():
        m = run.metrics
        assert 0.5 * VOCAB_SIZE < m["untrained_ppl"] < 2 * VOCAB_SIZE  # a fresh model: ~uniform
        assert m["held_out_ppl"] < 0.8 * m["untrained_ppl"], m
    assert runs["two"].metrics["held_out_ppl"] == pytest.approx(runs["one"].metrics["held_out_ppl"],
                                                                rel=1e-4)  # fmt: skip


def test_tokens_per_second_is_the_pooled_median_interval():
    from aigc_utils.core.train import History

    a, b = History(step_ends=[0.0, 1.0, 2.0, 2.5, 3.5, 4.0]), History(step_ends=[9.0, 9.1, 9.2, 9.4])
    assert finetune_cli.tokens_per_second(100, a) == pytest.approx(100 / 0.5)  # gaps 0.5, 1.0, 0.5
    assert finetune_cli.tokens_per_second(100, a, b) == pytest.approx(100 / 0.5)  # + 0.2
    assert finetune_cli.tokens_per_second(100, b, skip=0) == pytest.approx(100 / 0.1)  # 0.1, 0.1, 0.2
    with pytest.raises(ValueError):
        finetune_cli.tokens_per_second(100, b, skip=3)


def tiny(context: int = 16, seed: int = 0):
    return g6.new_gpt2(g6.tiny_gpt2_config(n_layer=1, n_embd=16, n_head=2, context=context), seed).eval()


def test_manual_loop_and_trainer_run_the_same_recipe_in_alternation():
    blocks = torch.randint(0, g6.VOCAB_SIZE, (16, 16), generator=torch.Generator().manual_seed(4))
    cfg = g6.TrainConfig(steps=6, batch_size=2, lr=3e-3, warmup_steps=1)
    speed, runs = finetune_cli.interleaved_throughput(tiny(), blocks, cfg, steps=4, rounds=2)
    (m0, m1), (t0, t1) = runs["manual"], runs["trainer"]
    assert [len(h["loss"]) for h in (m0, m1, t0, t1)] == [4, 4, 4, 4]
    assert m0.step_ends[-1] < t0.step_ends[0] < t0.step_ends[-1] < t1.step_ends[0] < m1.step_ends[0]
    for trainer in (t0, t1):  # same weights, batches, optimizer, schedule: the same losses
        assert trainer["lr"] == pytest.approx(m0["lr"], rel=1e-6)
        assert trainer["loss"] == pytest.approx(m0["loss"], rel=1e-4)
    assert m1["loss"] == m0["loss"]  # each run starts from its own copy of the model
    assert speed["manual"] == pytest.approx(finetune_cli.tokens_per_second(2 * 16, m0, m1))
    assert speed["trainer"] == pytest.approx(finetune_cli.tokens_per_second(2 * 16, t0, t1))

def test_trainer_without_the_named_loss_scales_it_by_t_minus_1_over_t():
    """The trap the page measures: with loss_type None, Trainer counts all B*T labels as predicted tokens."""
    blocks = torch.randint(0, VOCAB_SIZE, (8, 16), generator=torch.Generator().manual_seed(5))
    cfg = g6.TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup_steps=1)
    named = finetune_cli.train_with_trainer(tiny(), blocks, cfg, stop_after=1)
    plain = tiny()
    plain.loss_type = None
    unnamed = finetune_cli.train_with_trainer(plain, blocks, cfg, stop_after=1, name_loss=False)
    assert unnamed["loss"][0] / named["loss"][0] == pytest.approx(15 / 16, rel=1e-5)
    again = tiny()
    again.loss_type = None
    repaired = finetune_cli.train_with_trainer(again, blocks, cfg, stop_after=1)  # name_loss default
    assert repaired["loss"][0] == pytest.approx(named["loss"][0], rel=1e-6)


def test_parameter_gap_is_the_largest_difference(tmp_path):
    a, b = tiny(seed=0), tiny(seed=0)
    with torch.no_grad():
        b.transformer.ln_f.bias[3] += 0.25
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    assert finetune_cli.parameter_gap(tmp_path / "a", tmp_path / "b") == pytest.approx(0.25)
    assert finetune_cli.parameter_gap(tmp_path / "a", tmp_path / "a") == 0.0


def test_appendix_sizes_and_bars():
    from conftest import notebook_parameters

    params = notebook_parameters("A1_training_tooling")
    assert set(params["SIZES"]) == {"smoke", "cpu", "gpu"}
    for profile, sizes in params["SIZES"].items():
        assert sizes["compare_steps"] <= sizes["finetune_steps"] and set(sizes["hub"]) <= set(sizes)
        assert "dp_param_gap < 1e-4" in params["BARS"][profile]
        assert any(bar.startswith("trainer_loss_max_rel_diff <=") for bar in params["BARS"][profile])
