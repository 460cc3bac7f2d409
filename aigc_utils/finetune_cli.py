"""Chapter 06 beyond one machine: the fine-tuning recipe as an ``accelerate`` script (§9 explains).

Launched as several processes it trains data-parallel; process 0 alone logs, evaluates and writes
the model, ``metrics.json`` and ``shards.json`` (the blocks each process trained on)::

    # one process (the CPU or one GPU); plain `python -m aigc_utils.finetune_cli` does the same
    accelerate launch --num_processes 1 -m aigc_utils.finetune_cli --data kjv --steps 200
    # two CPU processes (gloo): torchrun, as `accelerate launch --cpu` starts only one
    torchrun --standalone --nproc_per_node 2 -m aigc_utils.finetune_cli --data kjv --steps 200
    # N = 8 GPUs on one machine (NCCL), bf16
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 \\
        -m aigc_utils.finetune_cli --data kjv --init gpt2 --steps 1000 --batch-size 8 --context 512
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import GPT2LMHeadModel

    from .gpt2_finetune import TargetCorpus


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also shown in Chapter 06)."""
    p = argparse.ArgumentParser(
        prog="accelerate launch -m aigc_utils.finetune_cli",
        description="Fine-tune GPT-2 on a target corpus with accelerate (Chapter 06).",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100),  # any terminal
    )
    p.add_argument("--data", default="kjv", choices=["kjv", "fortunes"],
                   help="target corpus (held-out split built in)")  # fmt: skip
    p.add_argument("--init", default="scratch",
                   help="'scratch' (tiny GPT-2 from --n-layer/--n-embd/--n-head), 'gpt2' (hub, "
                        "online only) or a folder written by save_pretrained")  # fmt: skip
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--context", type=int, default=128, help="block length in tokens")
    p.add_argument("--batch-size", type=int, default=4, help="per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-tokens", type=int, default=4096,
                   help="held-out tokens scored before and after training")  # fmt: skip
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/finetune", help="folder for the model and metrics.json")
    return p


def load_model(args: argparse.Namespace) -> GPT2LMHeadModel:
    """The model ``--init`` names (the hub only when reachable and AIGC_OFFLINE is unset)."""
    from transformers import GPT2LMHeadModel

    from .gpt2_finetune import hub_available, new_gpt2, tiny_gpt2_config

    if args.init == "scratch":  # dropout 0: a seeded run is deterministic
        config = tiny_gpt2_config(args.n_layer, args.n_embd, args.n_head, args.context)
        return new_gpt2(config, args.seed)
    if not Path(args.init).is_dir() and not hub_available():
        raise SystemExit(f"--init {args.init}: the hub is not reachable (or AIGC_OFFLINE=1)")
    return GPT2LMHeadModel.from_pretrained(args.init)


def several_cpu_processes() -> bool:
    """Launched as several processes on a machine without CUDA (torchrun sets ``WORLD_SIZE``):
    accelerate joins them into one gloo group only when told it runs on the CPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def held_out_ppl(accelerator: Accelerator, model: torch.nn.Module, corpus: TargetCorpus,
                 context: int, n_tokens: int) -> float:  # fmt: skip
    """Held-out perplexity of the (unwrapped) model; leaves it in training mode."""
    from .gpt2_finetune import perplexity

    plain = accelerator.unwrap_model(model)
    ppl = perplexity(plain, corpus.held_out[:n_tokens], context, context // 2,
                     device=accelerator.device).ppl  # fmt: skip
    plain.train()
    return ppl


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Fine-tune data-parallel; process 0 evaluates and saves model, metrics.json, shards.json."""
    from accelerate import Accelerator
    from accelerate.utils import gather_object, set_seed

    from .core.train import adamw, warmup_cosine_scheduler
    from .gpt2_finetune import make_blocks, target_corpus

    args = build_parser().parse_args(argv)
    accelerator = Accelerator(cpu=several_cpu_processes(),
                              gradient_accumulation_steps=args.grad_accum)  # fmt: skip
    set_seed(args.seed)
    model = load_model(args)
    context = min(args.context, model.config.n_positions)
    corpus = target_corpus(args.data)
    per_step = args.batch_size * args.grad_accum * accelerator.num_processes
    blocks = make_blocks(corpus.train, context, args.steps * per_step, args.seed)
    data = torch.utils.data.TensorDataset(torch.arange(len(blocks)), blocks)  # (index, block)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size)  # no shuffle: seeded
    opt = adamw(model, args.lr, args.weight_decay, betas=(0.9, 0.95))
    # Stepped by hand once per optimizer step: --steps means optimizer steps for any process count.
    sched = warmup_cosine_scheduler(opt, args.warmup, args.steps)
    # prepare: DDP around the model (gradients averaged in backward), one shard of the loader each
    model, opt, loader = accelerator.prepare(model, opt, loader)
    main_process = accelerator.is_main_process  # process 0 of all machines: the one that logs
    untrained = math.nan
    if main_process:
        print(f"{accelerator.num_processes} process(es), {accelerator.distributed_type.value} on "
              f"{accelerator.device}; {args.steps} steps × {per_step} blocks × {context} tokens")
        untrained = held_out_ppl(accelerator, model, corpus, context, args.eval_tokens)

    model.train()
    seen: list[int] = []  # the indices of the blocks this process trains on
    step, t0, loss_value = 0, time.perf_counter(), math.nan
    for index, x in loader:
        seen += index.tolist()
        with accelerator.accumulate(model):
            loss = model(input_ids=x, labels=x).loss
            accelerator.backward(loss)  # the all-reduce: every process now holds the mean gradient
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: no step, no schedule
                sched.step()
            step += 1
            loss_value = accelerator.reduce(loss.detach(), "mean").item()
            if main_process and (step % args.log_every == 0 or step == args.steps):
                print(f"step {step:5d}  loss {loss_value:.4f}  lr {sched.get_last_lr()[0]:.2e}")
            if step >= args.steps:
                break
    seconds = time.perf_counter() - t0
    shards = gather_object([seen])  # one list of block indices per process, on every process

    metrics: dict[str, float] = {}
    if main_process:
        metrics = {
            "steps": step, "processes": accelerator.num_processes, "blocks_per_step": per_step,
            "final_loss": loss_value, "untrained_ppl": untrained,
            "held_out_ppl": held_out_ppl(accelerator, model, corpus, context, args.eval_tokens),
            "tokens_per_s": step * per_step * context / seconds, "seconds": seconds,
            "written_by": accelerator.process_index,
        }  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(out, save_function=accelerator.save)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out / "shards.json").write_text(json.dumps({"blocks_per_process": shards}))
        print(f"process {accelerator.process_index} wrote {out}", flush=True)
        print(json.dumps(metrics), flush=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
