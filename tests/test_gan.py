"""The GAN objective and step against closed forms and torch's binary cross-entropy."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aigc_utils.core import gan


def test_losses_equal_binary_cross_entropy():
    torch.manual_seed(0)
    real, fake = torch.randn(32) * 3, torch.randn(32) * 3
    d_ref = F.binary_cross_entropy_with_logits(real, torch.ones(32)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros(32)
    )
    assert gan.discriminator_loss(real, fake).item() == pytest.approx(d_ref.item(), rel=1e-6)
    assert gan.gan_value(real, fake).item() == pytest.approx(-d_ref.item(), rel=1e-6)
    g_ns = F.binary_cross_entropy_with_logits(fake, torch.ones(32))
    assert gan.generator_loss(fake).item() == pytest.approx(g_ns.item(), rel=1e-6)
    g_sat = torch.log(1 - torch.sigmoid(fake)).mean()
    assert gan.generator_loss(fake, non_saturating=False).item() == pytest.approx(g_sat.item(), rel=1e-5)


def test_generator_gradients_saturate_only_for_the_minimax_loss():
    # d L / d logit = -D(G(z)) (saturating) and -(1 - D(G(z))) (non-saturating), per sample / N
    logits = torch.tensor([-8.0, 0.0, 3.0], requires_grad=True)
    d = torch.sigmoid(logits.detach())
    (g_sat,) = torch.autograd.grad(gan.generator_loss(logits, non_saturating=False), logits)
    (g_ns,) = torch.autograd.grad(gan.generator_loss(logits), logits)
    assert g_sat.tolist() == pytest.approx((-d / 3).tolist(), abs=1e-7)
    assert g_ns.tolist() == pytest.approx((-(1 - d) / 3).tolist(), abs=1e-7)
    assert abs(g_sat[0]) < 1e-3 < 0.3 < abs(g_ns[0])  # a confident D: only the non-saturating loss still pushes G


def test_weighted_fake_term_averages_over_the_weighted_positions():
    fake = torch.tensor([1.0, -2.0, 0.5, 4.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = (F.softplus(fake[0]) + F.softplus(fake[2])) / 2
    real = torch.zeros(1)
    assert (gan.discriminator_loss(real, fake, weight) - F.softplus(-real).mean()).item() == pytest.approx(
        expected.item()
    )


@pytest.mark.parametrize("joint", [False, True])
def test_gan_step_is_d_step_then_g_step_through_the_updated_d(joint):
    torch.manual_seed(1)
    G, D = nn.Linear(2, 3), nn.Linear(3, 1)
    real, z = torch.randn(8, 3), torch.randn(8, 2)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)
    out = gan.gan_step(D, real, G(z), opt_d, opt_g, joint=joint)

    # the same update written out by hand
    ref_opt_g, ref_opt_d = torch.optim.SGD(G_ref.parameters(), lr=0.1), torch.optim.SGD(D_ref.parameters(), lr=0.1)
    fake = G_ref(z)
    d_loss = gan.discriminator_loss(D_ref(real), D_ref(fake.detach()))
    ref_opt_d.zero_grad()
    d_loss.backward()
    d_grads = [p.grad.clone() for p in D_ref.parameters()]
    ref_opt_d.step()
    d_after = copy.deepcopy(D_ref.state_dict())
    g_loss = gan.generator_loss(D_ref(fake))
    ref_opt_g.zero_grad()
    g_loss.backward()
    ref_opt_g.step()

    for a, b in zip(G.parameters(), G_ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for name, p in D.state_dict().items():  # D moved only in its own step
        assert torch.allclose(p, d_after[name], atol=1e-6)
    assert out["d_loss"] == pytest.approx(d_loss.item(), rel=1e-5)
    assert out["g_loss"] == pytest.approx(g_loss.item(), rel=1e-5)
    assert all(p.requires_grad for p in D.parameters())  # unfrozen afterwards
    for p, g in zip(D.parameters(), d_grads):  # frozen during G's step: its backward left D's grads alone
        assert torch.allclose(p.grad, g, atol=1e-7)


def test_gan_step_adds_the_extra_generator_loss():
    torch.manual_seed(2)
    G, D = nn.Linear(2, 3), nn.Linear(3, 1)
    real, z = torch.randn(4, 3), torch.randn(4, 2)
    G2 = copy.deepcopy(G)
    D2 = copy.deepcopy(D)
    for g, d, extra in ((G, D, None), (G2, D2, "l1")):
        opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
        fake = g(z)
        g_extra = (fake - real).abs().mean() if extra else None
        gan.gan_step(d, real, fake, opt_d, opt_g, g_extra=g_extra, adv_weight=0.5)
    assert not torch.allclose(G.weight, G2.weight)  # the reconstruction term changed G's update


def test_joint_scoring_with_a_packed_discriminator_equals_separate_passes():
    torch.manual_seed(3)
    D = nn.Linear(6, 1)  # scores packs of two 3-d rows
    packed = lambda x: D(x.reshape(-1, 6))  # noqa: E731
    real, fake = torch.randn(8, 3), torch.randn(8, 3, requires_grad=True)
    results = []
    for joint in (True, False):
        d = copy.deepcopy(D)
        score = lambda x, d=d: d(x.reshape(-1, 6))  # noqa: E731
        opt_d = torch.optim.SGD(d.parameters(), lr=0.1)
        opt_g = torch.optim.SGD([fake], lr=0.0)
        results.append((gan.gan_step(score, real, fake, opt_d, opt_g, joint=joint), d.weight.detach().clone()))
    (a, wa), (b, wb) = results
    assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-6) and torch.allclose(wa, wb, atol=1e-7)
    assert packed(real).shape == (4, 1)


def test_r1_penalty_of_a_linear_discriminator_is_half_its_squared_weight_norm():
    D = nn.Linear(5, 1)
    real = torch.randn(7, 5, requires_grad=True)
    penalty = gan.r1_penalty(D(real).squeeze(1), real)
    assert penalty.item() == pytest.approx(0.5 * D.weight.pow(2).sum().item(), rel=1e-6)
    penalty.backward()  # create_graph: the penalty itself trains D
    assert torch.allclose(D.weight.grad, D.weight.detach(), atol=1e-6)


def test_gan_step_with_r1_and_a_class_loss_equals_the_update_written_out():
    torch.manual_seed(4)
    G, D, C = nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(3, 4)  # C: D's class head
    real, z, y = torch.randn(8, 3), torch.randn(8, 2), torch.arange(8) % 4
    G_ref, D_ref, C_ref = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(C)

    def discriminate(x):
        return D(x).squeeze(1), F.cross_entropy(C(x), y)

    opt_g = torch.optim.SGD(G.parameters(), lr=0.1)
    opt_d = torch.optim.SGD([*D.parameters(), *C.parameters()], lr=0.1)
    out = gan.gan_step(discriminate, real, G(z), opt_d, opt_g, r1=2.0)
    with pytest.raises(ValueError, match="joint scoring"):
        gan.gan_step(D, real, G(z), opt_d, opt_g, joint=True, r1=1.0)

    ref_opt_g = torch.optim.SGD(G_ref.parameters(), lr=0.1)
    ref_opt_d = torch.optim.SGD([*D_ref.parameters(), *C_ref.parameters()], lr=0.1)
    fake, x = G_ref(z), real.clone().requires_grad_(True)
    real_logits = D_ref(x).squeeze(1)
    (grad,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    d_adv = gan.discriminator_loss(real_logits, D_ref(fake.detach()).squeeze(1))
    d_total = d_adv + F.cross_entropy(C_ref(x), y) + 2.0 * 0.5 * grad.pow(2).sum(1).mean()
    ref_opt_d.zero_grad()
    d_total.backward()
    ref_opt_d.step()
    g_adv = gan.generator_loss(D_ref(fake).squeeze(1))
    ref_opt_g.zero_grad()
    (g_adv + F.cross_entropy(C_ref(fake), y)).backward()
    ref_opt_g.step()
    for a, b in zip([*G.parameters(), *D.parameters(), *C.parameters()],
                    [*G_ref.parameters(), *D_ref.parameters(), *C_ref.parameters()]):
        assert torch.allclose(a, b, atol=1e-6)
    assert out["d_loss"] == pytest.approx(d_adv.item(), rel=1e-5)  # the adversarial parts only
    assert out["g_loss"] == pytest.approx(g_adv.item(), rel=1e-5)
