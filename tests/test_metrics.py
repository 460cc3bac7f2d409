"""The book's image metrics: chapter 03's FID against the closed form, IS against the original
recipe and torchmetrics, coverage, the classifier's training against the hand-written loop it
replaced; and chapter 08's SSIM convention against scikit-image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from aigc_utils.core.metrics import (
    ClassifierFeatures,
    ClassifierFID,
    Referee,
    FashionCNN,
    class_counts,
    class_coverage,
    fashion_classifier,
    frechet_distance_gaussians,
    inception_score,
    predict_logits,
    train_classifier,
)
from aigc_utils.core.train import warmup_cosine_scheduler


class Identity(nn.Module):
    """A 'feature extractor' that returns its input, so FID sees the raw Gaussian samples."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_closed_form_on_commuting_covariances():
    # diagonal Σ: Tr(Σ1 + Σ2 - 2 sqrt(Σ1 Σ2)) = Σ_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 2.0, 0.0])
    want = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance_gaussians(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(want, abs=1e-9)


def test_torchmetrics_fid_on_two_gaussians_matches_closed_form():
    gen = torch.Generator().manual_seed(0)
    d, n = 4, 40_000
    mu1, mu2 = torch.zeros(d), torch.tensor([1.0, -1.0, 0.5, 0.0])
    # a non-diagonal covariance for the second Gaussian: Σ2 = A Aᵀ
    A = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 1.5, 0.0, 0.0],
                      [0.0, 0.3, 0.8, 0.0], [0.2, 0.0, 0.4, 2.0]])
    sigma1, sigma2 = torch.eye(d), A @ A.T
    x1 = mu1 + torch.randn(n, d, generator=gen)
    x2 = mu2 + torch.randn(n, d, generator=gen) @ A.T
    want = frechet_distance_gaussians(mu1, sigma1, mu2, sigma2)
    got = ClassifierFID(Identity(d), x1, batch_size=10_000)(x2)
    assert want > 2.0
    assert got == pytest.approx(want, rel=0.03)
    # and the same set against itself is ~0
    assert ClassifierFID(Identity(d), x1)(x1) == pytest.approx(0.0, abs=1e-6)


def test_inception_score_extremes_and_torchmetrics_parity():
    # confident and balanced over 10 classes → 10; identical predictions → 1
    confident = torch.eye(10).repeat(50, 1) * 50.0
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.randn(1, 10).repeat(500, 1)) == pytest.approx(1.0, abs=1e-9)
    from torchmetrics.image.inception import InceptionScore

    logits = torch.randn(600, 10, generator=torch.Generator().manual_seed(1)) * 3
    metric = InceptionScore(feature=Identity(10), splits=1)  # >1 split: torchmetrics shuffles first
    metric.update(logits)
    mean, _ = metric.compute()
    assert inception_score(logits) == pytest.approx(float(mean), rel=1e-5)


def test_inception_score_splits_are_the_original_recipes_consecutive_parts():
    logits = torch.randn(600, 10, generator=torch.Generator().manual_seed(2)) * 3

    def mean_over(parts: list[tuple[int, int]]) -> float:
        return sum(inception_score(logits[a:b]) for a, b in parts) / len(parts)

    # part i: rows floor(i N / k) to floor((i + 1) N / k); torch.chunk would give 3, 3, 3, 1 here
    assert inception_score(logits[:10], splits=4) == pytest.approx(
        mean_over([(0, 2), (2, 5), (5, 7), (7, 10)]), rel=1e-12)
    # and 2, 2, 2 (three parts, not four) here
    assert inception_score(logits[:6], splits=4) == pytest.approx(
        mean_over([(0, 1), (1, 3), (3, 4), (4, 6)]), rel=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits[:3], splits=4)
    # k dividing N: torchmetrics' equal parts, after the same shuffle torchmetrics makes first
    from torchmetrics.image.inception import InceptionScore

    metric = InceptionScore(feature=Identity(10), splits=4)
    metric.update(logits)
    torch.manual_seed(3)
    mean, _ = metric.compute()
    torch.manual_seed(3)
    shuffled = logits[torch.randperm(600)]
    assert inception_score(shuffled, splits=4) == pytest.approx(float(mean), rel=1e-5)
    assert inception_score(shuffled, splits=4) != pytest.approx(inception_score(shuffled), rel=1e-4)


def ssim_images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of random 28×28 images, as (pred, target) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 1, 28, 28, generator=gen)
    return (target + 0.2 * torch.randn(n, 1, 28, 28, generator=gen)).clamp(0, 1), target


