import json

import pytest
import torch

from aigc_utils.core import results


def test_record_writes_metrics_and_bars(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    numbers = results.record_results("99_demo", {"acc": 0.9, "n": torch.tensor(3)}, ["acc >= 0.8", "n == 3"], "smoke", "cpu")
    assert numbers == {"acc": 0.9, "n": 3}
    record = json.loads((tmp_path / "99_demo.json").read_text())
    assert record["profile"] == "smoke" and record["acc"] == 0.9 and "torch" in record and "finished_at" in record
    assert json.loads((tmp_path / "99_demo.bars.json").read_text()) == {"acc >= 0.8": True, "n == 3": True}
    assert "[pass] acc >= 0.8" in capsys.readouterr().out


def test_failing_bar_raises_after_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    with pytest.raises(results.QualityBarFailed, match="acc >= 0.95"):
        results.record_results("99_demo", {"acc": 0.9}, ["acc >= 0.95"], "cpu", "cpu")
    assert json.loads((tmp_path / "99_demo.bars.json").read_text()) == {"acc >= 0.95": False}


def test_bars_are_expressions_over_metrics():
    assert results.evaluate_bar("a >= b + 3", {"a": 5, "b": 2})
    assert not results.evaluate_bar("abs(a - b) <= 0.1", {"a": 1.0, "b": 1.5})
    with pytest.raises(KeyError, match="not recorded"):
        results.evaluate_bar("missing > 1", {"a": 1})


def test_non_numbers_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    with pytest.raises(TypeError):
        results.record_results("99_demo", {"acc": "high"}, [], "cpu", "cpu")


def test_default_metrics_dir_is_the_books(tmp_path, monkeypatch):
    monkeypatch.delenv("AIGC_METRICS_DIR", raising=False)
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert results.metrics_dir() == tmp_path.resolve() / "_build" / "metrics"
