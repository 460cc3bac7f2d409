"""Chapter 09 — the seed's code blocks and formulas, as printed and as fixed.

Each corrected version here is what ``notebooks/09_seed_errata.ipynb`` runs and checks; the notebook shows
this source beside the seed's failure, so the text and the library cannot drift apart. The
:class:`ErrataLedger` counts which seed blocks were treated and whose fix passed its check.

The chapters that teach each fix at full size: ``02_gan_math.ipynb`` (value function, gradients),
``03_image_gan.ipynb`` (a GAN on images), ``05_transformer_decoder.ipynb`` (a decoder-only Transformer),
``06_gpt2_finetuning.ipynb`` (GPT-2 data, training and evaluation).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------
# The catalogue of seed blocks and the ledger
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedBlock:
    """One code block or formula of the seed: where it is, what it is, which chapter teaches the fix."""

    key: str
    section: str
    kind: str  # "formula" | "code" | "shell"
    title: str
    chapter: str


SEED_BLOCKS: tuple[SeedBlock, ...] = (
    SeedBlock("value_function", "4.1.3", "formula", "GAN value function", "02_gan_math.ipynb"),
    SeedBlock("generator_gradient", "4.2.1", "formula", "generator gradient", "02_gan_math.ipynb"),
    SeedBlock("discriminator_gradient", "4.2.2", "formula", "discriminator gradient", "02_gan_math.ipynb"),
    SeedBlock("attention_formula", "4.3.1", "formula", "H = Attention(X, H₋₁)", "05_transformer_decoder.ipynb"),
    SeedBlock("transformer_decoder", "4.3.1", "code", "TransformerDecoder example", "05_transformer_decoder.ipynb"),
    SeedBlock("gan_training", "4.3.2", "code", "GAN training example", "03_image_gan.ipynb"),
    SeedBlock("environment", "5.1", "shell", "environment setup (conda, pip)", "06_gpt2_finetuning.ipynb"),
    SeedBlock("gpt2_snippet", "5.2", "code", "GPT-2 data/model snippet", "06_gpt2_finetuning.ipynb"),
    SeedBlock("train_evaluate", "5.2", "code", "train / evaluate functions", "06_gpt2_finetuning.ipynb"),
    SeedBlock("training_driver", "5.2", "code", "training driver", "06_gpt2_finetuning.ipynb"),
)


@dataclass
class ErrataLedger:
    """Which seed blocks a run treated (``covered``) and whose corrected version passed its check."""

    blocks: tuple[SeedBlock, ...] = SEED_BLOCKS
    outcomes: dict[str, bool] = field(default_factory=dict)

    def check(self, key: str, **conditions: bool) -> None:
        """Record the corrected version of block ``key``; raise naming every condition that failed."""
        known = {b.key for b in self.blocks}
        if key not in known:
            raise KeyError(f"unknown seed block {key!r}; known: {', '.join(sorted(known))}")
        failed = [name for name, ok in conditions.items() if not bool(ok)]
        self.outcomes[key] = not failed and bool(conditions)
        if failed or not conditions:
            raise AssertionError(f"fix for seed block {key!r} failed its check: {', '.join(failed) or 'no conditions'}")
        print(f"[pass] {key}: " + ", ".join(conditions))

    def metrics(self) -> dict[str, int]:
        """``seed_blocks_listed``, ``seed_blocks_covered`` (treated) and ``fixed_blocks_passing``."""
        return {
            "seed_blocks_listed": len(self.blocks),
            "seed_blocks_covered": len(self.outcomes),
            "fixed_blocks_passing": sum(self.outcomes.values()),
        }

    def table_markdown(self) -> str:
        """A Markdown table: section, block, kind, fix checked, chapter that teaches it."""
        rows = ["| § | seed block | kind | corrected version | taught in |", "|---|---|---|---|---|"]
        for b in self.blocks:
            state = {True: "passed", False: "FAILED"}.get(self.outcomes.get(b.key), "not run")
            rows.append(f"| {b.section} | {b.title} | {b.kind} | {state} | [{b.chapter}]({b.chapter}) |")
        return "\n".join(rows)


def show_source(*objects: Callable | type) -> None:
    """Display the source of the corrected versions as a code block (Markdown in Jupyter, text elsewhere)."""
    text = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{text}\n```"))
    except ImportError:  # pragma: no cover - outside IPython
        print(text)


# --------------------------------------------------------------------------------------------------
# 4.1.3, 4.2.1, 4.2.2 — the GAN objective and its gradients (taught in 02_gan_math.ipynb)
# --------------------------------------------------------------------------------------------------


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""The GAN value function from discriminator logits (Chapter 09, fix of seed 4.1.3).

    $$\min_G \max_D V(D, G) = \mathbb{E}_{x \sim p_\text{data}}[\log D(x)]
        + \mathbb{E}_{z \sim p_z}[\log(1 - D(G(z)))],\qquad D = \sigma(\text{logit})$$

    computed as ``logsigmoid(l_real) + logsigmoid(-l_fake)``, which stays finite where
    ``log(sigmoid(.))`` of a probability over- or underflows.
    """
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    r"""$D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_g(x))$ for a fixed generator (Goodfellow et al. 2014, Prop. 1)."""
    return p_data / (p_data + p_g)


