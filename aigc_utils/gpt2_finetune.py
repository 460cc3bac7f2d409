"""Chapter 06 — GPT-2 fine-tuning done right: tokenizer, perplexity, sampling, two training loops.

GPT-2's byte-level BPE, a tiny GPT-2 pretrained on Austen or the hub's ``gpt2``, a held-out target
domain, sliding-window perplexity, the sampling filters, and one recipe run by a plain loop
(:func:`train_manual`, the lesson) and by HF ``Trainer``."""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .core.checkpoints import cached_module
from .core.network import offline, reachable
from .core.train import History, Stopwatch, count_parameters, param_groups, warmup_cosine_scheduler

if TYPE_CHECKING:
    import tiktoken
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

VOCAB_SIZE = 50257  # GPT-2's byte-level BPE: 256 bytes + 50,000 merges + <|endoftext|>
EOS_ID = 50256  # <|endoftext|>

# Sizes per profile. hub_model: the hub model used when huggingface.co is reachable (never with
# AIGC_OFFLINE=1), else the book's tiny GPT-2 of n_layer x n_embd with n_head heads; context and
# batch_size: block length and blocks per step; *_steps and *_lr: optimizer steps and peak learning
# rates of pretraining and fine-tuning; warmup: warm-up steps of both; compare_steps: steps both
# loops run to be compared; eval_tokens / eval_stride: held-out tokens scored and the sliding
# window's stride; sample_tokens: tokens per sample; hub: what changes with the hub's model.
SIZES = {
    "smoke": dict(hub_model=None, n_layer=2, n_embd=64, n_head=2, context=64, batch_size=4,
                  pretrain_steps=30, pretrain_lr=3e-3, finetune_steps=16, finetune_lr=2e-3,
                  warmup=3, compare_steps=6, eval_tokens=768, eval_stride=32, sample_tokens=12,
                  hub={}),
    "cpu": dict(hub_model=None, n_layer=4, n_embd=128, n_head=4, context=128, batch_size=4,
                pretrain_steps=200, pretrain_lr=2e-3, finetune_steps=30, finetune_lr=2e-3, warmup=6,
                compare_steps=14, eval_tokens=6144, eval_stride=64, sample_tokens=40, hub={}),
    "gpu": dict(hub_model="gpt2", n_layer=6, n_embd=384, n_head=6, context=256, batch_size=32,
                pretrain_steps=1000, pretrain_lr=1e-3, finetune_steps=300, finetune_lr=1e-3,
                warmup=30, compare_steps=40, eval_tokens=65536, eval_stride=128, sample_tokens=60,
                hub=dict(context=512, batch_size=16, finetune_lr=1e-4)),
}


# --- Tokenizer ------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters: printable Latin-1 bytes
    stand for themselves, the other 68 move to 256, 257, ... (a space shows as ``'Ġ'``)."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}  # ! to ~, ¡ to ¬, ® to ÿ
    moved = [b for b in range(256) if b not in printable]
    return {b: chr(b) if b in printable else chr(256 + moved.index(b)) for b in range(256)}


def token_bytes(tokenizer: GPT2TokenizerFast, token_id: int) -> bytes:
    """The raw bytes of one token (its vocabulary string mapped back by :func:`byte_to_unicode`)."""
    inverse = {c: b for b, c in byte_to_unicode().items()}
    return bytes(inverse[c] for c in tokenizer.convert_ids_to_tokens(token_id))


def bpe_pieces(tokenizer: GPT2TokenizerFast, text: str) -> list[tuple[int, str | bytes]]:
    """``(id, piece)`` for every token of ``text``: the piece as text, or as raw bytes when a token
    holds only part of a multi-byte UTF-8 character (byte-level BPE splits emoji into bytes)."""
    pieces: list[tuple[int, str | bytes]] = []
    for i in tokenizer(text)["input_ids"]:
        raw = token_bytes(tokenizer, i)
        try:
            pieces.append((i, raw.decode("utf-8")))
        except UnicodeDecodeError:
            pieces.append((i, raw))
    return pieces


def tokenizer_parity(tok: GPT2TokenizerFast, enc: tiktoken.Encoding, texts: Iterable[str]) -> int:
    """1 when the transformers tokenizer and tiktoken's ``gpt2`` agree on every text, else 0."""
    return int(all(tok(t)["input_ids"] == enc.encode_ordinary(t) for t in texts))


