import torch
import torch.nn.functional as F

from aigc_utils import basics


def test_gradient_check_passes_in_float64():
    assert basics.gradient_check([20, 16, 8, 5], batch=7, seed=1) < 1e-10


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    real = basics.backward

    def broken(net, cache, grad_logits):  # forgets the ReLU mask
        dW, db = real(net, cache, grad_logits)
        return [w * 1.01 for w in dW], db

    monkeypatch.setattr(basics, "backward", broken)
    assert basics.gradient_check([20, 16, 5], batch=7) > 1e-3


def test_softmax_cross_entropy_matches_torch():
    logits, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    loss, _ = basics.softmax_cross_entropy(logits * 50, y)  # large logits: the max-shift keeps it finite
    assert torch.isclose(loss, F.cross_entropy(logits * 50, y))


def test_manual_and_nn_mlp_have_the_same_size():
    net = basics.ManualMLP.init([784, 32, 10], torch.Generator().manual_seed(0))
    model = basics.make_mlp([784, 32, 10])
    assert net.num_parameters() == sum(p.numel() for p in model.parameters())


def test_manual_sgd_learns_a_separable_problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1, 2, 2, generator=gen)
    y = (x.flatten(1).sum(1) > 0).long()
    net = basics.ManualMLP.init([4, 16, 2], gen)
    losses = basics.train_manual_sgd(net, x, y, epochs=20, lr=0.5, batch_size=64, generator=gen)
    assert losses[-1] < losses[0] / 3
    assert basics.accuracy(basics.forward(net, x.flatten(1))[0], y) > 0.9
