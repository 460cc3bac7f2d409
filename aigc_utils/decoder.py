r"""Chapter 05: a decoder-only Transformer (GPT) to be read, named like HF's ``GPT2LMHeadModel``.

For token ids $x_1 \dots x_T$:

$$
\begin{aligned}
h^{(0)}_t &= W_{\text{te}}[x_t] + W_{\text{pe}}[t], \\
h' &= h^{(\ell-1)} + \operatorname{Attn}(\operatorname{LN}_1(h^{(\ell-1)})), \qquad
h^{(\ell)} = h' + \operatorname{MLP}(\operatorname{LN}_2(h')), \\
p(x_{t+1} \mid x_{\le t})
  &= \operatorname{softmax}\big(\operatorname{LN}_f(h^{(L)}_t)\, W_{\text{te}}^\top\big).
\end{aligned}
$$
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .core.train import History, Stopwatch, adamw, fit, warmup_cosine_scheduler

# A layer's cache: keys and values of all positions so far, each (B, n_head, T_past, head_dim).
LayerCache = tuple[torch.Tensor, torch.Tensor]

# The chapter's sizes per profile. The cpu recipe is nanoGPT's for a laptop (Karpathy 2022): a small
# model, short windows, many short steps.
SIZES = {
    "smoke": dict(
        n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.0,  # the model
        batch_size=8, steps=60, lr=2e-3, warmup=10, eval_every=30,  # training
        train_chars=300_000, val_chars=5_000, eval_chars=2_000,  # text: trained on, held out, per eval
        n_samples=2, timing_block=256, timing_lengths=(50, 100, 200), timing_repeats=2,  # generation
    ),
    "cpu": dict(
        n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
        batch_size=12, steps=800, lr=2e-3, warmup=50, eval_every=200,
        train_chars=None, val_chars=60_000, eval_chars=15_000,  # None: all five novels
        n_samples=6, timing_block=512, timing_lengths=(50, 100, 200, 400), timing_repeats=3,
    ),
    "gpu": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2,
        batch_size=64, steps=2000, lr=1e-3, warmup=100, eval_every=250,
        train_chars=None, val_chars=200_000, eval_chars=50_000,
        n_samples=8, timing_block=1024, timing_lengths=(100, 200, 400, 800), timing_repeats=3,
    ),
}


@dataclass
class DecoderConfig:
    """Sizes of a :class:`Decoder` (GPT-2 small is 50257 / 1024 / 12 / 12 / 768)."""

    vocab_size: int = 256
    block_size: int = 256  # the longest context: the number of learned positions
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        """$d_k = d_\\text{model} / n_\\text{head}$."""
        return self.n_embd // self.n_head


@dataclass
class DecoderOutput:
    """What :meth:`Decoder.forward` returns."""

    logits: torch.Tensor  # (B, T, vocab) — or (B, 1, vocab) with last_only
    loss: torch.Tensor | None = None  # mean next-token cross-entropy (nats) when targets are given
    cache: list[LayerCache] | None = None  # per layer (K, V), when use_cache
    attentions: list[torch.Tensor] = field(default_factory=list)  # per layer (B, n_head, T, T_all)


class CausalSelfAttention(nn.Module):
    r"""Masked multi-head self-attention.

    Each head $i$ projects $X \in \mathbb{R}^{T\times d}$ to $Q_i = XW^Q_i,\ K_i = XW^K_i,\
    V_i = XW^V_i$ (one fused ``c_attn`` layer makes all three for all heads), computes
    $\operatorname{head}_i = \operatorname{softmax}(Q_i K_i^\top / \sqrt{d_k} + M) V_i$ with
    $M_{ts} = -\infty$ for $s > t$ (else 0), concatenates the heads and mixes them with ``c_proj``.
    With a cache the new queries also attend to the cached keys/values of all earlier positions; a
    query at absolute position $t$ still sees only positions $\le t$.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}")
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # W^Q, W^K, W^V of all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # W^O
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, return_attention: bool = False
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        """``x`` (B, T, d) → (output (B, T, d), (K, V) including ``past``, weights or None)."""
        B, T, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        # (B, T, d) -> (B, n_head, T, head_dim): every head attends independently
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if past is not None:  # the KV cache: earlier positions' keys and values, computed once
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        T_total = k.size(2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, n_head, T, T_total)
        # query i sits at absolute position (T_total - T + i) and may see keys 0 .. that position
        q_pos = torch.arange(T_total - T, T_total, device=x.device).unsqueeze(1)
        k_pos = torch.arange(T_total, device=x.device).unsqueeze(0)
        scores = scores.masked_fill(k_pos > q_pos, float("-inf"))  # M: -inf above the diagonal
        weights = F.softmax(scores, dim=-1)
        y = self.attn_dropout(weights) @ v  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).contiguous().view(B, T, d)  # concatenate the heads
        return self.resid_dropout(self.c_proj(y)), (k, v), (weights if return_attention else None)