def discrete_value(d: torch.Tensor, p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    r"""$V(D, G)$ on a finite support: $\sum_x p_\text{data}(x)\log D(x) + p_g(x)\log(1 - D(x))$."""
    return (p_data * torch.log(d)).sum() + (p_g * torch.log1p(-d)).sum()


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""$\mathrm{JSD}(p\|q) = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)$, $m = (p+q)/2$ (nats)."""
    m = (p + q) / 2
    kl = lambda a, b: (a * (torch.log(a) - torch.log(b))).sum()  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""What an optimizer *minimises* for $D$ (fix of seed 4.2.2): $L_D = -V(D, G)$.

    $$L_D = -\mathbb{E}_x[\log D(x)] - \mathbb{E}_z[\log(1 - D(G(z)))]
          = \text{BCE}(l_\text{real}, 1) + \text{BCE}(l_\text{fake}, 0)$$

    Descending $L_D$ is ascending $V$ — the seed's gradient, with the sign an optimizer needs.
    """
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(fake_logits: torch.Tensor, non_saturating: bool = True) -> torch.Tensor:
    r"""What an optimizer minimises for $G$ (fix of seed 4.2.1). Only the fake term depends on $G$.

    Saturating (the minimax game): $L_G = \mathbb{E}_z[\log(1 - D(G(z)))]$, whose gradient
    $\partial L_G / \partial l = -\sigma(l)$ vanishes when $D$ rejects the fakes ($l \to -\infty$).
    Non-saturating (Goodfellow et al. 2014, §3): $L_G = -\mathbb{E}_z[\log D(G(z))]$, gradient
    $-(1 - \sigma(l)) \to -1$ there.
    """
    if non_saturating:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return F.logsigmoid(-fake_logits).mean()


def mlp(sizes: Iterable[int], act: type[nn.Module] = nn.LeakyReLU) -> nn.Sequential:
    """A plain MLP ``sizes[0] → … → sizes[-1]`` with ``act`` between layers and none at the end."""
    sizes = list(sizes)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def train_toy_gan(
    sample_real: Callable[[int], torch.Tensor],
    generator: nn.Module,
    discriminator: nn.Module,
    z_dim: int,
    steps: int,
    batch: int = 128,
    lr: float = 2e-3,
    generator_: torch.Generator | None = None,
) -> dict[str, list[float]]:
    r"""A correct GAN training loop (fix of seed 4.3.2): fresh noise each step, each optimizer zeroes its own
    gradients, the fakes are detached for $D$'s step, losses from logits.

    Per step: $D \leftarrow D - \eta\nabla_D L_D$ (``discriminator_loss``), then
    $G \leftarrow G - \eta\nabla_G L_G$ (non-saturating ``generator_loss``). Returns the loss history.
    """
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": []}
    for _ in range(steps):
        real = sample_real(batch)
        fake = generator(torch.randn(batch, z_dim, generator=generator_))
        d_loss = discriminator_loss(discriminator(real), discriminator(fake.detach()))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()

        g_loss = generator_loss(discriminator(fake))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        history["d_loss"].append(d_loss.item())
        history["g_loss"].append(g_loss.item())
    return history


