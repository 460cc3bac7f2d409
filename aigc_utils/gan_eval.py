"""Judging generated Fashion-MNIST images offline (Chapter 03): a small classifier stands in for Inception.

No Inception-v3 weights exist offline, so the book trains a small CNN on the Fashion-MNIST *train* split
(cached) and uses it the way FID / IS use Inception:

* **classifier-feature FID** — Fréchet distance between Gaussians fitted to penultimate-layer features,
  $\\mathrm{FID} = \\lVert\\mu_r-\\mu_g\\rVert^2 + \\operatorname{Tr}\\big(\\Sigma_r+\\Sigma_g-2(\\Sigma_r\\Sigma_g)^{1/2}\\big)$,
  computed by torchmetrics' ``FrechetInceptionDistance`` with this feature extractor;
* **classifier Inception Score** — $\\mathrm{IS} = \\exp\\,\\mathbb E_x\\,\\mathrm{KL}\\big(p(y\\mid x)\\,\\Vert\\,p(y)\\big)$
  (1 … number of classes);
* **class coverage** — how many classes receive at least a given share of the samples.

Its numbers are only comparable with other numbers from the same classifier, never with published
Inception FIDs; the chapter calibrates them with a floor (real vs real) and a ceiling (untrained $G$).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm.auto import tqdm

from .checkpoints import cached_module


class FashionCNN(nn.Module):
    """Conv(1→c0)+ReLU+pool → Conv(c0→c1)+ReLU+pool → Linear(→features)+ReLU → Linear(→10).

    Input: (N, 1, 28, 28) in [0, 1]. ``features(x)`` is the penultimate layer used for FID.
    """

    def __init__(self, channels: tuple[int, int] = (16, 32), num_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        c0, c1 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c0, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14×14
            nn.Conv2d(c0, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 7×7
            nn.Flatten(),
            nn.Linear(c1 * 7 * 7, num_features),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, num_features) of images in [0, 1]."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        return self.head(self.features(x))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) over ``images`` in batches, on the model's device, back on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(images, labels)``."""
    return (predict_logits(model, images).argmax(1) == labels).float().mean().item()


def train_classifier(
    model: FashionCNN,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[float]:
    """Adam with a cosine-decayed learning rate for a fixed number of epochs; returns per-step losses."""
    device = torch.device(device)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    losses: list[float] = []
    bar = tqdm(total=total, desc="classifier", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    model.eval()
    return losses


def fashion_classifier(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    channels: tuple[int, int] = (16, 32),
    num_features: int = 64,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[FashionCNN, float, bool]:
    """The evaluation classifier, loaded from ``AIGC_CACHE`` or trained on ``train`` and cached.

    Returns ``(model in eval mode on device, test accuracy, loaded_from_cache)``. Every setting that
    changes the weights is part of the cache key.
    """
    torch.manual_seed(seed)
    model = FashionCNN(channels, num_features)
    key = {
        "channels": list(channels),
        "num_features": num_features,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "n_train": len(train[0]),
    }

    def fit(m: FashionCNN) -> dict[str, float]:
        train_classifier(m, *train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
        return {"test_accuracy": accuracy(m, *test)}

    model, extras, hit = cached_module("fashion_cnn", key, model, fit)
    model.to(device).eval()
    return model, float(extras["test_accuracy"]), hit


class FeatureExtractor(nn.Module):
    """Wraps a classifier so that torchmetrics' FID calls ``features`` (it reads ``num_features``)."""

    def __init__(self, classifier: FashionCNN) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class ClassifierFID:
    """FID in a classifier's feature space against a fixed real set whose statistics are computed once.

    >>> fid = ClassifierFID(extractor, real_images)   # doctest: +SKIP
    >>> fid(fake_images)                              # doctest: +SKIP
    """

    def __init__(self, extractor: nn.Module, real: torch.Tensor, batch_size: int = 1000) -> None:
        self.batch_size = batch_size
        self.device = next(extractor.parameters(), torch.empty(0)).device
        self.metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False).to(self.device)
        self._update(real, real=True)

    @torch.no_grad()
    def _update(self, images: torch.Tensor, real: bool) -> None:
        for i in range(0, len(images), self.batch_size):
            self.metric.update(images[i : i + self.batch_size].to(self.device), real=real)

    def __call__(self, fake: torch.Tensor) -> float:
        """FID between the real set and ``fake`` (same shape and range as the real images)."""
        self.metric.reset()  # keeps the real statistics
        self._update(fake, real=False)
        return float(self.metric.compute())


def frechet_distance_gaussians(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """Closed form $\\lVert\\mu_1-\\mu_2\\rVert^2 + \\operatorname{Tr}(\\Sigma_1+\\Sigma_2-2(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2})^{1/2})$
    (the symmetric square root; equal to $(\\Sigma_1\\Sigma_2)^{1/2}$'s trace). The oracle of the unit test."""

    def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(a.double())
        return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T

    s1 = sqrtm_psd(sigma1)
    cross = sqrtm_psd(s1 @ sigma2.double() @ s1)
    diff = (mu1 - mu2).double()
    return float(diff @ diff + torch.trace(sigma1.double() + sigma2.double() - 2 * cross))


def inception_score(logits: torch.Tensor, splits: int = 1) -> float:
    """Chapter 03: $\\mathrm{IS} = \\exp\\big(\\mathbb E_x \\mathrm{KL}(p(y\\mid x)\\Vert p(y))\\big)$, $p(y) = \\mathbb E_x p(y\\mid x)$.

    1 when every image gets the same prediction; the number of classes when predictions are confident
    and classes balanced. With ``splits`` > 1, the mean over equal chunks (the original recipe).
    """
    log_p = F.log_softmax(logits.double(), dim=1)
    scores = []
    for chunk in log_p.chunk(splits):
        log_marginal = torch.logsumexp(chunk, dim=0) - math.log(len(chunk))
        kl = (chunk.exp() * (chunk - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(sum(scores) / len(scores))


def class_counts(predicted: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """How many samples the classifier assigns to each class."""
    return torch.bincount(predicted, minlength=num_classes)


def class_coverage(predicted: torch.Tensor, num_classes: int = 10, min_fraction: float = 0.05) -> int:
    """Number of classes that receive at least ``min_fraction`` of the samples (10 = no class missed)."""
    counts = class_counts(predicted, num_classes)
    return int((counts >= min_fraction * len(predicted)).sum())