class MLP(nn.Module):
    r"""Position-wise feed-forward network $W_2\,\operatorname{GELU}(W_1 x + b_1) + b_2$, hidden
    size $4d$, GELU in GPT-2's tanh approximation (HF's ``gelu_new``)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    r"""A pre-LayerNorm residual block: $h' = h + \operatorname{Attn}(\operatorname{LN}_1 h)$,
    $h'' = h' + \operatorname{MLP}(\operatorname{LN}_2 h')$."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None, return_attention: bool = False
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        a, present, weights = self.attn(self.ln_1(x), past, return_attention)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present, weights


class Decoder(nn.Module):
    """A GPT: embeddings, ``n_layer`` :class:`Block` s, a final LayerNorm and a tied output head."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding W_te
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding W_pe
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix reads tokens in and scores out
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 L), so the stream's variance stays put
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None,
        cache: list[LayerCache] | None = None, use_cache: bool = False, last_only: bool = False,
        return_attention: bool = False,
    ) -> DecoderOutput:
        r"""``idx`` (B, T) token ids → :class:`DecoderOutput`.

        ``targets`` (B, T): the next tokens; the loss is the mean $-\log p(x_{t+1}\mid x_{\le t})$.
        ``cache``: the (K, V) of the positions before ``idx`` (positions continue after them).
        ``last_only``: score only the last position (all that generation needs).
        """
        B, T = idx.shape
        start = 0 if cache is None else cache[0][0].size(2)
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} tokens exceed block_size={self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, d) + (T, d) broadcast
        presents: list[LayerCache] = []
        attentions: list[torch.Tensor] = []
        for i, block in enumerate(self.h):
            x, present, weights = block(x, None if cache is None else cache[i], return_attention)
            presents.append(present)
            if weights is not None:
                attentions.append(weights)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return DecoderOutput(logits, loss, presents if use_cache else None, attentions)

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
        top_k: int | None = None, greedy: bool = False, use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to ``idx`` (B, T), one at a time.

        Without a cache every step runs the whole sequence again (its last ``block_size`` tokens, so
        it can run past the context). With one, the prompt runs once (prefill) and each later step
        feeds only the newest token, re-using the cached keys and values.
        """
        if use_cache and idx.size(1) + max_new_tokens > self.config.block_size:
            raise ValueError("with the cache, prompt + max_new_tokens must fit in block_size")
        cache: list[LayerCache] | None = None
        step_input = idx
        for _ in range(max_new_tokens):
            if use_cache:  # one cached step: only the new tokens go in, their K, V are appended
                out = self(step_input, cache=cache, use_cache=True, last_only=True)
                cache = out.cache
            else:
                out = self(idx[:, -self.config.block_size :], last_only=True)  # the last block
            logits = out.logits[:, -1, :]
            if greedy:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
            step_input = nxt
        return idx

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Attention weights for one sequence ``idx`` (T,) or (1, T): (n_layer, n_head, T, T)."""
        was_training = self.training
        self.eval()
        out = self(idx.view(1, -1), return_attention=True)
        self.train(was_training)
        return torch.stack([a[0] for a in out.attentions])


def from_hf_gpt2(hf_model) -> Decoder:
    """A new :class:`Decoder` (eval mode) with the weights of a standard HF ``GPT2LMHeadModel``; the
    names match, but HF's ``Conv1D`` weights, stored (in, out), are transposed for ``nn.Linear``."""
    c = hf_model.config
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"unsupported activation {c.activation_function!r}")
    if getattr(c, "n_inner", None) not in (None, 4 * c.n_embd):
        raise ValueError("only n_inner = 4 * n_embd is supported")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False) or not c.scale_attn_weights:
        raise ValueError("only the standard 1/sqrt(d_k) attention scaling is supported")
    model = Decoder(DecoderConfig(c.vocab_size, c.n_positions, c.n_layer, c.n_head, c.n_embd,
                                  dropout=0.0, layer_norm_eps=c.layer_norm_epsilon))
    source = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name not in source:
                raise KeyError(f"{name} not in the GPT-2 state dict")
            value = source[name].t() if name.endswith(conv1d) else source[name]
            if value.shape != tensor.shape:
                raise ValueError(f"{name}: GPT-2 {tuple(value.shape)}, ours {tuple(tensor.shape)}")
            tensor.copy_(value)
    return model.eval()