# --------------------------------------------------------------------------------------------------
# 4.3.1 — causal attention and a decoder-only Transformer (taught in 05_transformer_decoder.ipynb)
# --------------------------------------------------------------------------------------------------


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r"""Masked (causal) scaled dot-product attention (fix of the seed's $H = \mathrm{Attention}(X, H_{-1})$).

    $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)V,\qquad
      M_{ij} = \begin{cases}0 & j \le i\\ -\infty & j > i\end{cases}$$

    Position $i$ sees positions $\le i$ of the *same* sequence; there is no recurrence on a previous output.
    Shapes ``(..., T, d)``; the library oracle is ``F.scaled_dot_product_attention(..., is_causal=True)``.
    """
    t = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v


class TinyDecoderLM(nn.Module):
    r"""A decoder-only (GPT-style) language model (fix of the seed's 4.3.1 ``TransformerDecoder``).

    token ids ``(B, T)`` → embeddings + learned positions → ``n_layers`` pre-norm blocks of causal
    self-attention and an MLP → LayerNorm → logits ``(B, T, vocab_size)``. ``nn.TransformerEncoderLayer``
    *is* a decoder-only block once it gets a causal mask: GPT has no encoder and no cross-attention.
    """

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, d_ff: int, n_layers: int,
                 max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_len, d_model)
        block = nn.TransformerEncoderLayer(
            d_model=d_model, nhead=n_heads, dim_feedforward=d_ff, dropout=dropout,
            batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, num_layers=n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.size(1)
        h = self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))


# --------------------------------------------------------------------------------------------------
# 5.2 — GPT-2 causal language modelling: loss, training, evaluation (taught in 06_gpt2_finetuning.ipynb)
# --------------------------------------------------------------------------------------------------


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Next-token cross-entropy, the loss ``GPT2LMHeadModel(..., labels=input_ids)`` computes.

    $$\mathcal{L} = -\frac{1}{N}\sum_{t}\log p_\theta(x_{t+1} \mid x_{\le t})$$

    The labels are the inputs themselves; the model shifts them by one. Positions labelled ``-100``
    (padding) are ignored.
    """
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def lm_blocks(ids: torch.Tensor, block: int) -> torch.Tensor:
    """Cut a 1-D stream of token ids into non-overlapping rows of ``block`` tokens (the tail is dropped)."""
    n = ids.numel() // block
    return ids[: n * block].view(n, block)


def train_lm_epoch(model: nn.Module, loader: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer,
                   device: torch.device | str = "cpu", max_steps: int | None = None) -> float:
    """One pass of causal-LM training (fix of the seed's ``train``); returns the mean training loss.

    Each batch is a ``(B, T)`` tensor of token ids; ``labels=ids`` (the model shifts them).
    """
    model.train()
    total, steps = 0.0, 0
    for ids in loader:
        ids = ids.to(device)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
        if max_steps is not None and steps >= max_steps:
            break
    return total / max(steps, 1)


@torch.no_grad()
def evaluate_lm(model: nn.Module, loader: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> dict[str, float]:
    r"""Held-out causal-LM metrics (fix of the seed's ``evaluate`` + ``classification_report``).

    Token-weighted mean next-token NLL, perplexity $\exp(\text{NLL})$, and next-token accuracy
    (argmax of ``outputs.logits`` at $t$ against the token at $t+1$).
    """
    model.eval()
    nll, correct, count = 0.0, 0, 0
    for ids in loader:
        ids = ids.to(device)
        logits = model(input_ids=ids).logits[:, :-1]
        target = ids[:, 1:]
        nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
        count += target.numel()
    mean = nll / count
    return {"loss": mean, "perplexity": math.exp(mean), "next_token_accuracy": correct / count}


# --------------------------------------------------------------------------------------------------
# 5.1 — the environment (the book's own: environment.yml / `make setup`)
# --------------------------------------------------------------------------------------------------


def requires_python(dist: str) -> str:
    """The ``Requires-Python`` specifier an installed distribution declares (``""`` when none)."""
    return importlib.metadata.metadata(dist).get("Requires-Python") or ""


def python_supported(dist: str, python_version: str) -> bool:
    """Whether ``dist`` (as installed here) declares support for ``python_version`` (e.g. ``"3.8"``)."""
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(requires_python(dist)).contains(python_version, prereleases=True)