def test_ssim_mean_averages_the_whole_reflection_padded_map_and_skimage_its_interior():
    """Chapter 08's ssim_mean follows torchmetrics: Gaussian window (sigma 1.5, 11 wide), each image
    padded by reflection, the whole 28×28 map averaged. scikit-image (and Wang et al. 2004) average
    only the interior, 5 pixels in from each side: the same map there, a different mean."""
    from skimage.metrics import structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure

    from aigc_utils.inpaint import ssim_mean

    pred, target = ssim_images()
    ours = ssim_mean(pred, target)
    explicit = structural_similarity_index_measure(
        pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
        k1=0.01, k2=0.03, reduction="elementwise_mean")
    assert ours == pytest.approx(float(explicit), abs=1e-6)
    kw = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5,
          "use_sample_covariance": False, "full": True}
    whole, interior, skimage_means = [], [], []
    for p, t in zip(pred[:, 0].double().numpy(), target[:, 0].double().numpy()):
        skimage_means.append(structural_similarity(t, p, **kw)[0])  # its border is cropped
        # numpy's "reflect" is torch's: the edge pixel is not repeated (scipy's "reflect" repeats)
        _, padded_map = structural_similarity(np.pad(t, 5, mode="reflect"),
                                              np.pad(p, 5, mode="reflect"), **kw)
        whole.append(padded_map[5:-5, 5:-5].mean())  # the 28×28 map of the reflected image
        interior.append(padded_map[10:-10, 10:-10].mean())  # its 18×18 interior
    assert ours == pytest.approx(float(np.mean(whole)), abs=1e-6)
    assert interior == pytest.approx(skimage_means, abs=1e-6)
    assert abs(ours - float(np.mean(skimage_means))) > 1e-3  # the border's 59 % moves the mean


def test_class_coverage_counts_classes_above_threshold():
    pred = torch.cat([torch.full((90,), 0), torch.arange(10)])  # class 0: 91 %, the rest 1 % each
    assert class_counts(pred).tolist() == [91] + [1] * 9
    assert class_coverage(pred) == 1
    assert class_coverage(torch.arange(1000) % 10) == 10
    assert class_coverage(pred, min_fraction=0.01) == 10


def test_classifier_trains_caches_and_feeds_fid(tmp_cache):
    gen = torch.Generator().manual_seed(0)
    # two easy synthetic classes: bright top half vs bright bottom half
    y = torch.randint(0, 2, (512,), generator=gen)
    x = torch.rand(512, 1, 28, 28, generator=gen) * 0.3
    x[y == 0, :, :14] += 0.6
    x[y == 1, :, 14:] += 0.6
    train, test = (x[:384], y[:384]), (x[384:], y[384:])
    kwargs = {"epochs": 1, "batch_size": 64, "channels": (4, 8), "num_features": 16}
    model, acc, hit = fashion_classifier(train, test, **kwargs)
    assert not hit and acc > 0.9 and isinstance(model, FashionCNN)
    assert acc == (predict_logits(model, test[0], batch_size=7).argmax(1) == test[1]).float().mean()
    again, acc2, hit2 = fashion_classifier(train, test, **kwargs)
    assert hit2 and acc2 == acc
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    fid = ClassifierFID(ClassifierFeatures(model), test[0])
    assert fid(test[0]) == pytest.approx(0.0, abs=1e-4)
    assert fid(torch.rand(128, 1, 28, 28, generator=gen)) > fid(train[0][:128])


def test_cosine_schedule_without_warmup_is_cosine_annealing():
    # the classifier's schedule, warmup_cosine with no warm-up, is torch's CosineAnnealingLR
    w = torch.nn.Parameter(torch.zeros(1))
    ours, ref = torch.optim.Adam([w], lr=2e-3), torch.optim.Adam([w], lr=2e-3)
    total = 37
    schedules = (warmup_cosine_scheduler(ours, 0, total),
                 torch.optim.lr_scheduler.CosineAnnealingLR(ref, total))
    for _ in range(total):
        lr, want = ours.param_groups[0]["lr"], ref.param_groups[0]["lr"]
        assert lr == pytest.approx(want, rel=1e-12, abs=1e-18)
        for opt, sched in zip((ours, ref), schedules):
            opt.step()
            sched.step()


