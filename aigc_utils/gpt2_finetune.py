"""Chapter 06 — GPT-2 fine-tuning done right: tokenizer, perplexity, sampling and two training loops.

The seed (sections 5.1–5.3) "trains GPT-3" with ``GPT2LMHeadModel``, imports the removed
``transformers.AdamW``, feeds labels whose shape disagrees with the inputs, iterates over an undefined
``dataset`` and scores a language model with ``classification_report`` on argmax tokens. This module is
what the chapter uses instead:

* the real GPT-2 byte-level BPE, checked id for id against tiktoken (:func:`tokenizer_parity`);
* a tiny ``GPT2LMHeadModel(GPT2Config(...))`` with the real 50,257-token vocabulary, pretrained on the
  Austen novels and cached (:func:`pretrained_tiny_gpt2`), or the hub's ``gpt2`` when it is reachable
  (:func:`load_base_model`);
* a target domain with its own held-out split (:func:`target_corpus`);
* perplexity as a token-weighted mean NLL with a sliding window (:func:`perplexity`);
* the sampling filters (:func:`filter_next_token_logits`, parity-tested against transformers' processors);
* one training recipe run by a plain loop (:func:`train_manual`) and by HF ``Trainer``
  (:func:`train_with_trainer`), with tokens/s measured the same way for both (:func:`tokens_per_second`).
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checkpoints import cached_module
from .net import offline, reachable

if TYPE_CHECKING:
    import tiktoken
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

VOCAB_SIZE = 50257  # GPT-2's byte-level BPE: 256 bytes + 50,000 merges + <|endoftext|>
EOS_ID = 50256  # <|endoftext|>


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes stand for themselves; the other 68 (control bytes, space, ...) are moved to
    code points 256, 257, ... in byte order — which is why a leading space shows up as ``'Ġ'`` (256 + 32)
    and a newline as ``'Ċ'`` in ``vocab.json``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def token_bytes(tokenizer: GPT2TokenizerFast, token_id: int) -> bytes:
    """The raw bytes of one token (vocabulary string mapped back through :func:`byte_to_unicode`)."""
    inverse = _unicode_to_byte()
    return bytes(inverse[c] for c in tokenizer.convert_ids_to_tokens(token_id))


@lru_cache(maxsize=None)
def _unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


def bpe_pieces(tokenizer: GPT2TokenizerFast, text: str) -> list[tuple[int, str | bytes]]:
    """``(id, piece)`` for every token of ``text``: the piece as text, or as raw bytes when a token holds only
    part of a multi-byte UTF-8 character (byte-level BPE splits emoji and rare characters into bytes)."""
    pieces: list[tuple[int, str | bytes]] = []
    for i in tokenizer(text)["input_ids"]:
        raw = token_bytes(tokenizer, i)
        try:
            pieces.append((i, raw.decode("utf-8")))
        except UnicodeDecodeError:
            pieces.append((i, raw))
    return pieces


def tokenizer_parity(tokenizer: GPT2TokenizerFast, encoding: tiktoken.Encoding, texts: Iterable[str]) -> int:
    """1 when the transformers tokenizer and tiktoken's ``gpt2`` encoding give identical ids on every text, else 0."""
    for text in texts:
        if tokenizer(text)["input_ids"] != encoding.encode_ordinary(text):
            return 0
    return 1


