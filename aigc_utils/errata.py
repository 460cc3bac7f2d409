r"""Chapter 09 — the source text's code blocks and formulas, as printed and as fixed.

The fixes are the book's own functions: the GAN objective and step of :mod:`aigc_utils.core.gan`,
the decoder of chapter 05, chapter 06's GPT-2 data and perplexity, and :func:`core.train.fit`.
This module holds only what no chapter teaches: the catalogue of the source's blocks and the
:class:`ErrataLedger` that records whether each fix passed its check, the value function on a finite
support (the closed form $V(D^*, G) = -\log 4 + 2\,\mathrm{JSD}$ checked exactly), the causal-LM
loss written out, and the check of an install recipe against what packages declare.
"""

from __future__ import annotations

import html
import importlib.metadata
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

# Sizes per profile; ``setup_chapter`` picks one. gan_steps: the toy GAN of 4.3.2; critic_steps: the linear
# discriminator of 4.1.3/4.2.2; decoder_steps: the tiny decoder of 4.3.1; lm_*: the tiny GPT-2 of 5.2
# (width, context, batch, epochs, steps per epoch, evaluation batch); train_chars, heldout_chars: its text.
SIZES = {
    "smoke": {"gan_steps": 200, "critic_steps": 60, "decoder_steps": 40, "lm_width": 32,
              "lm_block": 32, "lm_batch": 8, "lm_epochs": 2, "lm_steps_per_epoch": 6,
              "train_chars": 20000, "heldout_chars": 3000, "lm_eval_batch": 8},
    "cpu": {"gan_steps": 200, "critic_steps": 60, "decoder_steps": 40, "lm_width": 32,
            "lm_block": 32, "lm_batch": 8, "lm_epochs": 2, "lm_steps_per_epoch": 12,
            "train_chars": 40000, "heldout_chars": 6000, "lm_eval_batch": 8},
    "gpu": {"gan_steps": 400, "critic_steps": 60, "decoder_steps": 80, "lm_width": 64,
            "lm_block": 64, "lm_batch": 16, "lm_epochs": 3, "lm_steps_per_epoch": 40,
            "train_chars": 200000, "heldout_chars": 40000, "lm_eval_batch": 32},
}


@dataclass(frozen=True)
class SeedBlock:
    """A code block or formula of the source text: where, what, which chapter teaches the fix."""

    key: str
    section: str
    kind: str  # "formula" | "code" | "shell"
    title: str
    chapter: str  # the notebook's stem


SEED_BLOCKS: tuple[SeedBlock, ...] = (
    SeedBlock("value_function", "4.1.3", "formula", "GAN value function", "02_gan_math"),
    SeedBlock("generator_gradient", "4.2.1", "formula", "generator gradient", "02_gan_math"),
    SeedBlock("discriminator_gradient", "4.2.2", "formula", "discriminator gradient",
              "02_gan_math"),
    SeedBlock("attention_formula", "4.3.1", "formula", "H = Attention(X, H₋₁)",
              "05_transformer_decoder"),
    SeedBlock("transformer_decoder", "4.3.1", "code", "TransformerDecoder example",
              "05_transformer_decoder"),
    SeedBlock("gan_training", "4.3.2", "code", "GAN training example", "03_image_gan"),
    SeedBlock("environment", "5.1", "shell", "environment setup (conda, pip)",
              "06_gpt2_finetuning"),
    SeedBlock("gpt2_snippet", "5.2", "code", "GPT-2 data/model snippet", "06_gpt2_finetuning"),
    SeedBlock("train_evaluate", "5.2", "code", "train / evaluate functions", "06_gpt2_finetuning"),
    SeedBlock("training_driver", "5.2", "code", "training driver", "06_gpt2_finetuning"),
)


