r"""Chapter 01: an MLP whose forward and backward passes are written by hand (autograd checks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core.train import History, epoch_batches, fit as fit_loop, steps_per_epoch

# Sizes per profile; ``setup_chapter`` picks one. train_size: training images used; hidden: hidden widths
# of section 5's MLP; epochs, batch_size: its training; manual_steps: steps of the hand-written SGD loop
# (section 4); overfit_size, overfit_hidden, overfit_epochs: section 6's small-data, wide-network runs.
SIZES = {
    "smoke": dict(train_size=4000, hidden=[128], epochs=2, batch_size=128, manual_steps=80,
                  overfit_size=300, overfit_hidden=[256, 256], overfit_epochs=8),
    "cpu": dict(train_size=55000, hidden=[256, 128], epochs=8, batch_size=128, manual_steps=400,
                overfit_size=1000, overfit_hidden=[512, 512], overfit_epochs=40),
    "gpu": dict(train_size=55000, hidden=[512, 256], epochs=15, batch_size=128, manual_steps=1000,
                overfit_size=1000, overfit_hidden=[512, 512], overfit_epochs=100),
}
# learning rates (hand-written SGD, SGD + momentum, Adam) and section 6's regularisers
LR = {"manual_sgd": 0.1, "sgd": 0.05, "momentum": 0.9, "adam": 1e-3, "weight_decay": 5e-4, "dropout": 0.3}
VAL_SIZE = 5000  # the last 5,000 training images are held out for validation
MANUAL_SIZES = [784, 128, 10]  # the hand-written MLP: 784 pixels -> 128 hidden units -> 10 classes
GRAD_CHECK_SIZES, GRAD_CHECK_SEEDS = [784, 64, 32, 10], 3  # two hidden layers, three random draws
OVERFIT_BATCH = 100  # section 6's batch size


@dataclass
class ManualMLP:
    """Weights ``W[l]`` ``(fan_in, fan_out)`` and biases ``b[l]`` ``(fan_out,)``."""

    W: list[Tensor]
    b: list[Tensor]

    @classmethod
    def init(cls, sizes: list[int], generator: torch.Generator, dtype=torch.float32) -> ManualMLP:
        r"""He initialisation: $W_l \sim \mathcal{N}(0, 2/\text{fan\_in})$, biases zero."""
        W = [torch.randn(i, o, generator=generator, dtype=dtype) * (2.0 / i) ** 0.5
             for i, o in zip(sizes, sizes[1:])]
        return cls(W, [torch.zeros(o, dtype=dtype) for o in sizes[1:]])

    def parameters(self) -> list[Tensor]:
        return [t for pair in zip(self.W, self.b) for t in pair]

    def __call__(self, x: Tensor) -> Tensor:  # logits of a batch of images or flat vectors
        return forward(self, x.flatten(1))[0]


def forward(net: ManualMLP, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    r"""Logits $z$ and the cache of layer inputs $h_0 \dots h_{L-1}$ that backward needs."""
    cache, h = [x], x
    for layer, (W, b) in enumerate(zip(net.W, net.b)):
        a = h @ W + b  # a_l = h_{l-1} W_l + b_l
        h = a.clamp_min(0) if layer < len(net.W) - 1 else a  # h_l = max(0, a_l); last: z
        cache.append(h)
    return h, cache[:-1]


def softmax_cross_entropy(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean cross-entropy $\mathcal{L}$ and its gradient $\partial\mathcal{L}/\partial z$."""
    shifted = logits - logits.max(dim=1, keepdim=True).values  # the max-shift keeps exp() finite
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    n = logits.shape[0]
    loss = -log_probs[torch.arange(n), y].mean()
    grad = log_probs.exp()  # p
    grad[torch.arange(n), y] -= 1.0  # p - onehot(y)
    return loss, grad / n


