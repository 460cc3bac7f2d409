"""Chapter 10's diffusion model: the forward process, the schedules, the loss, the U-Net, the samplers,
the gpu profile on the CPU."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from aigc_utils import diffusion as dm
from aigc_utils.diffusion import UNet, UNetConfig


def test_schedule_endpoints():
    lin, cos = dm.linear_alpha_bar(1000), dm.cosine_alpha_bar(1000)
    assert len(lin) == len(cos) == 1001 and lin[0] == cos[0] == 1.0
    # linear: prod(1 - beta) with beta from 1e-4 to 0.02, by hand in float64
    by_hand = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(1000))
    assert lin[-1].item() == pytest.approx(by_hand, rel=1e-9) and 4.0e-5 < by_hand < 4.1e-5
    # cosine: f(t)/f(0) away from the clipped end, and (near) pure noise at T
    def f(t: int) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    assert cos[500].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    assert cos[-1].item() < 1e-6 and torch.all(cos[1:] < cos[:-1])
    assert dm.snr(cos)[1:].diff().lt(0).all()


def test_closed_form_forward_process_matches_iterating_one_step():
    """q(x_t|x_0) in one jump has the mean and variance of t one-step updates x ← √(1-β) x + √β ε."""
    ab = dm.cosine_alpha_bar(50)
    betas = 1 - ab[1:] / ab[:-1]
    x0 = torch.tensor([0.7, -0.3])
    n = 200_000
    x = x0.double().repeat(n, 1)
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 31):
        x = (1 - betas[t - 1]).sqrt() * x + betas[t - 1].sqrt() * torch.randn(x.shape, generator=gen,
                                                                           dtype=torch.float64)
    mean, var = x.mean(0), x.var(0)
    assert torch.allclose(mean, ab[30].sqrt() * x0.double(), atol=4e-3)
    assert torch.allclose(var, (1 - ab[30]).expand(2), atol=6e-3)
    # and q_sample is that closed form
    eps = torch.randn(3, 1, 2, 2)
    img = torch.rand(3, 1, 2, 2)
    t = torch.tensor([0, 30, 50])
    want = torch.stack([ab[k].sqrt() * img[i] + (1 - ab[k]).sqrt() * eps[i] for i, k in enumerate(t)])
    assert torch.allclose(dm.q_sample(img, t, ab, eps), want.float(), atol=1e-6)


class _Oracle(torch.nn.Module):
    """Returns the true v for a known (x0, eps): what a perfect network would predict."""

    num_classes = 10

    def __init__(self, x0, eps, ab):
        super().__init__()
        self.x0, self.eps, self.ab = x0, eps, ab

    def forward(self, x, t, y):
        a = self.ab[t].float().view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()  # the noise that actually produced x
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0


def test_ddim_is_deterministic_and_recovers_x0_with_the_true_noise():
    ab = dm.cosine_alpha_bar()
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    oracle = _Oracle(x0, None, ab)
    a, b = (dm.sample(oracle, ab, 4, steps, seed=3) for steps in (7, 7))
    assert torch.equal(a, b)
    assert torch.allclose(a, (x0 + 1) / 2, atol=1e-4)
    # one DDIM step with the true eps lands exactly on q's mean path
    eps = torch.randn_like(x0)
    x_t = dm.q_sample(x0, torch.full((4,), 600), ab, eps)
    x_s = dm.ddim_step(x_t, x0, eps, ab[200].item())
    assert torch.allclose(x_s, dm.q_sample(x0, torch.full((4,), 200), ab, eps), atol=1e-5)
    # DDPM draws fresh noise on the way, so its path depends on the seed
    c = dm.sample(UNet(UNetConfig(channels=(8, 8))), ab, 2, 3, method="ddpm", seed=1)
    d = dm.sample(UNet(UNetConfig(channels=(8, 8))), ab, 2, 3, method="ddpm", seed=2)
    assert not torch.equal(c, d)


def test_loss_against_a_hand_computation():
    ab = dm.cosine_alpha_bar(100)
    x0 = torch.rand(5, 1, 28, 28) * 2 - 1
    y = torch.arange(5)
    model = UNet(UNetConfig(channels=(8, 16)))
    loss = dm.diffusion_loss(model, x0, y, torch.Generator().manual_seed(7), ab, p_uncond=0.5,
                             gamma=5.0)
    gen = torch.Generator().manual_seed(7)  # replay the same draws, in the same order
    t = torch.randint(1, 101, (5,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    drop = torch.rand(5, generator=gen) < 0.5
    y_used = torch.where(drop, torch.tensor(10), y)
    total = 0.0
    for i in range(5):
        a = ab[t[i]].item()
        x_t = math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i]
        v = math.sqrt(a) * eps[i] - math.sqrt(1 - a) * x0[i]
        w = min(a / (1 - a), 5.0) / (a / (1 - a) + 1)
        pred = model(x_t[None], t[i : i + 1], y_used[i : i + 1])[0]
        total += w * ((pred - v) ** 2).mean().item()
    assert loss.item() == pytest.approx(total / 5, rel=1e-4)


def test_flow_matching_loss_against_a_hand_computation():
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    y = torch.arange(4)
    model = UNet(UNetConfig(channels=(8, 16)))
    loss = dm.flow_matching_loss(model, x0, y, torch.Generator().manual_seed(3), p_uncond=0.5)
    gen = torch.Generator().manual_seed(3)  # replay: t (logit-normal), noise, label dropout
    t = 1 / (1 + torch.exp(-torch.randn(4, generator=gen)))
    eps = torch.randn(x0.shape, generator=gen)
    y_used = torch.where(torch.rand(4, generator=gen) < 0.5, torch.tensor(10), y)
    total = 0.0
    for i in range(4):
        x_t = (1 - t[i]) * x0[i] + t[i] * eps[i]
        pred = model(x_t[None], 1000 * t[i : i + 1], y_used[i : i + 1])[0]
        total += ((pred - (eps[i] - x0[i])) ** 2).mean().item()
    assert loss.item() == pytest.approx(total / 4, rel=1e-4)


class _FlowOracle(torch.nn.Module):
    """The exact velocity field of a flow whose data is the single image batch ``x0``."""

    num_classes = 10

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, y):
        t = (t / dm.FLOW_TIME_SCALE).view(-1, 1, 1, 1)
        return (x - self.x0) / t  # on x_t = (1 - t) x0 + t eps, u = eps - x0 = (x_t - x0) / t


def test_euler_on_a_straight_path_is_exact_in_any_number_of_steps():
    x0 = torch.rand(3, 1, 28, 28) * 2 - 1
    for steps in (1, 4):
        out = dm.sample(_FlowOracle(x0), None, 3, steps, method="euler", seed=5)
        assert torch.allclose(out, (x0 + 1) / 2, atol=1e-5)
    eps = torch.randn_like(x0)
    x_t = 0.3 * x0 + 0.7 * eps
    assert torch.allclose(dm.euler_step(x_t, eps - x0, 0.7, 0.2), 0.8 * x0 + 0.2 * eps, atol=1e-6)
    with pytest.raises(ValueError, match="unknown sampler"):
        dm.sample(_FlowOracle(x0), None, 3, 2, method="heun")


def test_unet_shape_and_time_and_label_sensitivity():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(16, 32)))
    x = torch.randn(3, 1, 28, 28)
    y = torch.tensor([1, 2, 10])
    out = model(x, torch.tensor([5, 5, 5]), y)
    assert out.shape == x.shape
    later = model(x, torch.tensor([900, 900, 900]), y)
    assert (out - later).abs().mean() > 1e-3, "the time embedding must change the prediction"
    other = model(x, torch.tensor([5, 5, 5]), torch.tensor([3, 4, 10]))
    assert torch.allclose(out[2], other[2]) and not torch.allclose(out[0], other[0])
    emb = dm.timestep_embedding(torch.tensor([0, 1]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0].item() == pytest.approx(math.cos(1.0))


def test_guidance_mixes_conditional_and_unconditional_predictions():
    ab = dm.cosine_alpha_bar()
    model = UNet(UNetConfig(channels=(8, 8)))
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 1])
    x0_c, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=1.0)
    x0_u, _ = dm.predict_x0_eps(model, x, 400, torch.full_like(y, 10), ab[400].item(), guidance=1.0)
    x0_0, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=0.0)
    x0_1, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=1.0 + 1e-9)
    assert torch.allclose(x0_0, x0_u, atol=1e-5) and torch.allclose(x0_1, x0_c, atol=1e-5)


def test_gpu_profile_model_takes_one_step_on_cpu(one_thread):
    sizes = dm.SIZES["gpu"]
    model = UNet(UNetConfig(channels=sizes["channels"]))
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    v_loss = partial(dm.diffusion_loss, alpha_bar=dm.cosine_alpha_bar())
    for loss, method in ((v_loss, "ddim"), (dm.flow_matching_loss, "euler")):
        ema, hist = dm.train_diffusion(model, images, labels, loss, steps=1, batch_size=2,
                                       lr=sizes["lr"], progress=False)
        assert math.isfinite(hist["loss"][0])
        out = dm.sample(ema, dm.cosine_alpha_bar(), 2, 2, method=method, labels=torch.tensor([0, 1]))
        assert out.shape == (2, 1, 28, 28)
    assert set(sizes) == set(dm.SIZES["cpu"]) == set(dm.SIZES["smoke"])


def test_chapter10_finds_the_gan_chapter03_shares(tmp_path, monkeypatch):
    """Chapter 03 caches its trained generator under `generator_key`; chapter 10 loads that one and
    never trains its fallback when it is there."""
    from aigc_utils import dcgan

    monkeypatch.setenv("AIGC_CACHE", str(tmp_path))
    G, _ = dcgan.build_dcgan(dcgan.DCGANConfig(), seed=3)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.5)  # weights no fresh build has
    dcgan.share_generator(G, dcgan.generator_key(dcgan.DCGANConfig(), 1800, 64, 5e-4, 0), 12.5)
    images = torch.zeros(4, 1, 28, 28)
    loaded, info, hit = dm.chapter03_gan(images, 1800, fallback_steps=1, batch_size=64, seed=0)
    assert hit and info == {"steps": 1800, "train_seconds": 12.5}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))