def encode_documents(encoding: tiktoken.Encoding, documents: Sequence[str], separator: str = "\n") -> torch.Tensor:
    """One 1-D id stream: documents joined by ``separator`` (``"<|endoftext|>"`` inserts the EOS id 50256).

    Uses tiktoken (identical ids to the transformers tokenizer, :func:`tokenizer_parity`, and several
    times faster on megabytes of text).
    """
    if separator == "<|endoftext|>":
        chunks = encoding.encode_ordinary_batch(list(documents))
        ids: list[int] = []
        for chunk in chunks:
            ids.extend(chunk)
            ids.append(EOS_ID)
        return torch.tensor(ids[:-1], dtype=torch.long)
    return torch.tensor(encoding.encode_ordinary(separator.join(documents)), dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# Data: the pretraining corpus and the target domain
# --------------------------------------------------------------------------------------------------


def split_held_out(items: Sequence[str], block: int = 100, every: int = 50, offset: int = 7) -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split in contiguous blocks.

    Items are cut into blocks of ``block`` consecutive items; block ``b`` is held out when
    ``b % every == offset`` (2 % with the defaults, spread over the whole corpus). Whole blocks, so no
    held-out verse has its neighbour in the training set.
    """
    train: list[str] = []
    held: list[str] = []
    for start in range(0, len(items), block):
        (held if (start // block) % every == offset else train).extend(items[start : start + block])
    return train, held


@dataclass
class TargetCorpus:
    """A target domain as token streams: ``train`` and ``held_out`` (1-D LongTensors) plus a name."""

    name: str
    train: torch.Tensor
    held_out: torch.Tensor
    n_train_docs: int
    n_held_docs: int


def target_corpus(name: str = "kjv") -> TargetCorpus:
    """The fine-tuning domain with its held-out split: ``"kjv"`` (31,102 verses) or ``"fortunes"``."""
    from . import assets

    if name == "kjv":
        docs, sep = assets.kjv_verses(), "\n"
    elif name == "fortunes":
        docs, sep = assets.fortunes(), "<|endoftext|>"
    else:
        raise ValueError(f"unknown target corpus {name!r}: use 'kjv' or 'fortunes'")
    train, held = split_held_out(docs)
    enc = assets.tiktoken_gpt2()
    return TargetCorpus(name, encode_documents(enc, train, sep), encode_documents(enc, held, sep), len(train), len(held))


def austen_tokens() -> torch.Tensor:
    """The six Austen novels as one id stream, novels separated by ``<|endoftext|>``."""
    from . import assets

    return encode_documents(assets.tiktoken_gpt2(), list(assets.austen_novels().values()), "<|endoftext|>")


def make_blocks(ids: torch.Tensor, length: int, n_blocks: int | None = None, seed: int = 0) -> torch.Tensor:
    """Cut a 1-D stream into non-overlapping blocks of ``length`` tokens, shuffled with ``seed``.

    Returns ``(n_blocks, length)``. A causal LM is trained with ``labels = input_ids`` (same shape): the
    model shifts internally, position $t$ predicts token $t+1$.
    """
    usable = (len(ids) // length) * length
    blocks = ids[:usable].view(-1, length)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    blocks = blocks[order]
    if n_blocks is not None:
        if n_blocks > len(blocks):  # more steps than data: repeat epochs, each shuffled differently
            reps = math.ceil(n_blocks / len(blocks))
            extra = [make_blocks(ids, length, None, seed + r) for r in range(1, reps)]
            blocks = torch.cat([blocks, *extra])
        blocks = blocks[:n_blocks]
    return blocks.contiguous()


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def tiny_gpt2_config(n_layer: int, n_embd: int, n_head: int, context: int, dropout: float = 0.0) -> GPT2Config:
    """A small ``GPT2Config`` with the real 50,257-token vocabulary (BOS = EOS = 50256, as in GPT-2)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB_SIZE, n_positions=context, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
    )  # fmt: skip


