"""Chapter 01: the hand-written forward/backward passes and SGD, against autograd and torch.optim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aigc_utils import basics
from conftest import notebook_parameters

pytestmark = pytest.mark.usefixtures("one_thread")
STEM = "01_deep_learning_basics"


def copy_into_nn(net: basics.ManualMLP) -> torch.nn.Sequential:
    """An ``nn`` MLP with the manual net's weights (``nn.Linear`` stores ``W`` transposed)."""
    model = basics.make_mlp([net.W[0].shape[0], *[w.shape[1] for w in net.W]]).to(net.W[0].dtype)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, W, b in zip(linears, net.W, net.b):
            lin.weight.copy_(W.T)
            lin.bias.copy_(b)
    return model


def test_gradient_check_passes_in_float64():
    assert basics.gradient_check([20, 16, 8, 5], batch=7, seed=1) < 1e-10


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    real = basics.backward

    def broken(net, cache, grad_logits):  # a 1 % error in every weight gradient
        dW, db = real(net, cache, grad_logits)
        return [w * 1.01 for w in dW], db

    monkeypatch.setattr(basics, "backward", broken)
    assert basics.gradient_check([20, 16, 5], batch=7) > 1e-3


def test_softmax_cross_entropy_and_its_gradient_match_autograd():
    logits = (torch.randn(6, 4, dtype=torch.float64) * 50).requires_grad_(True)  # large: needs the max-shift
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss, grad = basics.softmax_cross_entropy(logits.detach(), y)
    reference = F.cross_entropy(logits, y)
    assert torch.isfinite(loss) and torch.isclose(loss, reference)
    assert torch.allclose(grad, torch.autograd.grad(reference, logits)[0])


def test_manual_forward_is_the_nn_mlp():
    net = basics.ManualMLP.init([12, 7, 5, 3], torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(9, 3, 4, dtype=torch.float64)  # images are flattened by both
    logits, cache = basics.forward(net, x.flatten(1))
    assert torch.allclose(logits, copy_into_nn(net)(x))
    assert torch.equal(net(x), logits) and [tuple(h.shape) for h in cache] == [(9, 12), (9, 7), (9, 5)]


def test_hand_written_sgd_is_torch_sgd_step_for_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 2, 3, generator=gen, dtype=torch.float64)
    y = (x.flatten(1).sum(1) > 0).long()
    net = basics.ManualMLP.init([6, 16, 2], gen, dtype=torch.float64)
    model = copy_into_nn(net)
    manual = basics.train_manual_sgd(net, (x, y), (x, y), 2, 0.3, 32,
                                     torch.Generator().manual_seed(5))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    auto = basics.train_mlp(model, opt, (x, y), (x, y), 2, 32, torch.Generator().manual_seed(5))
    assert len(manual["loss"]) == 14 and manual.evals["step"] == [7.0, 14.0]  # ceil(200/32) per epoch
    assert manual["loss"] == pytest.approx(auto["loss"], rel=1e-9)
    assert torch.allclose(net.W[0], model[1].weight.T.detach())
    assert manual["val_acc"] == pytest.approx(auto["val_acc"]) and auto["val_acc"][-1] > 0.85  # chance: 0.5
    assert manual["val_acc"][-1] == basics.evaluate(net, x, y)[1]


def test_evaluate_is_mean_cross_entropy_and_accuracy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, 2))
        model[1].bias.zero_()
    x, y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 2])
    loss, acc = basics.evaluate(model, x, y)
    assert acc == pytest.approx(2 / 3)
    logits = x @ torch.eye(3, 2).T
    hand = -(logits.log_softmax(1)[torch.arange(3), y]).mean()
    assert loss == pytest.approx(hand.item())


def test_gpu_profile_models_take_one_step_on_the_cpu():
    params = notebook_parameters(STEM)
    cfg, lr = params["SIZES"]["gpu"], params["LR"]
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    for hidden, dropout in ((cfg["hidden"], 0.0), (cfg["overfit_hidden"], lr["dropout"])):
        torch.manual_seed(0)
        model = basics.make_mlp([784, *hidden, 10], dropout=dropout)
        before = basics.evaluate(model, x, y)[0]
        opt = torch.optim.AdamW(model.parameters(), lr=lr["adam"], weight_decay=lr["weight_decay"])
        h = basics.train_mlp(model, opt, (x, y), (x, y), 1, 2, torch.Generator().manual_seed(0))
        assert len(h["loss"]) == 1 and h["train_loss"][0] < before
    net = basics.ManualMLP.init(params["MANUAL_SIZES"], torch.Generator().manual_seed(0))
    h = basics.train_manual_sgd(net, (x, y), (x, y), 1, lr["manual_sgd"], 2, torch.Generator())
    assert h["val_loss"][0] < h["loss"][0]


def test_train_mlp_trains_in_train_mode_and_evaluates_in_eval_mode():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 6, generator=gen), torch.randint(0, 2, (100,), generator=gen)
    model = basics.make_mlp([6, 8, 2], dropout=0.5)
    modes = []
    model.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    basics.train_mlp(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), (x, y), 2, 32, gen)
    epoch = [True] * 4 + [False] * 2  # ceil(100 / 32) training steps, then the train and val evaluations
    assert modes == epoch * 2
