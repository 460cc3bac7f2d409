"""Chapter 06 beyond one machine: ``finetune_cli`` (generated from the notebook's ``#| export finetune_cli``
cells) run for real, as two CPU processes and as one, and as ``python -m``.

Two processes with a per-process batch of B and one process with a batch of 2B see the same blocks
at every optimizer step, so after the same steps they must hold the same parameters. Only a real
data-parallel run gives that: two processes that each train alone, or read the same shard, do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aigc_utils import finetune_cli
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


def test_the_tested_command_is_the_documented_one():
    cells = json.loads((ROOT / "notebooks" / "06_gpt2_finetuning.ipynb").read_text())["cells"]
    prose = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "torchrun " + " ".join(TWO_CPU_PROCESSES) in prose


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