def new_gpt2(config: GPT2Config, seed: int) -> GPT2LMHeadModel:
    """A freshly initialised ``GPT2LMHeadModel`` (decoder-only; tied input/output embeddings), seeded."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(model: GPT2LMHeadModel) -> float:
    r"""Training FLOPs per token (PaLM appendix B): $6N + 12\,L\,d\,T$.

    $N$ counts every weight that takes part in a matmul — with tied embeddings the 50,257 × d head is one
    of them (the position table is a lookup and is left out); the second term is attention over a
    context of $T$.
    """
    cfg = model.config
    n = count_parameters(model) - cfg.n_positions * cfg.n_embd
    return 6.0 * n + 12.0 * cfg.n_layer * cfg.n_embd * cfg.n_positions


# --------------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------------


@dataclass
class Perplexity:
    """Perplexity with what it was computed from: summed NLL (nats), scored tokens, argmax hits."""

    ppl: float
    nll_sum: float
    n_tokens: int
    n_argmax_correct: int = 0

    @property
    def mean_nll(self) -> float:
        """Token-weighted mean negative log-likelihood in nats."""
        return self.nll_sum / self.n_tokens

    @property
    def argmax_accuracy(self) -> float:
        """Share of scored tokens that the argmax predicts — the seed's measure, for contrast only."""
        return self.n_argmax_correct / self.n_tokens


def sliding_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    r"""``(begin, end, first_scored)`` windows over ``n`` tokens: every token from position 1 on is scored once.

    Window $k$ ends at $e_0 = \min(C, n)$, $e_k = \min(e_{k-1} + s, n)$, starts at
    $b_k = \max(0, e_k - C)$ and scores the $s$ new tokens $[e_{k-1}, e_k)$ — each of them predicted
    from at least $C - s$ tokens of context (except near the start of the text). A token can only be
    predicted from a token before it, so $s < C$ (with $s = C$ the first token of every window would
    have no context: that is the common off-by-one of non-overlapping chunking).
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
    progress: bool = False,
) -> Perplexity:
    r"""Perplexity of a causal LM on one token stream (Chapter 06).

    $$\mathrm{PPL} = \exp\Big(\frac{1}{N}\sum_{t=1}^{N} -\log p_\theta(x_t \mid x_{<t})\Big)$$

    — the exponential of the **token-weighted** mean NLL over all $N$ scored tokens (not a mean of
    per-batch means, not a mean of per-window perplexities). When the stream is longer than the
    model's context $C$, windows of $C$ tokens slide by ``stride`` $s < C$ (:func:`sliding_windows`,
    default $C/2$); each token is scored once, conditioned on at least $C - s$ preceding tokens.
    Larger strides are cheaper ($\approx n/s$ forward passes) and more pessimistic (less context);
    smaller strides approach the model's true perplexity.
    """
    model.eval()
    ids = ids.reshape(-1)
    stride = stride or max(1, context // 2)
    windows = sliding_windows(len(ids), context, stride)
    by_len: dict[int, list[tuple[int, int, int]]] = {}
    for w in windows:
        by_len.setdefault(w[1] - w[0], []).append(w)
    nll_sum, count, correct = 0.0, 0, 0
    bar = tqdm(total=len(windows), desc="perplexity", leave=False, disable=not progress)
    for length, group in by_len.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            x = torch.stack([ids[b:e] for b, e, _ in chunk]).to(device)
            logits = model(input_ids=x).logits.float()  # (B, L, V)
            logp = F.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
            target = x[:, 1:]
            token_nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, L-1)
            # target position j+1 (absolute b+j+1) is scored iff b+j+1 >= first_scored
            pos = torch.arange(1, length, device=x.device)
            firsts = torch.tensor([f - b for b, _, f in chunk], device=x.device)
            mask = pos.unsqueeze(0) >= firsts.unsqueeze(1)
            nll_sum += token_nll[mask].double().sum().item()
            count += int(mask.sum().item())
            correct += int(((logp.argmax(-1) == target) & mask).sum().item())
            bar.update(len(chunk))
    bar.close()
    return Perplexity(math.exp(nll_sum / count), nll_sum, count, correct)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def filter_next_token_logits(
    logits: torch.Tensor,
    previous: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    r"""The sampling filters of Chapter 06, applied to next-token logits ``(B, V)`` in transformers' order.

    1. Repetition penalty (CTRL): for every token already in ``previous``, $z \leftarrow z/\rho$ if
       $z > 0$ else $z\rho$ — repeated tokens become less likely.
    2. Temperature: $z \leftarrow z / \tau$; $\tau < 1$ sharpens, $\tau > 1$ flattens.
    3. Top-$k$: keep the $k$ largest logits, set the rest to $-\infty$.
    4. Top-$p$ (nucleus): keep the smallest set of most likely tokens whose probability sums to at least
       $p$ (always at least one token).

    Greedy decoding is $\arg\max z$ (none of these matter to it except the repetition penalty).
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
        cum = sorted_z.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_z.softmax(-1)) >= top_p  # mass before this token already reaches p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return z