@dataclass
class CharTokenizer:
    """One id per character; characters unseen when it was built map to ``unk`` (id 0)."""

    chars: list[str]
    unk: str = "□"

    @classmethod
    def from_texts(cls, texts: Iterable[str], unk: str = "□") -> "CharTokenizer":
        """Build the vocabulary from training text only (held-out characters become ``unk``)."""
        seen = sorted(set("".join(texts)) - {unk})
        return cls([unk, *seen], unk)

    def __post_init__(self) -> None:
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, 0) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def random_batch(data: torch.Tensor, batch_size: int, block_size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of a 1-D id stream: inputs (B, T) and next tokens (B, T)."""
    starts = torch.randint(0, data.numel() - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[s : s + block_size + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def token_nll(model: Decoder, data: torch.Tensor, block_size: int, batch_size: int = 16) -> torch.Tensor:
    """Next-token NLL (nats) of every token of a 1-D stream after the first, ``(len(data) - 1,)``: the
    stream is cut into non-overlapping windows, each token predicted in the context of its window."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_full = (data.numel() - 1) // block_size
    x_all = data[: n_full * block_size].view(n_full, block_size)
    y_all = data[1 : n_full * block_size + 1].view(n_full, block_size)
    windows = [(x_all[i : i + batch_size], y_all[i : i + batch_size])
               for i in range(0, n_full, batch_size)]
    rest = data[n_full * block_size :]
    if rest.numel() > 1:  # the short tail window
        windows.append((rest[:-1].unsqueeze(0), rest[1:].unsqueeze(0)))
    nll = []
    for x, y in windows:
        logits = model(x.to(device)).logits
        nll.append(F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), reduction="none"))
    model.train(was_training)
    return torch.cat(nll).cpu()


def stream_loss(model: Decoder, data: torch.Tensor, block_size: int, batch_size: int = 16) -> float:
    """Token-weighted mean next-token NLL (nats) over a 1-D stream (the mean of :func:`token_nll`)."""
    return token_nll(model, data, block_size, batch_size).double().mean().item()