def encode_documents(encoding: tiktoken.Encoding, documents: Sequence[str], sep: str) -> Tensor:
    """One 1-D id stream: documents joined by ``sep`` (``"<|endoftext|>"`` inserts id 50256),
    encoded by tiktoken — the transformers tokenizer's ids (:func:`tokenizer_parity`), faster."""
    if sep == "<|endoftext|>":
        ids: list[int] = []
        for chunk in encoding.encode_ordinary_batch(list(documents)):
            ids += [*chunk, EOS_ID]
        return torch.tensor(ids[:-1], dtype=torch.long)
    return torch.tensor(encoding.encode_ordinary(sep.join(documents)), dtype=torch.long)


# --- Data: the pretraining corpus and the target domain -------------------------------------------
def split_held_out(
    items: Sequence[str], block: int = 100, every: int = 50, offset: int = 7
) -> tuple[list[str], list[str]]:
    """Deterministic split: block ``b`` of ``block`` consecutive items is held out when
    ``b % every == offset`` (2 %; whole blocks, so no held-out item's neighbour trains)."""
    train: list[str] = []
    held: list[str] = []
    for start in range(0, len(items), block):
        (held if (start // block) % every == offset else train).extend(items[start : start + block])
    return train, held


@dataclass
class TargetCorpus:
    """A target domain as token streams: ``train`` and ``held_out`` (1-D LongTensors)."""

    name: str
    train: torch.Tensor
    held_out: torch.Tensor
    n_train_docs: int
    n_held_docs: int


def target_corpus(name: str = "kjv") -> TargetCorpus:
    """The target domain and its held-out split: ``"kjv"`` (31,102 verses) or ``"fortunes"``."""
    from .core import assets

    if name not in ("kjv", "fortunes"):
        raise ValueError(f"unknown target corpus {name!r}: use 'kjv' or 'fortunes'")
    kjv = name == "kjv"
    docs, sep = (assets.kjv_verses(), "\n") if kjv else (assets.fortunes(), "<|endoftext|>")
    train, held = split_held_out(docs)
    enc = assets.tiktoken_gpt2()
    train_ids, held_ids = encode_documents(enc, train, sep), encode_documents(enc, held, sep)
    return TargetCorpus(name, train_ids, held_ids, len(train), len(held))


def make_blocks(ids: Tensor, length: int, n_blocks: int | None = None, seed: int = 0) -> Tensor:
    """Cut a 1-D stream into non-overlapping blocks of ``length`` tokens, shuffled with ``seed``:
    ``(n_blocks, length)``; more blocks than the stream holds repeat it, each epoch reshuffled."""
    usable = (len(ids) // length) * length
    blocks = ids[:usable].view(-1, length)
    blocks = blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))]
    if n_blocks is not None:
        if n_blocks > len(blocks):
            reps = range(1, math.ceil(n_blocks / len(blocks)))
            blocks = torch.cat([blocks, *[make_blocks(ids, length, None, seed + r) for r in reps]])
        blocks = blocks[:n_blocks]
    return blocks.contiguous()


# --- Models ---------------------------------------------------------------------------------------
def tiny_gpt2_config(
    n_layer: int, n_embd: int, n_head: int, context: int, dropout: float = 0.0
) -> GPT2Config:
    """A small ``GPT2Config`` with GPT-2's 50,257-token vocabulary (BOS = EOS = 50256)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB_SIZE, n_positions=context, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
    )  # fmt: skip


def new_gpt2(config: GPT2Config, seed: int) -> GPT2LMHeadModel:
    """A freshly initialised, seeded ``GPT2LMHeadModel``. Naming its ``loss_type`` ``"ForCausalLM"``
    (the loss it computes anyway) stops a warning and ``Trainer`` mis-scaling the loss."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"
    return model


# --- Perplexity -----------------------------------------------------------------------------------
@dataclass
class Perplexity:
    """Perplexity, its mean NLL (nats), the scored tokens, and argmax accuracy for contrast."""

    ppl: float
    mean_nll: float
    n_tokens: int
    argmax_accuracy: float