def test_train_classifier_is_the_per_epoch_loop_it_replaced(one_thread):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 1, 28, 28, generator=gen), torch.randint(0, 10, (50,), generator=gen)
    torch.manual_seed(0)
    model = FashionCNN((4, 8), 16)
    ref = copy.deepcopy(model)
    history = train_classifier(model, x, y, epochs=2, batch_size=16, lr=1e-2, seed=3,
                               progress=False)
    order_gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)  # 2 epochs × ceil(50 / 16)
    losses = []
    for _ in range(2):
        order = torch.randperm(50, generator=order_gen)
        for i in range(0, 50, 16):
            idx = order[i : i + 16]
            loss = torch.nn.functional.cross_entropy(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    assert history["loss"] == pytest.approx(losses, rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def two_class_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Easy synthetic 'Fashion-MNIST': class 0 bright on top, class 1 bright at the bottom."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.rand(n, 1, 28, 28, generator=gen) * 0.3
    x[y == 0, :, :14] += 0.6
    x[y == 1, :, 14:] += 0.6
    return x, y


@pytest.fixture()
def referee(tmp_cache):
    x, y = two_class_data()
    train, test = (x[:384], y[:384]), (x[384:], y[384:])
    ref = Referee.fashion_mnist(train, test, n_train=300, epochs=1, n_eval=100, seed=0,
                                min_class_share=0.3)
    untrained = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    ref.calibrate(train[0], untrained, seed=1)
    return ref, train, test, untrained


def test_referee_uses_the_cached_classifier_and_the_floor_and_ceiling_written_out(referee):
    ref, train, test, untrained = referee
    clf, acc, hit = fashion_classifier((train[0][:300], train[1][:300]), test, epochs=1, seed=0)
    assert hit and not ref.cached and ref.accuracy == acc  # one cache entry: the same key
    assert all(torch.equal(p, q) for p, q in zip(clf.parameters(), ref.classifier.parameters()))
    fid = ClassifierFID(ClassifierFeatures(clf), test[0][:100])
    floor_images = train[0][torch.randperm(384, generator=torch.Generator().manual_seed(1))[:100]]
    assert ref.floor == fid(floor_images) and ref.ceiling == fid(untrained)
    assert ref.calibration() == {"classifier_test_accuracy": acc, "fid_floor": ref.floor,
                                 "fid_ceiling": ref.ceiling, "n_eval": 100}
    assert ref.fid_norm(ref.floor) == 0.0 and ref.fid_norm(ref.ceiling) == 1.0
    assert 0 < ref.floor < ref.ceiling
    assert ref.num_features == clf.num_features == 64


def test_referee_judge_equals_the_metrics_it_is_made_of(referee):
    ref, train, test, untrained = referee
    images, labels = test[0][:90], test[1][:90]
    logits = predict_logits(ref.classifier, images)
    score = ClassifierFID(ClassifierFeatures(ref.classifier), test[0][:100])(images)
    want = {"fid": score, "fid_norm": (score - ref.floor) / (ref.ceiling - ref.floor),
            "inception_score": inception_score(logits),
            "class_coverage": class_coverage(logits.argmax(1), min_fraction=0.3),
            "label_agreement": (logits.argmax(1) == labels).float().mean().item()}
    assert ref.judge(images, labels) == want
    assert ref.judge(images) == {k: v for k, v in want.items() if k != "label_agreement"}
    assert want["label_agreement"] > 0.9 and ref.label_agreement(images, 1 - labels) < 0.1
    assert ref.fid(images) == score and torch.equal(ref.predict(images), logits.argmax(1))
    assert ref.inception_score(images) == want["inception_score"]
    few_zeros = torch.cat([images[labels == 0][:5], images[labels == 1][:20]])  # class 0: 20 %
    assert ref.class_coverage(images) == 2 and ref.class_coverage(few_zeros) == 1  # share 0.3


def test_intra_fid_is_the_mean_of_each_class_against_its_own_test_images(referee):
    ref, train, test, _ = referee
    images, labels = train[0][:200], train[1][:200]
    features = ClassifierFeatures(ref.classifier)
    per_class = [ClassifierFID(features, test[0][test[1] == c])(images[labels == c]) for c in (0, 1)]
    assert ref.intra_fid(images, labels) == pytest.approx(sum(per_class) / 2, rel=1e-12)
    assert ref.intra_fid(images, labels) < ref.intra_fid(images, 1 - labels)  # swapped classes


def test_an_uncalibrated_referee_has_no_normalised_fid():
    x, y = two_class_data(64)
    ref = Referee(FashionCNN((4, 8), 16), (x, y), 32)
    with pytest.raises(RuntimeError, match="calibrate"):
        ref.judge(x[:8])