SAMPLING_STRATEGIES: dict[str, dict[str, object]] = {
    "greedy": {"do_sample": False},
    "greedy + repetition penalty 1.3": {"do_sample": False, "repetition_penalty": 1.3},
    "temperature 0.7": {"do_sample": True, "temperature": 0.7, "top_k": 0},
    "top-k 40": {"do_sample": True, "top_k": 40},
    "top-p 0.9": {"do_sample": True, "top_p": 0.9, "top_k": 0},
}


def generate_text(
    model: GPT2LMHeadModel,
    tokenizer: GPT2TokenizerFast,
    prompt: str,
    max_new_tokens: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **kwargs: object,
) -> str:
    """The continuation of ``prompt`` under one decoding strategy (``model.generate`` with the KV cache)."""
    model.eval()
    x = tokenizer(prompt, return_tensors="pt").to(device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            **x, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id, **kwargs  # type: ignore[arg-type]
        )
    return tokenizer.decode(out[0, x["input_ids"].shape[1] :], skip_special_tokens=True)


def compare_samples(
    models: dict[str, GPT2LMHeadModel],
    tokenizer: GPT2TokenizerFast,
    prompt: str,
    max_new_tokens: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    strategies: dict[str, dict[str, object]] | None = None,
) -> dict[str, dict[str, str]]:
    """``{strategy: {model name: continuation}}`` — every strategy on every model, same seed."""
    strategies = strategies or SAMPLING_STRATEGIES
    return {
        name: {m: generate_text(model, tokenizer, prompt, max_new_tokens, seed, device, **kw) for m, model in models.items()}
        for name, kw in strategies.items()
    }


# --------------------------------------------------------------------------------------------------
# Training: one recipe, two loops
# --------------------------------------------------------------------------------------------------


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


