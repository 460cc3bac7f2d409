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


def test_the_results_table_shows_each_claim_with_its_values():
    table = results.ResultsTable("cpu on cpu", {"fid": 0.0491, "n": 10, "modes": 8.0, "big": 1234.0},
                                 {"fid <= 0.06": True, "modes >= n": False, "n == 10": True})
    assert table.measured("fid <= 0.06") == "0.0491 ≤ 0.06" and table.measured("modes >= n") == "8 ≥ 10"
    page = table._repr_html_()
    assert "✓ holds" in page and "✗ FAILS" in page and "<summary>All 4 metrics" in page
    assert ">1,234<" in page and ">8<" in page  # counts as integers, not 8.0
    assert results.shown_number(50279.84) == "50,280" and results.shown_number(8.5e-06) == "8.5e-06"
    assert "[FAIL] modes >= n" in repr(table) and "  n      10" in repr(table)


def test_the_dashboard_margins_use_the_same_sides():
    from aigc_utils import book

    margins = book.bar_margins({"a <= 0.5": True, "b >= c + 1": False, "x == 0": True},
                               {"a": 0.25, "b": 2, "c": 2, "x": 0, "profile": "cpu"})
    assert margins == [("a <= 0.5", 2.0, True), ("b >= c + 1", 2 / 3, False)]  # x == 0: no ratio
    assert results.bar_sides("b >= c + 1", {"b": 2, "c": 2}) == (2.0, ">=", 3.0)
    assert results.bar_sides("plain_flag", {"plain_flag": 1}) is None
