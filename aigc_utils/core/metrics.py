r"""Judging generated Fashion-MNIST images offline (Chapter 03): a small CNN replaces Inception.

A classifier trained on the Fashion-MNIST *train* split (cached) supplies the features of a
**classifier FID** (torchmetrics' ``FrechetInceptionDistance`` with :class:`ClassifierFeatures`), a
**classifier Inception Score** and **class coverage**. Its numbers compare only with other numbers
from the same classifier, never with published Inception FIDs. :class:`Referee` puts them together
for every image chapter (03, 10): classifier, FID, floor, ceiling, normalised FID, IS, coverage,
label agreement and intra-FID.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from .checkpoints import cached_module
from .train import History, epoch_batches, fit, steps_per_epoch, warmup_cosine_scheduler


class FashionCNN(nn.Module):
    """Conv(1→c0)+ReLU+pool → Conv(c0→c1)+ReLU+pool → Linear(→features)+ReLU → Linear(→10),
    on (N, 1, 28, 28) images in [0, 1]; ``features(x)`` is the penultimate layer used for FID."""

    def __init__(
        self, channels: tuple[int, int] = (16, 32), num_features: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        c0, c1 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c0, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14×14
            nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 7×7
            nn.Flatten(), nn.Linear(c1 * 7 * 7, num_features), nn.ReLU(inplace=True),
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
    """Logits of ``model`` (in eval mode) over ``images`` in batches on its device, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(batch.to(device)).cpu() for batch in images.split(batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(images, labels)``."""
    return (predict_logits(model, images).argmax(1) == labels).float().mean().item()


def train_classifier(
    model: FashionCNN, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 2,
    batch_size: int = 128, lr: float = 2e-3, seed: int = 0, device: torch.device | str = "cpu",
    progress: bool = True,
) -> History:
    """Adam, learning rate decayed by a cosine to 0 (no warm-up), for a fixed number of epochs."""
    model.to(device).train()
    total = epochs * steps_per_epoch(len(images), batch_size)
    batches = epoch_batches(len(images), batch_size, epochs, torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i: int) -> torch.Tensor:
        idx = next(batches)
        return F.cross_entropy(model(images[idx].to(device)), labels[idx].to(device))

    history = fit(step, total, opt, scheduler=warmup_cosine_scheduler(opt, 0, total),
                  desc="classifier", progress=progress)
    model.eval()
    return history


def fashion_classifier(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
    channels: tuple[int, int] = (16, 32), num_features: int = 64, epochs: int = 2,
    batch_size: int = 128, lr: float = 2e-3, seed: int = 0, device: torch.device | str = "cpu",
) -> tuple[FashionCNN, float, bool]:
    """The evaluation classifier, loaded from ``AIGC_CACHE`` or trained on ``train`` and cached:
    ``(model in eval mode on device, test accuracy, loaded_from_cache)``."""
    torch.manual_seed(seed)
    model = FashionCNN(channels, num_features)
    key = {"channels": list(channels), "num_features": num_features, "epochs": epochs,
           "batch_size": batch_size, "lr": lr, "seed": seed, "n_train": len(train[0])}

    def train_and_score(m: FashionCNN) -> dict[str, float]:
        train_classifier(m, *train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         device=device)
        return {"test_accuracy": accuracy(m, *test)}

    model, extras, hit = cached_module("fashion_cnn", key, model, train_and_score)
    model.to(device).eval()
    return model, float(extras["test_accuracy"]), hit


class ClassifierFeatures(nn.Module):
    """A classifier's penultimate features as a module, the form torchmetrics' FID expects."""

    def __init__(self, classifier: FashionCNN) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class ClassifierFID:
    """FID in a classifier's feature space, e.g. ``ClassifierFID(ClassifierFeatures(clf), real)``,
    against a fixed real set whose statistics are computed once."""

    def __init__(self, extractor: nn.Module, real: torch.Tensor, batch_size: int = 1000) -> None:
        self.batch_size = batch_size
        self.device = next(extractor.parameters(), torch.empty(0)).device
        fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
        self.metric = fid.to(self.device)
        self._update(real, real=True)

    @torch.no_grad()
    def _update(self, images: torch.Tensor, real: bool) -> None:
        for batch in images.split(self.batch_size):
            self.metric.update(batch.to(self.device), real=real)

    def __call__(self, fake: torch.Tensor) -> float:
        """FID between the real set and ``fake`` (same shape and range as the real images)."""
        self.metric.reset()  # keeps the real statistics
        self._update(fake, real=False)
        return float(self.metric.compute())


def frechet_distance_gaussians(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    r"""Closed form $\lVert\mu_1-\mu_2\rVert^2 + \operatorname{Tr}(\Sigma_1+\Sigma_2-2C)$ with the
    symmetric $C = (\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}$, whose trace equals that of
    $(\Sigma_1\Sigma_2)^{1/2}$. The oracle of the unit test."""

    def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(a.double())
        return vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T

    s1 = sqrtm_psd(sigma1)
    cross = sqrtm_psd(s1 @ sigma2.double() @ s1)
    diff = (mu1 - mu2).double()
    return float(diff @ diff + torch.trace(sigma1.double() + sigma2.double() - 2 * cross))


def inception_score(logits: torch.Tensor, splits: int = 1) -> float:
    """The Inception Score (Salimans et al. 2016) of classifier logits (N, classes): the exponential
    of the EXPECTED KL divergence, IS = exp(E_x KL(p(y|x) || p(y))), where p(y|x) is the softmax of
    one image's logits, the expectation is the mean over the N images and p(y) = E_x p(y|x) is
    their marginal class distribution. It runs from 1 (every image gets the same distribution) to
    the number of classes (confident and balanced).

    With ``splits`` = k > 1 it is the mean of k such scores, each with its own marginal, over
    consecutive parts of the rows as given (no shuffling): part i holds rows floor(i N / k) up to,
    not including, floor((i + 1) N / k), as in the original code. Every row counts once; the parts
    are equal when k divides N and otherwise differ in size by one row. k must be 1 to N."""
    n = len(logits)
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be between 1 and the number of rows ({n}), got {splits}")
    log_p = F.log_softmax(logits.double(), dim=1)
    bounds = [i * n // splits for i in range(splits + 1)]
    scores = []
    for start, stop in zip(bounds, bounds[1:]):
        part = log_p[start:stop]
        log_marginal = torch.logsumexp(part, dim=0) - math.log(len(part))
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(sum(scores) / len(scores))


def class_counts(predicted: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """How many samples the classifier assigns to each class."""
    return torch.bincount(predicted, minlength=num_classes)


def class_coverage(
    predicted: torch.Tensor, num_classes: int = 10, min_fraction: float = 0.05
) -> int:
    """How many classes receive at least ``min_fraction`` of the samples (10: no class missed)."""
    counts = class_counts(predicted, num_classes)
    return int((counts >= min_fraction * len(predicted)).sum())


class Referee:
    """Judges 28×28 grey images in [0, 1] with a Fashion-MNIST classifier instead of Inception:
    classifier FID against ``n_eval`` test images, that FID normalised between a real-vs-real floor
    and an untrained generator's ceiling, Inception Score, class coverage, label agreement, intra-FID."""

    def __init__(self, classifier: nn.Module, test: tuple[torch.Tensor, torch.Tensor], n_eval: int, *,
                 accuracy: float = float("nan"), min_class_share: float = 0.05,
                 batch_size: int = 1000) -> None:
        self.classifier, self.accuracy, self.cached = classifier, accuracy, False
        self.test_images, self.test_labels = test
        self.n_eval, self.min_class_share, self.batch_size = n_eval, min_class_share, batch_size
        self.features = ClassifierFeatures(classifier)
        self.num_features = self.features.num_features
        self._fid = ClassifierFID(self.features, self.test_images[:n_eval], batch_size)
        self._class_fid: dict[int, ClassifierFID] = {}  # intra-FID references, built when first asked
        self.floor: float | None = None
        self.ceiling: float | None = None

    @classmethod
    def fashion_mnist(
        cls, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
        n_train: int, epochs: int, n_eval: int, seed: int = 0, device: torch.device | str = "cpu",
        min_class_share: float = 0.05,
    ) -> Referee:
        """The referee with the cached Fashion-MNIST classifier trained on the first ``n_train``
        training images for ``epochs`` epochs (trained now and cached if not cached yet)."""
        classifier, acc, cached = fashion_classifier((train[0][:n_train], train[1][:n_train]), test,
                                                     epochs=epochs, seed=seed, device=device)
        referee = cls(classifier, test, n_eval, accuracy=acc, min_class_share=min_class_share)
        referee.cached = cached
        return referee

    def calibrate(self, real: torch.Tensor, untrained: torch.Tensor, seed: int) -> dict[str, float]:
        """Floor: the FID of ``n_eval`` images drawn from ``real`` (other real images than the
        reference); ceiling: the FID of ``untrained``, an untrained generator's images."""
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        self.floor = self.fid(real[order[: self.n_eval]])
        self.ceiling = self.fid(untrained)
        return self.calibration()

    def calibration(self) -> dict[str, float]:
        """The referee's own numbers, to record beside a chapter's."""
        return {"classifier_test_accuracy": self.accuracy, "fid_floor": self.floor,
                "fid_ceiling": self.ceiling, "n_eval": self.n_eval}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's logits (N, 10) of ``images``."""
        return predict_logits(self.classifier, images, self.batch_size)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The class the classifier reads in each image."""
        return self.logits(images).argmax(1)

    def fid(self, images: torch.Tensor) -> float:
        """Classifier FID of ``images`` against the ``n_eval`` reference test images."""
        return self._fid(images)

    def fid_norm(self, fid: float) -> float:
        """``fid`` on the scale 0 = floor (as good as real data), 1 = ceiling (untrained)."""
        if self.floor is None or self.ceiling is None:
            raise RuntimeError("calibrate the referee first: it has no floor and ceiling yet")
        return (fid - self.floor) / (self.ceiling - self.floor)

    def inception_score(self, images: torch.Tensor) -> float:
        """The classifier Inception Score of ``images`` (1 to 10)."""
        return inception_score(self.logits(images))

    def class_coverage(self, images: torch.Tensor) -> int:
        """How many classes get at least ``min_class_share`` of ``images``."""
        return class_coverage(self.predict(images), min_fraction=self.min_class_share)

    def label_agreement(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """The share of ``images`` the classifier reads as their requested ``labels``."""
        return (self.predict(images) == labels).float().mean().item()

    def intra_fid(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Intra-FID (Miyato & Koyama 2018): each class's images against all test images of that
        class, averaged over the classes."""
        classes = int(self.test_labels.max()) + 1
        for c in range(classes):
            if c not in self._class_fid:
                reference = self.test_images[self.test_labels == c]
                self._class_fid[c] = ClassifierFID(self.features, reference, self.batch_size)
        return sum(self._class_fid[c](images[labels == c]) for c in range(classes)) / classes

    def judge(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """FID, normalised FID, Inception Score and class coverage of ``images`` (and, given the
        requested ``labels``, the label agreement), from one pass of the classifier."""
        logits = self.logits(images)
        predicted, score = logits.argmax(1), self.fid(images)
        scores = {"fid": score, "fid_norm": self.fid_norm(score),
                  "inception_score": inception_score(logits),
                  "class_coverage": class_coverage(predicted, min_fraction=self.min_class_share)}
        if labels is not None:
            scores["label_agreement"] = (predicted == labels).float().mean().item()
        return scores
