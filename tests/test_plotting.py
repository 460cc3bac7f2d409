"""The architecture diagram is drawn from the real modules and leaves the model as it found it."""

import matplotlib
import pytest
import torch
from torch import nn

from aigc_utils.core.plotting import _describe, architecture_diagram

matplotlib.use("Agg")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.ReLU(), nn.ReLU())
        self.unused = nn.Linear(3, 3)
        self.up = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down(x)
        return self.up(torch.cat([self.mid(d), d], 1))


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_boxes_follow_the_forward_pass_with_real_shapes_and_sizes():
    model, x = Tiny().train(), torch.randn(2, 1, 8, 8)
    before = model(x).detach()
    fig = architecture_diagram(model, x, skips=[("down", "up")], title="Tiny")
    heads = [t for t in _texts(fig) if "parameters)" in t]
    assert heads == ["down  →  4×4×4   (40 parameters)", "mid  →  4×4×4   (148 parameters)",
                     "up  →  1×8×8   (129 parameters)"]  # `unused` is never called: no box
    assert "Tiny: 329 parameters" in _texts(fig)  # 40 + 148 + 129 + the unused 12
    assert model.training and torch.equal(model(x).detach(), before)  # hooks removed, mode restored
    assert not any(m._forward_hooks for m in model.modules())


def test_layer_descriptions_come_from_the_configuration():
    assert _describe(nn.Conv2d(3, 8, 5, stride=2, dilation=3)) == "Conv2d 3→8 k5 s2 d3"
    assert _describe(nn.Linear(4, 7)) == "Linear 4→7"
    assert _describe(Tiny().mid) == "Conv2d 4→4 k3 d2 · ReLU ×2"


def test_unknown_names_fail_clearly():
    with pytest.raises(KeyError, match="no module named 'nope'"):
        architecture_diagram(Tiny(), torch.randn(1, 1, 8, 8), modules=["nope"])
    with pytest.raises(KeyError, match="forward pass did not call"):
        architecture_diagram(Tiny(), torch.randn(1, 1, 8, 8), skips=[("unused", "up")])


def test_alt_text_says_what_the_figure_shows():
    import matplotlib.pyplot as plt

    from aigc_utils.core.plotting import figure_alt_text

    fig, (a, b) = plt.subplots(1, 2)
    fig.suptitle("training")
    a.set_title("loss")
    a.set_xlabel("step")
    a.set_ylabel("nats")
    b.set_xlabel("epoch")
    assert figure_alt_text(fig) == "Figure: training; loss (nats against step); epoch"
    assert figure_alt_text(plt.figure()) == "Figure: figure of 0 panels"
    diagram = architecture_diagram(Tiny(), torch.randn(1, 1, 8, 8), title="Tiny")
    assert figure_alt_text(diagram).startswith("Figure: architecture of Tiny: 329 parameters")
    assert figure_alt_text(diagram).endswith("call order: down, mid, up")


def test_in_ipython_every_figure_carries_its_alt_text():
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    from aigc_utils.core.plotting import use_book_style

    shell = InteractiveShell.instance()
    use_book_style()
    fig = Figure()
    fig.add_subplot().set_title("a title")
    data, meta = shell.display_formatter.format(fig)
    assert "image/png" in data and meta["image/png"]["alt"] == "Figure: a title"