def sliding_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    r"""``(begin, end, first_scored)`` windows: each token but the first scored once.

    Window $k$ ends at $e_0 = \min(C, n)$, $e_k = \min(e_{k-1} + s, n)$, starts at
    $b_k = \max(0, e_k - C)$ and scores the new tokens $[e_{k-1}, e_k)$. In the first window token
    $t$ sees the $t$ tokens before it; in every later window a scored token sees at least $C - s$.
    A token is predicted only from tokens before it, so $s < C$.
    """
    if not 0 < stride < context:
        raise ValueError(f"need 0 < stride < context, got stride={stride}, context={context}")
    end = min(context, n)
    windows = [(0, end, 1)]
    while end < n:
        new_end = min(end + stride, n)
        windows.append((max(0, new_end - context), new_end, end))
        end = new_end
    return windows


@torch.no_grad()
def perplexity(
    model: nn.Module,
    ids: torch.Tensor,
    context: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> Perplexity:
    r"""Perplexity of a causal LM on a token stream: $\exp$ of the token-weighted mean NLL.

    Windows of ``context`` tokens (all of one length) slide by ``stride`` (default half the context)
    and go through the model in batches; a mask keeps only the tokens each window scores.
    """
    model.eval()
    ids = ids.reshape(-1)
    windows = sliding_windows(len(ids), context, stride or max(1, context // 2))
    length = windows[0][1]
    nll_sum, count, correct = 0.0, 0, 0
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        x = torch.stack([ids[b:e] for b, e, _ in chunk]).to(device)
        logp = F.log_softmax(model(input_ids=x).logits.float()[:, :-1], -1)  # t predicts t+1
        target = x[:, 1:]
        token_nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, L-1)
        # target j+1 (absolute position b+j+1) is scored iff b+j+1 >= first_scored
        firsts = torch.tensor([f - b for b, _, f in chunk], device=x.device)
        mask = torch.arange(1, length, device=x.device).unsqueeze(0) >= firsts.unsqueeze(1)
        nll_sum += token_nll[mask].double().sum().item()
        count += int(mask.sum().item())
        correct += int(((logp.argmax(-1) == target) & mask).sum().item())
    return Perplexity(math.exp(nll_sum / count), nll_sum / count, count, correct / count)


# --- Sampling -------------------------------------------------------------------------------------
def filter_next_token_logits(
    logits: torch.Tensor, previous: torch.Tensor | None = None, temperature: float = 1.0,
    top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
) -> torch.Tensor:
    r"""The sampling filters, applied to next-token logits ``(B, V)`` in transformers' order.

    1. Repetition penalty (CTRL): for each token in ``previous``, $z \leftarrow z/\rho$ if $z > 0$
       else $z\rho$. 2. Temperature: $z \leftarrow z / \tau$. 3. Top-$k$: keep the $k$ largest
       logits. 4. Top-$p$: keep the smallest set of most likely tokens whose probability reaches $p$
       (at least one). Dropped logits become $-\infty$.
    """
    z = logits.float().clone()
    if repetition_penalty != 1.0 and previous is not None:
        seen = z.gather(-1, previous)
        seen = torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
        z.scatter_(-1, previous, seen)
    if temperature != 1.0:
        z = z / temperature
    if top_k and top_k < z.size(-1):
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True, dim=-1)
        probs = sorted_z.softmax(-1)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p  # the mass before this token reaches p
        z = z.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return z


def generate_text(
    model: GPT2LMHeadModel, tokenizer: GPT2TokenizerFast, prompt: str, max_new_tokens: int,
    seed: int = 0, device: torch.device | str = "cpu", **kwargs: object,
) -> str:
    """The continuation of ``prompt`` under one decoding strategy (``model.generate``, KV cache)."""
    model.eval()
    x = tokenizer(prompt, return_tensors="pt").to(device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**x, max_new_tokens=max_new_tokens, pad_token_id=EOS_ID, **kwargs)
    return tokenizer.decode(out[0, x["input_ids"].shape[1] :], skip_special_tokens=True)


# --- Training: one recipe, two loops --------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that defines a training run (and so belongs in a checkpoint key)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    seed: int = 0


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA when supported, else fp16 on CUDA, else ``None`` (no mixed precision)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_manual(
    model: GPT2LMHeadModel,
    blocks: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    desc: str = "train",
    stop_after: int | None = None,
    progress: bool = True,
) -> History:
    r"""The whole recipe as a plain loop: AdamW, warm-up + cosine, clipping, AMP only on CUDA.

    Step $i$ takes the next ``batch_size`` blocks (already shuffled), computes the causal-LM loss
    (``labels = input_ids``; the model shifts), backpropagates, clips $\lVert g\rVert_2 \le c$,
    steps the optimizer, then the schedule — ``Trainer``'s order. ``stop_after`` ends the run
    early (the schedule still spans ``cfg.steps``).
    """
    device = torch.device(device)
    model.to(device).train()
    groups = param_groups(model, cfg.weight_decay)  # decay matrices, not biases or LayerNorm gains
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = warmup_cosine_scheduler(opt, cfg.warmup_steps, cfg.steps)
    dtype = amp_dtype(device)  # bf16 needs no loss scaling; fp16 does
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    history = History()
    steps = min(cfg.steps, stop_after or cfg.steps)
    with Stopwatch() as clock:
        for step in tqdm(range(steps), desc=desc, disable=not progress):
            x = blocks[step * cfg.batch_size : (step + 1) * cfg.batch_size].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(input_ids=x, labels=x).loss
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            lr = opt.param_groups[0]["lr"]
            scaler.step(opt)
            scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history.log({"loss": loss.item(), "lr": lr})  # .item() waits for the step: honest time
            history.step_ends.append(time.perf_counter())
    history.seconds = clock.seconds
    model.eval()
    return history


def train_with_trainer(
    model: GPT2LMHeadModel, blocks: torch.Tensor, cfg: TrainConfig,
    device: torch.device | str = "cpu", stop_after: int | None = None,
) -> History:
    """The same recipe through HF ``Trainer``: same optimizer, schedule, clipping and batch order;
    a callback fills the :class:`History` that :func:`train_manual` returns."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    device = torch.device(device)
    history = History()

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:  # logged (and synced) right after each step
                history.log({"loss": logs["loss"], "lr": logs.get("learning_rate", float("nan"))})
                history.step_ends.append(time.perf_counter())
            return control

    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"  # see new_gpt2
    dtype = amp_dtype(device)
    with tempfile.TemporaryDirectory() as out, Stopwatch() as clock:
        args = TrainingArguments(
            output_dir=out, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0],
            adam_beta2=cfg.betas[1], adam_epsilon=cfg.eps, max_grad_norm=cfg.grad_clip,
            lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps, optim="adamw_torch",
            train_sampling_strategy="sequential", dataloader_num_workers=0,
            dataloader_pin_memory=False, logging_steps=1, save_strategy="no", report_to="none",
            seed=cfg.seed, use_cpu=device.type == "cpu", bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16, disable_tqdm=True,
        )  # fmt: skip
        data = [{"input_ids": block, "labels": block} for block in blocks]
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Record()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    history.seconds = clock.seconds
    model.eval()
    return history


def tokens_per_second(tokens_per_step: int, *runs: History, skip: int = 2) -> float:
    """Tokens/s from the median interval between step ends (a whole step), pooled over ``runs``;
    each run's first ``skip`` steps warm up and are left out."""
    gaps = [b - a for run in runs for a, b in zip(run.step_ends[skip:], run.step_ends[skip + 1 :])]
    if not gaps:
        raise ValueError("need at least skip + 2 timed steps")
    return tokens_per_step / statistics.median(gaps)


def interleaved_throughput(
    model: GPT2LMHeadModel, blocks: torch.Tensor, cfg: TrainConfig, steps: int, rounds: int = 2,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], dict[str, list[History]]]:
    """Tokens/s of the manual loop and of ``Trainer`` over ``steps`` steps on copies of ``model``,
    alternating M T, T M, … so a drift of the machine's load favours neither; also the runs."""
    loops = {
        "manual": lambda m: train_manual(m, blocks, cfg, device, stop_after=steps, progress=False),
        "trainer": lambda m: train_with_trainer(m, blocks, cfg, device, stop_after=steps),
    }
    runs: dict[str, list[History]] = {"manual": [], "trainer": []}
    for r in range(rounds):
        for name in ("manual", "trainer") if r % 2 == 0 else ("trainer", "manual"):
            runs[name].append(loops[name](copy.deepcopy(model)))
    tokens = cfg.batch_size * blocks.shape[1]
    return {name: tokens_per_second(tokens, *done) for name, done in runs.items()}, runs


