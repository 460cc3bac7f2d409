"""Chapter 10's diffusion model (generated from notebooks/10_diffusion.ipynb): the forward process, the
schedules, the losses, the U-Net, the DDPM posterior, the EMA, the samplers and guidance, the gpu
profile on the CPU, and chapter 03's GAN as the opponent."""

from __future__ import annotations

import copy
import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import notebook_parameters

from aigc_utils import diffusion as dm
from aigc_utils.diffusion import UNet, UNetConfig

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "10_diffusion.ipynb"


def output_moves_with_t_and_y(model: torch.nn.Module, seed: int = 0) -> tuple[float, float]:
    """Mean change of the output when only the step t changes, and when only the label y changes."""
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        base = model(x, torch.tensor([100, 100]), torch.tensor([1, 2]))
        by_t = (model(x, torch.tensor([700, 700]), torch.tensor([1, 2])) - base).abs().mean().item()
        by_y = (model(x, torch.tensor([100, 100]), torch.tensor([5, 10])) - base).abs().mean().item()
    return by_t, by_y


def seeing_unet(seed: int = 0) -> UNet:
    """A small U-Net whose output demonstrably moves with t and y (asserted)."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(channels=(16, 32))).eval()
    by_t, by_y = output_moves_with_t_and_y(model, seed)
    assert by_t > 1e-3 and by_y > 1e-3, "this test network must see its conditioning"
    return model


def test_at_eight_channels_groupnorm_erases_a_bias_but_not_scale_and_shift():
    """With 8 channels in 8 groups each channel is its own group: GroupNorm subtracts the per-channel
    bias that carries t and y, so the bias-form network ignores both; scale-and-shift after the
    normalisation survives it."""
    torch.manual_seed(0)
    by_t, by_y = output_moves_with_t_and_y(UNet(UNetConfig(channels=(8, 8), scale_shift=False)).eval())
    assert by_t < 1e-5 and by_y < 1e-5
    torch.manual_seed(0)
    by_t, by_y = output_moves_with_t_and_y(UNet(UNetConfig(channels=(8, 8))).eval())
    assert by_t > 1e-3 and by_y > 1e-3


def test_scale_shift_block_is_the_formula_written_out():
    """(1 + scale) * GroupNorm(h) + shift, scale and shift the two halves of the embedding's projection."""
    torch.manual_seed(0)
    block = dm.ResBlock(16, 16, emb_dim=8).eval()
    x, emb = torch.randn(2, 16, 7, 7), torch.randn(2, 8)
    with torch.no_grad():
        h = block.conv1(F.silu(block.norm1(x)))
        e = emb @ block.emb.weight.T + block.emb.bias
        scale, shift = e[:, :16, None, None], e[:, 16:, None, None]
        want = x + block.conv2(F.silu(F.group_norm(h, 8, block.norm2.weight, block.norm2.bias)
                                      * (1 + scale) + shift))
        assert torch.allclose(block(x, emb), want, atol=1e-5)


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
    # DDPM draws fresh noise on the way, so its path depends on the seed (and only on it), with a
    # network that sees t and y
    model = seeing_unet()
    c, c_again, d = (dm.sample(model, ab, 2, 3, method="ddpm", labels=torch.tensor([0, 1]), seed=s)
                     for s in (1, 1, 2))
    assert torch.equal(c, c_again) and not torch.equal(c, d)


@pytest.mark.parametrize("gamma", [5.0, None])
def test_loss_against_a_hand_computation(gamma):
    ab = dm.cosine_alpha_bar(100)
    x0 = torch.rand(5, 1, 28, 28) * 2 - 1
    y = torch.arange(5)
    model = seeing_unet()
    loss = dm.diffusion_loss(model, x0, y, torch.Generator().manual_seed(7), ab, p_uncond=0.5,
                             gamma=gamma)
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
        w = 1.0 if gamma is None else min(a / (1 - a), gamma) / (a / (1 - a) + 1)
        pred = model(x_t[None], t[i : i + 1], y_used[i : i + 1])[0]
        total += w * ((pred - v) ** 2).mean().item()
    assert loss.item() == pytest.approx(total / 5, rel=1e-4)


def test_flow_matching_loss_against_a_hand_computation():
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    y = torch.arange(4)
    model = seeing_unet()
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
    model = seeing_unet()
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 1])
    x0_c, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=1.0)
    x0_u, _ = dm.predict_x0_eps(model, x, 400, torch.full_like(y, 10), ab[400].item(), guidance=1.0)
    x0_0, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=0.0)
    x0_1, _ = dm.predict_x0_eps(model, x, 400, y, ab[400].item(), guidance=1.0 + 1e-9)
    assert not torch.allclose(x0_c, x0_u, atol=1e-3), "the label must matter, or this test proves nothing"
    assert torch.allclose(x0_0, x0_u, atol=1e-5) and torch.allclose(x0_1, x0_c, atol=1e-5)
    # w = 3, written out: v_null + 3 (v_y - v_null)
    with torch.no_grad():
        tt = torch.full((2,), 400.0)
        v_y, v_null = model(x, tt, y), model(x, tt, torch.full_like(y, 10))
        assert torch.allclose(dm.guided(model, x, 400, y, 3.0), v_null + 3 * (v_y - v_null), atol=1e-5)