def backward(net: ManualMLP, cache: list[Tensor], grad_logits: Tensor) -> tuple[list, list]:
    r"""The chain rule, $\partial W_l$, $\partial b_l$ from $\delta_l$, then $\delta_{l-1}$."""
    dW, db = [torch.empty(0)] * len(net.W), [torch.empty(0)] * len(net.b)
    delta = grad_logits  # delta_L = dL/dz
    for layer in reversed(range(len(net.W))):
        h_prev = cache[layer]
        dW[layer] = h_prev.T @ delta  # h_{l-1}^T delta_l
        db[layer] = delta.sum(dim=0)  # sum_n delta_{l,n}
        if layer > 0:  # delta_{l-1} = (delta_l W_l^T) * 1[a_{l-1} > 0]
            delta = (delta @ net.W[layer].T) * (h_prev > 0).to(delta.dtype)
    return dW, db


def gradient_check(sizes: list[int], batch: int = 16, seed: int = 0) -> float:
    """Max relative error of the hand-written gradients and loss against autograd's (float64)."""
    gen = torch.Generator().manual_seed(seed)
    net = ManualMLP.init(sizes, gen, dtype=torch.float64)
    x = torch.randn(batch, sizes[0], generator=gen, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (batch,), generator=gen)
    logits, cache = forward(net, x)
    loss, grad_logits = softmax_cross_entropy(logits, y)
    dW, db = backward(net, cache, grad_logits)
    params = [p.clone().requires_grad_(True) for p in net.parameters()]
    reference = F.cross_entropy(forward(ManualMLP(params[0::2], params[1::2]), x)[0], y)
    auto = torch.autograd.grad(reference, params)
    manual = [t for pair in zip(dW, db) for t in pair]
    errors = [(m - a).abs().max() / a.abs().max().clamp_min(1e-12) for m, a in zip(manual, auto)]
    return max(float(max(errors)), abs(loss.item() - reference.item()) / abs(reference.item()))


def train_manual_sgd(net: ManualMLP, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                     epochs: int, lr: float, batch_size: int, generator: torch.Generator):
    """Mini-batch SGD by hand: ``loss`` per step, ``val_loss``/``val_acc`` after each epoch."""
    x, y = train[0].flatten(1), train[1]
    batches = epoch_batches(len(x), batch_size, epochs, generator)

    def step(_: int) -> dict[str, float]:
        idx = next(batches)
        logits, cache = forward(net, x[idx])
        loss, grad = softmax_cross_entropy(logits, y[idx])
        dW, db = backward(net, cache, grad)
        for layer in range(len(net.W)):  # the update, by hand
            net.W[layer] -= lr * dW[layer]
            net.b[layer] -= lr * db[layer]
        return {"loss": loss.item()}

    def on_val() -> dict[str, float]:
        return dict(zip(("val_loss", "val_acc"), evaluate(net, *val)))

    per_epoch = steps_per_epoch(len(x), batch_size)
    return fit_loop(step, epochs * per_epoch, evaluate=on_val, eval_every=per_epoch, desc="SGD")


def make_mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """The same architecture with ``nn`` layers (Flatten → [Linear → ReLU → Dropout]* → Linear)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        hidden = i < len(sizes) - 2
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.ReLU()] if hidden else [])
        layers += [nn.Dropout(dropout)] if hidden and dropout else []
    return nn.Sequential(*layers)


@torch.no_grad()
def evaluate(model: nn.Module | ManualMLP, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the logits ``model(x)`` (``nn.Module``s in eval mode)."""
    if isinstance(model, nn.Module):
        model.eval()
        x, y = x.to(next(model.parameters()).device), y.to(next(model.parameters()).device)
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_mlp(model: nn.Module, optimizer: torch.optim.Optimizer, train: tuple[Tensor, Tensor],
              val: tuple[Tensor, Tensor], epochs: int, batch_size: int, generator: torch.Generator,
              desc: str = "train") -> History:
    """Mini-batch training; ``{train,val}_{loss,acc}`` after each epoch."""
    (x, y), device = train, next(model.parameters()).device
    batches = epoch_batches(len(x), batch_size, epochs, generator)

    def step(_: int) -> Tensor:
        model.train()
        idx = next(batches)
        return F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))

    def per_split() -> dict[str, float]:
        (tl, ta), (vl, va) = evaluate(model, *train), evaluate(model, *val)
        return {"train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va}

    n = steps_per_epoch(len(x), batch_size)
    return fit_loop(step, epochs * n, optimizer, evaluate=per_split, eval_every=n, desc=desc)
