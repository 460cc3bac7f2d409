"""The one training loop of the book, and what every loop needs: parameter groups, a schedule, a stopwatch.

Like minGPT's ``trainer.py`` the loop knows nothing about any model. A chapter hands :func:`fit` a
function that computes the loss of step ``i`` (drawing its own batch), and :func:`fit` does the rest:
the optimizer step with optional gradient clipping, the learning-rate schedule, a progress bar that can
be switched off, periodic evaluation, one :class:`History`, and the wall time. Where a loop *is* the
lesson (chapter 06's manual fine-tuning loop, the GAN step, Gatys' optimisation) the chapter writes it
on the page, using :func:`optimizer_step` for the update.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

StepResult = torch.Tensor | tuple[torch.Tensor, Mapping[str, float]] | Mapping[str, float]


@dataclass
class History:
    """What every training run returns.

    ``curves`` holds one value per step (``"loss"``, ``"lr"`` and whatever a step reports), ``evals``
    the periodic evaluations (``"step"`` plus the names :func:`fit`'s ``evaluate`` returns),
    ``step_ends`` the wall-clock time at the end of each step and ``seconds`` the whole run's time.
    """

    curves: dict[str, list[float]] = field(default_factory=dict)
    evals: dict[str, list[float]] = field(default_factory=dict)
    step_ends: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def log(self, values: Mapping[str, float], into: str = "curves") -> None:
        """Append each value to its named curve (``into="evals"`` for evaluations)."""
        table = self.curves if into == "curves" else self.evals
        for key, value in values.items():
            table.setdefault(key, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        """A per-step curve, else an evaluation series, by name."""
        return self.curves[name] if name in self.curves else self.evals[name]

    def last(self, name: str, n: int = 1) -> float:
        """Mean of the last ``n`` values of a curve."""
        values = self[name][-n:]
        return sum(values) / len(values)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def decays(name: str, param: torch.Tensor) -> bool:
    """The usual weight-decay rule: decay matrices and embeddings, not biases or normalisation gains."""
    return param.ndim >= 2


def param_groups(
    model: nn.Module, weight_decay: float, decay: Callable[[str, torch.Tensor], bool] = decays
) -> list[dict[str, object]]:
    """Two AdamW groups — parameters that ``decay(name, p)`` selects get ``weight_decay``, the rest 0.

    Frozen parameters are left out. With the default rule this is what nanoGPT's ``configure_optimizers``
    and HF ``Trainer`` do (matrices decay; biases and LayerNorm gains, being 1-D, do not).
    """
    on, off = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (on if decay(name, p) else off).append(p)
    return [{"params": on, "weight_decay": weight_decay}, {"params": off, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    r"""Learning-rate multiplier at ``step``: linear warm-up over ``warmup`` steps, then half a cosine to ``floor``.

    $$\frac{\eta_t}{\eta_{\max}} = \begin{cases} t/W & t < W \\
      f + (1-f)\,\tfrac12\bigl(1 + \cos(\pi\,\tfrac{t-W}{T-W})\bigr) & t \ge W \end{cases}$$

    With ``floor=0`` it equals ``transformers.get_cosine_schedule_with_warmup`` (a test checks), which
    ``Trainer`` uses for ``lr_scheduler_type="cosine"``.
    """
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that applies :func:`warmup_cosine` to every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total, floor))


def adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    decay: Callable[[str, torch.Tensor], bool] = decays,
    **kwargs: object,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups`."""
    return torch.optim.AdamW(param_groups(model, weight_decay, decay), lr=lr, betas=betas, **kwargs)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    clip: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    r"""One update: clear the gradients, backpropagate ``loss``, clip $\lVert g\rVert_2 \le$ ``clip``, step, schedule.

    Returns the loss as a float. Every update outside the four loops that are lessons themselves
    (chapter 01's hand-written SGD, chapter 06's AMP loop and its accelerate script, Gatys' L-BFGS)
    goes through here.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def fit(
    step: Callable[[int], StepResult],
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip: float | None = None,
    evaluate: Callable[[], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> History:
    """Run `steps` training steps and return their History (the book's one training loop).

    With an optimizer, step(i) returns the loss of step i (or (loss, extras)) and fit applies
    optimizer_step, recording loss and lr. Without one, step(i) makes its own updates (a GAN's
    discriminator and generator steps) and returns the numbers to record. evaluate() runs every
    eval_every steps and after the last; on_step(i) after each step (snapshots). The models'
    train/eval modes are the caller's business.
    """
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for i in bar:
        out = step(i)
        if optimizer is not None:
            loss, extras = (out if isinstance(out, tuple) else (out, {}))
            lr = optimizer.param_groups[0]["lr"]
            value = optimizer_step(optimizer, loss, clip, scheduler)
            values = {"loss": value, "lr": lr, **extras}
        else:
            values = dict(out)  # type: ignore[arg-type]
            if scheduler is not None:
                scheduler.step()
        history.log(values)
        history.step_ends.append(time.perf_counter())
        if on_step is not None:
            on_step(i)
        done = i + 1
        if evaluate is not None and ((eval_every and done % eval_every == 0) or done == steps):
            history.log({"step": done, **evaluate()}, into="evals")
        if progress and done % 10 == 0:
            shown = {k: f"{v[-1]:.3g}" for k, v in history.curves.items() if k != "lr"}
            bar.set_postfix(shown, refresh=False)
    history.seconds = time.perf_counter() - start
    return history


def epoch_batches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches for ``epochs`` passes over ``n`` examples, reshuffled each epoch (the last batch may be short)."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches one pass over ``n`` examples takes."""
    return math.ceil(n / batch_size)


class Stopwatch:
    """Wall time of a ``with`` block, synchronising CUDA at both ends so GPU work is counted.

    >>> with Stopwatch() as sw:
    ...     _ = sum(range(1000))
    >>> sw.seconds >= 0
    True
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` (seconds): the least-disturbed measurement."""
    times = []
    for _ in range(repeats):
        with Stopwatch() as sw:
            fn()
        times.append(sw.seconds)
    return min(times)
