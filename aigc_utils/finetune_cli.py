"""Chapter 06 beyond one machine: fine-tune a GPT-2 with ``accelerate`` (one GPU, many GPUs, many nodes).

The same recipe as the chapter's manual loop (AdamW, warmup + cosine, clipping), written against
``accelerate.Accelerator`` so one script runs everywhere::

    # one process (CPU or one GPU)
    accelerate launch -m aigc_utils.finetune_cli --data kjv --init scratch --steps 200
    # 8 GPUs on one machine, bf16
    accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 \\
        -m aigc_utils.finetune_cli --data kjv --init gpt2 --steps 1000 --batch-size 8 --context 512
    # 2 nodes × 8 GPUs: the same line on every node, with its own --machine_rank
    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank 0 \\
        --main_process_ip 10.0.0.1 --main_process_port 29500 -m aigc_utils.finetune_cli ...

``accelerator.prepare`` wraps the model in DistributedDataParallel and shards the DataLoader, so every
process sees different blocks and the effective batch is ``batch_size × processes × grad_accum``.
``python -m aigc_utils.finetune_cli`` (no launcher) runs the same code as a single process.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also shown in Chapter 06)."""
    p = argparse.ArgumentParser(
        prog="accelerate launch -m aigc_utils.finetune_cli",
        description="Fine-tune GPT-2 on a target corpus with accelerate (Chapter 06).",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100),  # same help on every terminal
    )
    p.add_argument("--data", default="kjv", choices=["kjv", "fortunes"], help="target corpus (held-out split built in)")
    p.add_argument("--init", default="scratch",
                   help="'scratch' (tiny GPT-2 from --n-layer/--n-embd/--n-head), 'gpt2' (hub, online only) "
                        "or a folder written by save_pretrained")  # fmt: skip
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
    p.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens scored at the end")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/finetune", help="folder for the model and metrics.json")
    return p


def load_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The model ``--init`` names (the hub only when reachable and AIGC_OFFLINE is unset)."""
    from transformers import GPT2LMHeadModel

    from .gpt2_finetune import hub_available, new_gpt2, tiny_gpt2_config

    if args.init == "scratch":
        return new_gpt2(tiny_gpt2_config(args.n_layer, args.n_embd, args.n_head, args.context), args.seed)
    if Path(args.init).is_dir():
        return GPT2LMHeadModel.from_pretrained(args.init)
    if not hub_available():
        raise SystemExit(f"--init {args.init}: the hub is not reachable (or AIGC_OFFLINE=1); use 'scratch' or a folder")
    return GPT2LMHeadModel.from_pretrained(args.init)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Fine-tune, evaluate held-out perplexity on the main process, save model + ``metrics.json``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .gpt2_finetune import make_blocks, param_groups, perplexity, target_corpus, warmup_cosine

    args = build_parser().parse_args(argv)
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum)
    set_seed(args.seed)
    model = load_model(args)
    context = min(args.context, model.config.n_positions)
    corpus = target_corpus(args.data)
    per_step = args.batch_size * args.grad_accum * accelerator.num_processes
    blocks = make_blocks(corpus.train, context, args.steps * per_step, args.seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(blocks), batch_size=args.batch_size)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95))
    # The schedule is stepped by hand once per optimizer step (a prepared scheduler would step once per
    # process), so --steps means optimizer steps whatever the number of processes.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, args.warmup, args.steps))
    model, opt, loader = accelerator.prepare(model, opt, loader)
    accelerator.print(
        f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
        f"{accelerator.mixed_precision}; {args.steps} steps × {per_step} blocks × {context} tokens"
    )

    model.train()
    step, t0, loss_value = 0, time.perf_counter(), math.nan
    for (x,) in loader:
        with accelerator.accumulate(model):
            loss = model(input_ids=x, labels=x).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            if not accelerator.optimizer_step_was_skipped:
                sched.step()
            step += 1
            loss_value = accelerator.gather(loss.detach()).mean().item()
            if step % args.log_every == 0 or step == args.steps:
                accelerator.print(f"step {step:5d}  loss {loss_value:.4f}  lr {sched.get_last_lr()[0]:.2e}")
            if step >= args.steps:
                break
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()

    metrics: dict[str, float] = {}
    if accelerator.is_main_process:
        plain = accelerator.unwrap_model(model)
        held = corpus.held_out[: args.eval_tokens]
        ppl = perplexity(plain, held, context, context // 2, device=accelerator.device)
        metrics = {
            "steps": step, "processes": accelerator.num_processes, "final_loss": loss_value,
            "held_out_ppl": ppl.ppl, "tokens_per_s": step * per_step * context / seconds, "seconds": seconds,
        }  # fmt: skip
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plain.save_pretrained(out, save_function=accelerator.save)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        accelerator.print(json.dumps(metrics))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