def _gram_counts(ids: torch.Tensor, n: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every n-gram of ``ids`` as one integer (base ``V``): the sorted distinct ones and their counts."""
    keys = sum(ids[i : ids.numel() - n + 1 + i] * V ** (n - 1 - i) for i in range(n))
    return torch.unique(keys, return_counts=True)


def _count_of(keys: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    grams, counts = table
    i = torch.searchsorted(grams, keys).clamp(max=grams.numel() - 1)
    return torch.where(grams[i] == keys, counts[i], 0).double()


def _unigram(train: torch.Tensor, V: int, alpha: float) -> torch.Tensor:
    r"""The add-$\alpha$ unigram model of ``train``: $p_1(c) = \frac{n(c)+\alpha}{N + \alpha V}$."""
    return (torch.bincount(train, minlength=V).double() + alpha) / (train.numel() + alpha * V)


def ngram_nll(train: Sequence[int] | torch.Tensor, val: Sequence[int] | torch.Tensor,
              vocab_size: int, order: int, alpha: float = 1.0) -> torch.Tensor:
    r"""Held-out NLL (nats) of each character ``val[1:]`` under an add-$\alpha$ n-gram model of
    ``train`` that backs off towards the next shorter one:
    $p_1(c) = \frac{n(c)+\alpha}{N + \alpha V}$ and, for a context $b$ of $n-1$ characters,
    $p_n(c \mid b) = \frac{n(b,c)+\alpha V\,p_{n-1}(c \mid b')}{n(b) + \alpha V}$
    ($b'$: $b$ without its first character). Positions with fewer than $n-1$ characters before them
    use the longest context."""
    train, val = torch.as_tensor(train, dtype=torch.long), torch.as_tensor(val, dtype=torch.long)
    V = vocab_size
    unigram = _unigram(train, V, alpha)
    p = unigram[val[1:]]  # p[t - 1]: the probability of val[t]
    for n in range(2, order + 1):
        grams, contexts = _gram_counts(train, n, V), _gram_counts(train[:-1], n - 1, V)
        t = torch.arange(n - 1, val.numel())  # targets with n - 1 characters before them
        ctx = sum(val[t - n + 1 + i] * V ** (n - 2 - i) for i in range(n - 1))
        p[t - 1] = (_count_of(ctx * V + val[t], grams) + alpha * V * p[t - 1]) / (
            _count_of(ctx, contexts) + alpha * V)
    return -p.log()


def ngram_baselines(train: Sequence[int] | torch.Tensor, val: Sequence[int] | torch.Tensor,
                    vocab_size: int, alpha: float = 1.0, order: int = 2) -> dict[str, float]:
    """Mean held-out NLL (nats/char) of the add-alpha unigram, bigram, … models up to ``order``."""
    names = ["unigram", "bigram", "trigram", "4-gram", "5-gram"]
    return {names[n - 1]: ngram_nll(train, val, vocab_size, n, alpha).mean().item()
            for n in range(1, order + 1)}


def bigram_sample(train: torch.Tensor, vocab_size: int, start: int, n: int, alpha: float = 1.0,
                  generator: torch.Generator | None = None) -> list[int]:
    """``n`` characters drawn one at a time from the add-alpha bigram model of ``train``."""
    V = vocab_size
    unigram = _unigram(train, V, alpha)
    pairs = torch.bincount(train[:-1] * V + train[1:], minlength=V * V).double().view(V, V)
    table = (pairs + alpha * V * unigram) / (pairs.sum(1, keepdim=True) + alpha * V)
    out = [start]
    for _ in range(n):
        out.append(int(torch.multinomial(table[out[-1]], 1, generator=generator)))
    return out


def train_char_lm(model: Decoder, train_data: torch.Tensor, val_data: torch.Tensor, steps: int,
                  batch_size: int, lr: float = 3e-3, weight_decay: float = 0.1, warmup: int = 20,
                  eval_every: int = 50, seed: int = 0, progress: bool = True) -> History:
    """Train on seeded random windows: AdamW (matrices decay), warm-up then cosine decay to 10 % of
    ``lr``, gradient norm <= 1; :func:`stream_loss` every ``eval_every`` steps (``h["val"]``)."""
    device = next(model.parameters()).device
    block = model.config.block_size
    opt = adamw(model, lr, weight_decay, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed)

    def step(i: int) -> torch.Tensor:
        x, y = random_batch(train_data, batch_size, block, gen)
        return model(x.to(device), y.to(device)).loss

    model.train()
    schedule = warmup_cosine_scheduler(opt, warmup, steps, floor=0.1)
    history = fit(step, steps, opt, scheduler=schedule, clip=1.0, eval_every=eval_every,
                  evaluate=lambda: {"val": stream_loss(model, val_data, block)},
                  desc="training", progress=progress)
    model.eval()
    return history


def time_generation(model: Decoder, prompt: torch.Tensor, max_new_tokens: int, repeats: int = 3,
                    seed: int = 0) -> dict[str, float | bool]:
    """Time :meth:`Decoder.generate` without and with the cache (same prompt, sampler and seed):
    after a warm-up the runs alternate, each the best of ``repeats``; and whether they agree."""
    model.eval()
    outputs: dict[bool, torch.Tensor] = {}
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        for use_cache in (False, True):  # warm-up
            model.generate(prompt, 8, greedy=True, use_cache=use_cache)
        for _ in range(repeats):
            for use_cache in (False, True):
                gen = torch.Generator(device=prompt.device).manual_seed(seed)
                with Stopwatch() as sw:
                    outputs[use_cache] = model.generate(prompt, max_new_tokens, use_cache=use_cache,
                                                        generator=gen)
                times[use_cache].append(sw.seconds)
    plain, cached = min(times[False]), min(times[True])
    return {"seconds_no_cache": plain, "seconds_cache": cached, "speedup": plain / cached,
            "outputs_equal": torch.equal(outputs[False], outputs[True])}