def test_ddpm_posterior_mean_and_variance_match_the_closed_form():
    """Ho et al. (2020), eq. 7: q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t) with
    μ̃_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t) x_0 + √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) x_t,
    β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t."""
    gen = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(3, 1, 4, 4, generator=gen), torch.randn(3, 1, 4, 4, generator=gen)
    for ab in (dm.cosine_alpha_bar(), dm.linear_alpha_bar()):
        for t in (2, 10, 300, 700, 1000):
            a_t, a_prev = ab[t].item(), ab[t - 1].item()
            beta = 1 - a_t / a_prev  # the schedule's β_t
            mu = ((math.sqrt(a_prev) * beta / (1 - a_t)) * x0
                  + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x_t)  # √α_t = √(1 - β_t)
            var = (1 - a_prev) / (1 - a_t) * beta
            mean, variance = dm.ddpm_posterior(x_t, x0, a_t, a_prev)
            assert torch.allclose(mean, mu, atol=1e-5, rtol=1e-5)
            assert variance == pytest.approx(var, rel=1e-9)
            # the step is that Gaussian: the mean plus √β̃ times the generator's next normal draw
            step = dm.ddpm_step(x_t, x0, a_t, a_prev, torch.Generator().manual_seed(t))
            z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
            assert torch.allclose(step, mu + math.sqrt(var) * z, atol=1e-5, rtol=1e-5)
    # a respaced step t -> s < t - 1 keeps the marginal: if x_t ~ q(x_t|x_0), the draw is ~ q(x_s|x_0)
    ab = dm.cosine_alpha_bar()
    for t, s in ((1000, 800), (600, 400), (200, 1)):
        a_t, a_s = ab[t].item(), ab[s].item()
        c_x0 = dm.ddpm_posterior(torch.zeros(1), torch.ones(1), a_t, a_s)[0].item()
        c_xt, var = dm.ddpm_posterior(torch.ones(1), torch.zeros(1), a_t, a_s)
        assert c_x0 + c_xt.item() * math.sqrt(a_t) == pytest.approx(math.sqrt(a_s), rel=1e-6)
        assert c_xt.item() ** 2 * (1 - a_t) + var == pytest.approx(1 - a_s, rel=1e-6)
    # the last step (s = 0) returns the mean, no noise: the estimate of x0
    assert torch.allclose(dm.ddpm_step(x_t, x0, ab[50].item(), 1.0, gen), x0, atol=1e-6)


def test_ema_update_direction_and_size():
    """ema ← d·ema + (1 - d)·θ, with d warmed up as min(decay, (1 + i) / (10 + i)) after step i."""
    ema, theta = torch.nn.ParameterList([torch.full((3,), 2.0)]), torch.nn.ParameterList([-torch.ones(3)])
    dm.update_ema(ema, theta, 0.9)
    assert torch.allclose(ema[0], torch.full((3,), 0.9 * 2.0 + 0.1 * -1.0))
    assert torch.equal(theta[0], -torch.ones(3))  # the trained weights are left alone
    assert [dm.ema_decay_at(i, 0.995) for i in (0, 10, 10_000)] == [0.1, 11 / 20, 0.995]
    # and train_diffusion applies it after each step, to the weights that step produced
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(16, 32)))
    theta0 = copy.deepcopy(model.state_dict())
    seen = []

    def loss(m, x0, y, gen):
        seen.append(copy.deepcopy(m.state_dict()))  # the weights before this step's update
        return dm.flow_matching_loss(m, x0, y, gen)

    ema_model, _ = dm.train_diffusion(model, torch.rand(8, 1, 28, 28), torch.arange(8) % 10, loss,
                                      steps=2, batch_size=4, lr=1e-2, progress=False)
    theta1, theta2 = seen[1], model.state_dict()
    d0, d1 = 0.1, 2 / 11
    for name, got in ema_model.state_dict().items():
        want = d1 * (d0 * theta0[name] + (1 - d0) * theta1[name]) + (1 - d1) * theta2[name]
        assert torch.allclose(got, want, atol=1e-6), name
    assert not torch.allclose(theta2["head.2.weight"], theta0["head.2.weight"])  # it did train