def flops_per_token(model: GPT2LMHeadModel) -> float:
    r"""Training FLOPs per token (PaLM, appendix B): $6N + 12\,L\,d\,T$, $N$ the matmul weights
    (the tied head counts once, the position table not)."""
    cfg = model.config
    n = count_parameters(model) - cfg.n_positions * cfg.n_embd
    return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * cfg.n_positions


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of known CUDA GPUs (for MFU); ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
             "T4": 65e12}
    return next((peak for key, peak in peaks.items() if key in name), None)


# --- The chapter's models: pretrained tiny GPT-2 (cached) or the hub's gpt2 -----------------------
def pretrained_tiny_gpt2(
    config: GPT2Config, cfg: TrainConfig, device: torch.device | str = "cpu"
) -> tuple[GPT2LMHeadModel, dict[str, object], bool]:
    """The tiny GPT-2 pretrained on the six Austen novels, cached in ``AIGC_CACHE``:
    ``(model, extras, hit)``, ``extras`` the pretraining ``"losses"`` and ``"seconds"``."""
    from .core import assets

    model = new_gpt2(config, cfg.seed)
    key = {
        "corpus": "austen-6-novels-eos",
        "n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head,
        "context": config.n_positions, "dropout": config.resid_pdrop, **asdict(cfg),
    }  # fmt: skip

    def train(m: GPT2LMHeadModel) -> dict[str, object]:
        novels = list(assets.austen_novels().values())
        ids = encode_documents(assets.tiktoken_gpt2(), novels, "<|endoftext|>")
        blocks = make_blocks(ids, config.n_positions, cfg.steps * cfg.batch_size, cfg.seed)
        history = train_manual(m, blocks, cfg, device, desc="pretrain on Austen")
        return {"losses": history["loss"], "seconds": history.seconds}

    model, extras, hit = cached_module("gpt2_tiny_austen", key, model, train)
    return model.to(device).eval(), extras, hit