@dataclass
class TrainLog:
    """What a run leaves behind: per-step loss, learning rate, wall time at each step end."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step_ends: list[float] = field(default_factory=list)
    tokens_per_step: int = 0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    r"""Learning-rate multiplier of step ``step``: linear warmup, then half a cosine to 0.

    $$\eta_t / \eta_{\max} = \begin{cases} t / W & t < W \\
      \tfrac12\big(1 + \cos(\pi\,\frac{t-W}{T-W})\big) & t \ge W \end{cases}$$

    Identical to ``transformers.get_cosine_schedule_with_warmup`` (a unit test checks it), which is
    what ``Trainer`` uses with ``lr_scheduler_type="cosine"``.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: decay the matrices (and the embedding), not biases or LayerNorm gains — as ``Trainer`` does."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bias" in name or "ln_" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA when supported, else fp16 on CUDA, else ``None`` (no mixed precision on CPU/MPS)."""
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
) -> TrainLog:
    r"""The plain loop: ``torch.optim.AdamW``, warmup + cosine, gradient clipping, AMP only on CUDA.

    Each step takes the next ``batch_size`` blocks in order (``blocks`` is already shuffled), computes
    the causal-LM loss $\frac{1}{B(T-1)}\sum_{b,t} -\log p_\theta(x_{b,t+1} \mid x_{b,\le t})$
    (``labels = input_ids``; the model shifts), backpropagates, clips $\lVert g\rVert_2 \le c$, steps
    the optimizer and then the schedule — the same order as ``Trainer``.
    """
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    log = TrainLog(tokens_per_step=cfg.batch_size * blocks.shape[1])
    n_steps = min(cfg.steps, stop_after or cfg.steps)
    bar = tqdm(range(n_steps), desc=desc)
    for step in bar:
        x = blocks[step * cfg.batch_size : (step + 1) * cfg.batch_size].to(device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()
        with autocast:
            loss = model(input_ids=x, labels=x).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        log.lrs.append(opt.param_groups[0]["lr"])
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        log.losses.append(loss.item())  # .item() syncs the device, so the timestamp below is honest
        log.step_ends.append(time.perf_counter())
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}")
    model.eval()
    return log


class _BlockDataset(torch.utils.data.Dataset):
    """``{"input_ids": block, "labels": block}`` items for ``Trainer``."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def train_with_trainer(
    model: GPT2LMHeadModel,
    blocks: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    stop_after: int | None = None,
) -> TrainLog:
    """The same recipe through HF ``Trainer`` (needs ``accelerate``): same optimizer, schedule, clipping, batches.

    ``train_sampling_strategy="sequential"`` makes it read the blocks in the order the manual loop does;
    ``optim="adamw_torch"`` is ``torch.optim.AdamW``; ``lr_scheduler_type="cosine"`` with ``warmup_steps``
    is :func:`warmup_cosine`. ``stop_after`` ends the run early (the schedule still spans ``cfg.steps``),
    so a short comparison follows exactly the first steps of the full run.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = torch.device(device)
    log = TrainLog(tokens_per_step=cfg.batch_size * blocks.shape[1])

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:  # logged right after each step (logging_steps=1): .item() has synced
                log.step_ends.append(time.perf_counter())
                log.losses.append(float(logs["loss"]))
                log.lrs.append(float(logs.get("learning_rate", float("nan"))))
            return control

    # transformers 5.24 finds a model's loss by its class name; "GPT2LMHeadModel" matches no entry, so
    # Trainer does not know the loss shifts labels and divides the summed NLL by B*T instead of B*(T-1)
    # tokens (the logged loss and the gradients come out (T-1)/T too small). Naming the loss fixes it.
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    dtype = amp_dtype(device)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0],
            adam_beta2=cfg.betas[1], adam_epsilon=cfg.eps, max_grad_norm=cfg.grad_clip,
            lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps, optim="adamw_torch",
            train_sampling_strategy="sequential", dataloader_num_workers=0, dataloader_pin_memory=False,
            logging_steps=1, save_strategy="no", report_to="none", seed=cfg.seed,
            use_cpu=device.type == "cpu", bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
            disable_tqdm=False,
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=_BlockDataset(blocks), callbacks=[Record()])
        trainer.train()
    model.eval()
    return log


def tokens_per_second(*logs: TrainLog, skip: int = 2, first: int | None = None) -> float:
    """Tokens per second from the median interval between consecutive step ends, pooled over ``logs``.

    Every loop is timed the same way — wall time from one step's end to the next, everything included
    (data, forward, backward, clipping, optimizer, schedule, logging) — over steps ``skip..first`` of
    each run (the first ``skip`` steps warm up). The median makes the number robust to a neighbour's
    burst on a shared machine; pooling runs made before and after another one cancels slow drifts.
    """
    gaps: list[float] = []
    for log in logs:
        ends = log.step_ends[: first if first is not None else len(log.step_ends)]
        gaps += [b - a for a, b in zip(ends[skip:], ends[skip + 1 :])]
    if not gaps:
        raise ValueError("need at least skip + 2 timed steps")
    return logs[0].tokens_per_step / statistics.median(gaps)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of known CUDA GPUs (for MFU); ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "T4": 65e12}.items():
        if key in name:
            return peak
    return None


# --------------------------------------------------------------------------------------------------
# The chapter's models: pretrained tiny GPT-2 (cached) or the hub's gpt2
# --------------------------------------------------------------------------------------------------


def pretrained_tiny_gpt2(
    config: GPT2Config, cfg: TrainConfig, device: torch.device | str = "cpu"
) -> tuple[GPT2LMHeadModel, dict[str, object], bool]:
    """The tiny GPT-2 pretrained on the Austen novels: loaded from ``AIGC_CACHE`` if cached, else trained.

    The cache key holds every setting that changes the weights (model sizes, the whole
    :class:`TrainConfig`, the corpus), so profiles never collide. Returns ``(model, extras, hit)`` with
    ``extras["losses"]`` the pretraining loss curve and ``extras["seconds"]`` its training time.
    """
    model = new_gpt2(config, cfg.seed)
    key = {
        "corpus": "austen-6-novels-eos",
        "n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head,
        "context": config.n_positions, "dropout": config.resid_pdrop, **asdict(cfg),
    }  # fmt: skip

    def train(m: GPT2LMHeadModel) -> dict[str, object]:
        blocks = make_blocks(austen_tokens(), config.n_positions, cfg.steps * cfg.batch_size, cfg.seed)
        t0 = time.perf_counter()
        log = train_manual(m, blocks, cfg, device, desc="pretrain on Austen")
        return {"losses": log.losses, "seconds": time.perf_counter() - t0}

    model, extras, hit = cached_module("gpt2_tiny_austen", key, model, train)
    return model.to(device).eval(), extras, hit


def hub_available(allow: bool = True) -> bool:
    """True when the hub's ``gpt2`` may be used: allowed, ``AIGC_OFFLINE`` unset and huggingface.co reachable."""
    return bool(allow) and not offline() and reachable("huggingface.co")