@dataclass
class ErrataLedger:
    """Which blocks a run treated and whether each fix passed its check.

    ``record`` (e.g. ``ch.record``) receives ``fixed_<key>=1`` or ``0`` for every check, so the
    chapter's bars ``fixed_<key> == 1`` fail in its Results cell when a fix fails; :meth:`check`
    itself never raises.
    """

    record: Callable[..., None] | None = None
    blocks: tuple[SeedBlock, ...] = SEED_BLOCKS
    outcomes: dict[str, bool] = field(default_factory=dict)

    def check(self, key: str, **conditions: bool) -> None:
        """Record block ``key``'s fix as passed when every condition holds; print which did not."""
        known = {b.key for b in self.blocks}
        if key not in known:
            raise KeyError(f"unknown seed block {key!r}; known: {', '.join(sorted(known))}")
        failed = [name for name, ok in conditions.items() if not bool(ok)]
        passed = bool(conditions) and not failed
        self.outcomes[key] = passed
        if self.record is not None:
            self.record(**{f"fixed_{key}": int(passed)})
        line = f"[pass] {key}: " + ", ".join(conditions) if passed else \
            f"[FAIL] {key}: " + (", ".join(failed) or "no conditions")
        print(textwrap.fill(line, width=96, subsequent_indent="       "))  # the page's 100 columns

    def metrics(self) -> dict[str, int]:
        """``seed_blocks_listed``, ``seed_blocks_covered`` (checked), ``fixed_blocks_passing``."""
        return {
            "seed_blocks_listed": len(self.blocks),
            "seed_blocks_covered": len(self.outcomes),
            "fixed_blocks_passing": sum(self.outcomes.values()),
        }

    def table_html(self) -> str:
        """An HTML table: section, block, kind, outcome, and a link to the chapter's page."""
        head = "".join(f"<th>{h}</th>" for h in ("§", "block", "kind", "fix", "taught in"))
        rows = []
        for b in self.blocks:
            state = {True: "passed", False: "FAILED"}.get(self.outcomes.get(b.key), "not run")
            cells = [b.section, b.title, b.kind, state]
            link = f'<a href="{html.escape(b.chapter)}.html">{html.escape(b.chapter)}</a>'
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                        + f"<td>{link}</td></tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# --- 4.1.3: the value function on a finite support (chapter 02 integrates densities in NumPy) ---


def discrete_optimal_d(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    r"""$D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_g(x))$ on a finite support.

    The best discriminator for a fixed generator (Goodfellow et al. 2014, Prop. 1).
    """
    return p_data / (p_data + p_g)


def discrete_value(d: torch.Tensor, p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    r"""$V(D, G) = \sum_x p_\text{data}(x)\log D(x) + p_g(x)\log(1 - D(x))$ on a finite support."""
    return (p_data * torch.log(d)).sum() + (p_g * torch.log1p(-d)).sum()


def discrete_jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""$\mathrm{JSD}(p\|q) = \tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)$,
    $m = (p+q)/2$, in nats, on a finite support."""
    m = (p + q) / 2
    return 0.5 * (p * (p.log() - m.log())).sum() + 0.5 * (q * (q.log() - m.log())).sum()


# --- 5.2: the loss GPT2LMHeadModel computes from labels=input_ids ---------------------------------


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Next-token cross-entropy, the loss ``GPT2LMHeadModel(..., labels=input_ids)`` computes.

    $$\mathcal{L} = -\frac{1}{N}\sum_{t}\log p_\theta(x_{t+1} \mid x_{\le t})$$

    The labels are the inputs themselves; the prediction at $t$ is scored against the label at
    $t + 1$. Labels ``-100`` (padding) are ignored.
    """
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
    )


# --- 5.1: an install recipe against what the packages declare -------------------------------------


def requires_python(dist: str) -> str:
    """The ``Requires-Python`` specifier an installed distribution declares (``""`` when none)."""
    return importlib.metadata.metadata(dist).get("Requires-Python") or ""


def python_supported(dist: str, python_version: str) -> bool:
    """Whether ``dist`` (as installed here) declares support for ``python_version`` (``"3.8"``)."""
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(requires_python(dist)).contains(python_version, prereleases=True)