def finetune_vs_scratch(
    base: GPT2LMHeadModel, train_ids: Tensor, held: Tensor, cfg: TrainConfig, context: int,
    stride: int, device: torch.device | str = "cpu", progress: bool = True,
) -> dict[str, float]:
    """One seed of the transfer experiment: fine-tune a copy of ``base``, and train the same
    architecture from random weights (seed ``cfg.seed + 1``), on the same ``cfg.steps`` batches of
    blocks (shuffled with ``cfg.seed``) with the same recipe; the held-out perplexity of both."""
    blocks = make_blocks(train_ids, context, cfg.steps * cfg.batch_size, cfg.seed)
    tuned = copy.deepcopy(base)
    train_manual(tuned, blocks, cfg, device, f"fine-tune, seed {cfg.seed}", progress=progress)
    scratch = new_gpt2(copy.deepcopy(base.config), cfg.seed + 1).to(device)
    train_manual(scratch, blocks, cfg, device, f"from scratch, seed {cfg.seed}", progress=progress)
    return {"after": perplexity(tuned, held, context, stride, device=device).ppl,
            "scratch": perplexity(scratch, held, context, stride, device=device).ppl}


def hub_available(allow: bool = True) -> bool:
    """True when the hub may be used: allowed, ``AIGC_OFFLINE`` unset, huggingface.co reachable."""
    return bool(allow) and not offline() and reachable("huggingface.co")


def load_base_model(
    hub_name: str | None, config: GPT2Config, cfg: TrainConfig, device: torch.device | str = "cpu"
) -> tuple[GPT2LMHeadModel, str, str, dict[str, object]]:
    """The model to fine-tune, ``(model, name, reason, extras)``: the hub's ``hub_name`` when
    reachable, else :func:`pretrained_tiny_gpt2`."""
    from .core import assets

    reason = "the profile uses the book's own tiny GPT-2 (the 124M gpt2 is too slow here)"
    if hub_name:
        try:
            hub = assets.hub_gpt2(hub_name)
            hub.loss_type = "ForCausalLM"  # see new_gpt2
            return hub.to(device), hub_name, "the hub is reachable and the profile asks for it", {}
        except assets.AssetMissing as missing:
            reason = f"the profile asks for {missing}, so the book pretrains its own"
    model, extras, hit = pretrained_tiny_gpt2(config, cfg, device)
    name = f"tiny GPT-2 ({config.n_layer} layers × {config.n_embd}, pretrained on Austen)"
    return model, name, reason, {**extras, "cache_hit": hit}