@pytest.mark.parametrize("method, guidance", [("ddim", 2.0), ("ddpm", 1.0), ("euler", 2.0)])
def test_the_samplers_first_step_from_pure_noise_is_the_formula_written_out(method, guidance):
    ab_t = dm.cosine_alpha_bar()
    model = seeing_unet()
    y, null = torch.tensor([3, 8]), torch.tensor([10, 10])
    _, traj = dm.sample(model, None if method == "euler" else ab_t, 2, 4, method=method, labels=y,
                        guidance=guidance, seed=11, trajectory=True)
    gen = torch.Generator().manual_seed(11)
    x_T = torch.randn(2, 1, 28, 28, generator=gen)  # pure noise

    def net(t: float) -> torch.Tensor:  # the (guided) network output at time t, written out
        with torch.no_grad():
            out_y = model(x_T, torch.full((2,), t), y)
            out_null = model(x_T, torch.full((2,), t), null)
        return out_null + guidance * (out_y - out_null)

    s, x_s, x0_hat = traj[0]
    if method == "euler":  # flow time 1 → 0.75
        u = net(1000.0)
        assert s == pytest.approx(0.75)
        assert torch.allclose(x_s, x_T + (0.75 - 1.0) * u, atol=1e-5)
        assert torch.allclose(x0_hat, (x_T - u).clamp(-1, 1), atol=1e-5)
        return
    a, a_s = ab_t[1000].item(), ab_t[750].item()  # step T = 1000 → 750
    v = net(1000.0)
    x0 = (math.sqrt(a) * x_T - math.sqrt(1 - a) * v).clamp(-1, 1)
    eps = math.sqrt(1 - a) * x_T + math.sqrt(a) * v
    if method == "ddim":
        want = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * eps
    else:
        beta = 1 - a / a_s
        mean = (math.sqrt(a_s) * beta * x0 + math.sqrt(1 - beta) * (1 - a_s) * x_T) / (1 - a)
        want = mean + math.sqrt((1 - a_s) / (1 - a) * beta) * torch.randn(x_T.shape, generator=gen)
    assert s == 750
    assert torch.allclose(x0_hat, x0, atol=1e-5)
    assert torch.allclose(x_s, want, atol=1e-5)


def test_gpu_profile_model_takes_one_step_on_cpu(one_thread):
    sizes_table = notebook_parameters("10_diffusion")["SIZES"]
    sizes = sizes_table["gpu"]
    model = UNet(UNetConfig(channels=sizes["channels"]))
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    v_loss = partial(dm.diffusion_loss, alpha_bar=dm.cosine_alpha_bar())
    for loss, method in ((v_loss, "ddim"), (dm.flow_matching_loss, "euler")):
        ema, hist = dm.train_diffusion(model, images, labels, loss, steps=1, batch_size=2,
                                       lr=sizes["lr"], progress=False)
        assert math.isfinite(hist["loss"][0])
        out = dm.sample(ema, dm.cosine_alpha_bar(), 2, 2, method=method, labels=torch.tensor([0, 1]))
        assert out.shape == (2, 1, 28, 28)
    assert set(sizes) == set(sizes_table["cpu"]) == set(sizes_table["smoke"])


def test_chapter10_finds_the_gan_chapter03_shares(tmp_path, monkeypatch):
    """Chapter 03 caches its trained generator under `generator_key`; chapter 10 asks chapter 03's own
    `trained_generator` for it (no config or learning rate re-typed), which loads that one and never
    trains its fallback when it is there."""
    from aigc_utils import dcgan

    monkeypatch.setenv("AIGC_CACHE", str(tmp_path))
    cfg, sizes = dcgan.dcgan_config(), dcgan.SIZES["cpu"]
    G, _ = dcgan.build_dcgan(cfg, seed=3)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(0.5)  # weights no fresh build has
    key = dcgan.generator_key(cfg, sizes["steps_uncond"], sizes["batch"], dcgan.LR, 0)
    dcgan.share_generator(G, key, 12.5)  # what chapter 03's page does after training
    images = torch.zeros(4, 1, 28, 28)
    loaded, info, hit = dcgan.trained_generator(images, "cpu", fallback_steps=1, seed=0)
    assert hit and info == {"steps": sizes["steps_uncond"], "train_seconds": 12.5}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))
    # the conditional GAN of chapter 03's section 6, shared the same way
    ccfg = dcgan.dcgan_config(10)
    cG, _ = dcgan.build_dcgan(ccfg, seed=3)
    ckey = dcgan.generator_key(ccfg, sizes["steps_cond"], sizes["batch"], dcgan.LR, 0,
                               r1=dcgan.COND_R1, class_weight=dcgan.COND_CLASS_WEIGHT)
    dcgan.share_generator(cG, ckey, 7.5)
    labels = torch.zeros(4, dtype=torch.long)
    loaded, info, hit = dcgan.trained_generator(images, "cpu", labels=labels, fallback_steps=1, seed=0)
    assert hit and info == {"steps": sizes["steps_cond"], "train_seconds": 7.5}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), cG.state_dict().values()))
    # and that is the call chapter 10's page makes, with no chapter 03 setting typed on the page
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    page = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "dcgan.trained_generator(x_train, ch.profile.name," in page
    assert "dcgan.fashion_referee(ch.profile.name," in page
    assert "DCGANConfig(" not in page and "5e-4" not in page and "dcgan.SIZES" not in page
