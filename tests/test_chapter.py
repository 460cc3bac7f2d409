"""The chapter set-up call, its recorded (and glued) metrics, and showing source on the page."""

import inspect
import json

import numpy as np
import pytest
import torch

from aigc_utils.core import chapter, display, network
from aigc_utils.core.results import QualityBarFailed

SIZES = {"smoke": {"steps": 2}, "cpu": {"steps": 20}, "gpu": {"steps": 200}}
BARS = {"smoke": ["acc >= 0.5"], "cpu": ["acc >= 0.9"], "gpu": ["acc >= 0.95"]}


def test_setup_picks_the_profile_row_and_seeds(monkeypatch, capsys):
    monkeypatch.setenv("AIGC_OFFLINE", "1")
    ch = chapter.setup_chapter("97_demo", "smoke", 5, SIZES, BARS)
    assert ch.cfg == {"steps": 2} and ch.bars == ["acc >= 0.5"] and ch.profile.name == "smoke"
    first = torch.randn(3)
    chapter.setup_chapter("97_demo", "cpu", 5, SIZES, BARS)
    assert torch.equal(first, (torch.manual_seed(5), torch.randn(3))[1])  # seeded with the chapter's seed
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("97_demo: profile smoke (budget 60 s)") and "offline" in lines[0]
    assert network.socket.socket.connect is network._guarded_connect  # offline: the guard is on


def test_unknown_profile_fails_in_one_line():
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        chapter.setup_chapter("97_demo", "fast", 0, SIZES, BARS)


def test_record_glues_and_results_assert_the_bars(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    glued = {}
    monkeypatch.setattr(chapter, "glue", lambda name, value: glued.__setitem__(name, value))
    ch = chapter.setup_chapter("97_demo", "smoke", 0, SIZES, BARS)
    ch.record(acc=torch.tensor(0.75), flag=True, ratio=np.float64(1.5))
    assert glued == {"acc": 0.75, "flag": 1, "ratio": 1.5} and ch.metrics == glued
    assert type(glued["ratio"]) is float  # MyST-NB formats plain numbers, not NumPy scalars
    ch.results()
    assert json.loads((tmp_path / "97_demo.json").read_text())["acc"] == 0.75
    ch.record(acc=0.25)
    with pytest.raises(QualityBarFailed, match="acc >= 0.5"):
        ch.results()
    with pytest.raises(TypeError, match="must be a number"):
        ch.record(acc="high")


def test_show_source_renders_the_real_source(monkeypatch):
    import IPython.display

    text = display.source_of(chapter.setup_chapter, chapter.glue)
    assert text == inspect.getsource(chapter.setup_chapter).rstrip() + "\n\n" + inspect.getsource(chapter.glue).rstrip()
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    display.show_source(chapter.glue)
    source = inspect.getsource(chapter.glue).rstrip()
    doc = inspect.getdoc(chapter.glue)
    code = source.replace(f'    """{doc}"""\n', "")  # the docstring is prose above the code
    assert code != source and shown[0].data.endswith(f"```python\n{code}\n```")
    assert shown[0].data.startswith("**`glue`** — Make `value` available")  # reST's ``value`` as Markdown


def test_show_source_folds_a_long_listing_and_renders_roles(monkeypatch):
    from aigc_utils.core.train import fit

    doc, code = display.split_docstring(inspect.getsource(fit))
    assert '"""' not in code and code.startswith("def fit(") and doc.startswith("Run `steps`")
    n = code.count("\n") + 1
    for limit, folded in ((n, False), (n - 1, True)):
        monkeypatch.setattr(display, "FOLD_LINES", limit)
        text = display.source_markdown(fit)
        assert code in text and ("<details>" in text) == folded
    assert display.docstring_as_markdown("Calls :func:`fit` on ``x``.\n\nMore.") == (
        "Calls `fit` on `x`.\n\nMore.")
    assert display.docstring_as_markdown("as ``{glue:text}`name``` roles") == "as `` {glue:text}`name` `` roles"


@torch.no_grad()
def _decorated(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_show_source_of_a_decorated_function_is_its_own_code():
    text = display.source_of(_decorated)
    assert text.startswith("@torch.no_grad()\ndef _decorated(") and "return x * 2" in text


def test_results_record_the_seconds_so_a_bar_can_hold_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    ch = chapter.setup_chapter("97_demo", "smoke", 0, SIZES, {"smoke": ["seconds <= 60"]})
    ch.results()
    assert 0 <= json.loads((tmp_path / "97_demo.json").read_text())["seconds"] < 5
    ch.started -= 61  # as if the chapter had run for a minute more
    with pytest.raises(QualityBarFailed, match="seconds <= 60"):
        ch.results()