def load_base_model(
    hub_name: str | None,
    config: GPT2Config,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
) -> tuple[GPT2LMHeadModel, str, str, dict[str, object]]:
    """The model to fine-tune: ``(model, name, reason, extras)``.

    ``GPT2LMHeadModel.from_pretrained(hub_name)`` when ``hub_name`` is given and the hub is reachable
    (never with ``AIGC_OFFLINE=1``); otherwise the book's tiny GPT-2 pretrained on Austen
    (:func:`pretrained_tiny_gpt2`). No GPT-style weights exist in any offline registry (ASSETS.md).
    """
    if hub_name and hub_available():
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(hub_name).to(device).eval()
        return model, hub_name, f"the hub is reachable and this profile asks for {hub_name!r}", {}
    if hub_name:
        why = "AIGC_OFFLINE=1" if offline() else "huggingface.co is not reachable"
        reason = f"this profile asks for {hub_name!r} but {why}; no GPT-2 weights exist offline, so the book pretrains its own"
    else:
        reason = "this profile uses the book's own tiny GPT-2 (the real 124M gpt2 is too slow to fine-tune here)"
    model, extras, hit = pretrained_tiny_gpt2(config, cfg, device)
    extras = {**extras, "cache_hit": hit}
    name = f"tiny GPT-2 ({config.n_layer} layers × {config.n_embd}, pretrained on Austen)"
    return model, name, reason, extras


def fresh_copy(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """An independent deep copy (same weights), so several runs start from identical parameters."""
    return copy.deepcopy(model)


def scratch_like(model: GPT2LMHeadModel, seed: int, device: torch.device | str = "cpu") -> GPT2LMHeadModel:
    """An identical architecture with fresh random weights — the 'no pretraining' baseline."""
    return new_gpt2(copy.deepcopy(model.config), seed).to(device)


def run_timed(fn: Callable[[], TrainLog]) -> tuple[TrainLog, float]:
    """``(log, seconds)`` of a training call."""
    t0 = time.perf_counter()
    log = fn()
    return log, time.perf_counter() - t0
