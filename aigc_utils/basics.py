"""Chapter 01: a multilayer perceptron whose forward and backward passes are written by hand.

The network is :math:`h_0 = x`, :math:`a_l = h_{l-1} W_l + b_l`, :math:`h_l = \\mathrm{ReLU}(a_l)` for the hidden
layers and logits :math:`z = h_{L-1} W_L + b_L`; the loss is the mean softmax cross-entropy. Autograd is the
oracle: :func:`gradient_check` compares the hand-written gradients with ``torch.autograd`` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class ManualMLP:
    """Weights ``W[l]`` of shape ``(fan_in, fan_out)`` and biases ``b[l]`` of shape ``(fan_out,)``."""

    W: list[Tensor] = field(default_factory=list)
    b: list[Tensor] = field(default_factory=list)

    @classmethod
    def init(cls, sizes: list[int], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> ManualMLP:
        """He initialisation: :math:`W_l \\sim \\mathcal{N}(0, 2/\\text{fan\\_in})`, biases zero (Chapter 01, eq. 1)."""
        W = [torch.randn(i, o, generator=generator, dtype=dtype) * (2.0 / i) ** 0.5 for i, o in zip(sizes, sizes[1:])]
        b = [torch.zeros(o, dtype=dtype) for o in sizes[1:]]
        return cls(W, b)

    def parameters(self) -> list[Tensor]:
        return [t for pair in zip(self.W, self.b) for t in pair]

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.parameters())


def forward(net: ManualMLP, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Forward pass; returns the logits and the cache of layer inputs :math:`h_0 … h_{L-1}` for backward.

    .. math:: a_l = h_{l-1} W_l + b_l, \\qquad h_l = \\max(0, a_l), \\qquad z = h_{L-1} W_L + b_L
    """
    cache = [x]
    h = x
    for layer, (W, b) in enumerate(zip(net.W, net.b)):
        a = h @ W + b
        h = a.clamp_min(0) if layer < len(net.W) - 1 else a
        cache.append(h)
    return h, cache[:-1]


def softmax_cross_entropy(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and its gradient w.r.t. the logits.

    .. math:: \\mathcal{L} = -\\frac{1}{N}\\sum_n \\log \\operatorname{softmax}(z_n)_{y_n}, \\qquad
              \\frac{\\partial \\mathcal{L}}{\\partial z_n} = \\frac{1}{N}\\bigl(\\operatorname{softmax}(z_n) - \\mathbf{e}_{y_n}\\bigr)
    """
    shifted = logits - logits.max(dim=1, keepdim=True).values  # the max-shift keeps exp() finite
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    n = logits.shape[0]
    loss = -log_probs[torch.arange(n), y].mean()
    grad = log_probs.exp()
    grad[torch.arange(n), y] -= 1.0
    return loss, grad / n


def backward(net: ManualMLP, cache: list[Tensor], grad_logits: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Backpropagation by the chain rule, last layer first (Chapter 01, eqs. 3–5).

    .. math:: \\frac{\\partial\\mathcal{L}}{\\partial W_l} = h_{l-1}^{\\top}\\,\\delta_l, \\quad
              \\frac{\\partial\\mathcal{L}}{\\partial b_l} = \\textstyle\\sum_n \\delta_{l,n}, \\quad
              \\delta_{l-1} = (\\delta_l W_l^{\\top}) \\odot \\mathbf{1}[h_{l-1} > 0]
    """
    dW: list[Tensor] = [torch.empty(0)] * len(net.W)
    db: list[Tensor] = [torch.empty(0)] * len(net.b)
    delta = grad_logits
    for layer in reversed(range(len(net.W))):
        h_prev = cache[layer]
        dW[layer] = h_prev.T @ delta
        db[layer] = delta.sum(dim=0)
        if layer > 0:
            delta = (delta @ net.W[layer].T) * (h_prev > 0).to(delta.dtype)
    return dW, db


def gradient_check(sizes: list[int], batch: int = 16, seed: int = 0) -> float:
    """Max relative error between the hand-written gradients and autograd's, in float64."""
    gen = torch.Generator().manual_seed(seed)
    net = ManualMLP.init(sizes, gen, dtype=torch.float64)
    x = torch.randn(batch, sizes[0], generator=gen, dtype=torch.float64)
    y = torch.randint(0, sizes[-1], (batch,), generator=gen)
    logits, cache = forward(net, x)
    loss, grad_logits = softmax_cross_entropy(logits, y)
    dW, db = backward(net, cache, grad_logits)

    params = [p.clone().requires_grad_(True) for p in net.parameters()]
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i < len(params) - 2:
            h = h.relu()
    reference = F.cross_entropy(h, y)
    auto = torch.autograd.grad(reference, params)
    manual = [t for pair in zip(dW, db) for t in pair]
    errors = [((m - a).abs().max() / a.abs().max().clamp_min(1e-12)).item() for m, a in zip(manual, auto)]
    errors.append(abs(loss.item() - reference.item()) / abs(reference.item()))
    return max(errors)


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max equals the label."""
    return (logits.argmax(dim=1) == y).float().mean().item()


def train_manual_sgd(
    net: ManualMLP, x: Tensor, y: Tensor, epochs: int, lr: float, batch_size: int, generator: torch.Generator
) -> list[float]:
    """Plain mini-batch SGD with the hand-written backward pass: :math:`\\theta \\leftarrow \\theta - \\eta \\nabla_\\theta \\mathcal{L}`."""
    losses = []
    flat = x.flatten(1)
    for _ in range(epochs):
        order = torch.randperm(len(flat), generator=generator)
        for start in tqdm(range(0, len(flat), batch_size), desc="manual SGD", leave=False):
            idx = order[start : start + batch_size]
            logits, cache = forward(net, flat[idx])
            loss, grad = softmax_cross_entropy(logits, y[idx])
            dW, db = backward(net, cache, grad)
            for layer in range(len(net.W)):
                net.W[layer] -= lr * dW[layer]
                net.b[layer] -= lr * db[layer]
            losses.append(loss.item())
    return losses


def make_mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """The same architecture with ``nn`` layers (Flatten → [Linear → ReLU → Dropout]* → Linear)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return total_loss / len(x), correct / len(x)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    desc: str = "train",
) -> dict[str, list[float]]:
    """Train with mini-batches; per-epoch train/val loss and accuracy (the curves of the chapter)."""
    device = next(model.parameters()).device
    x, y = train
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": []}
    for _ in tqdm(range(epochs), desc=desc):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        for split, (xs, ys) in (("train", train), ("val", val)):
            split_loss, split_acc = evaluate(model, xs, ys)
            history[f"{split}_loss"].append(split_loss)
            history[f"{split}_acc"].append(split_acc)
    return history
