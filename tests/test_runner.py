"""The runner on tiny notebooks: metrics files, failures named by cell, raises-exception honoured."""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from aigc_utils import cli, runner


def _notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (src, tags) in enumerate(cells):
        cell = nbformat.v4.new_code_cell(src)
        cell.id = f"t{i}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


PARAMS = ("profile = None\nseed = 0", ["parameters"])
RESULTS = (
    "from aigc_utils.core.results import record_results\n"
    "from aigc_utils.core.profiles import resolve_profile\n"
    "P = resolve_profile(profile)\n"
    "record_results('98_tiny', {'answer': 42, 'seed_seen': seed}, ['answer == 42'], P.name, 'cpu')",
    [],
)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIGC_METRICS_DIR", raising=False)
    return tmp_path


def test_run_writes_executed_copy_and_metrics(workdir):
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("1/0", ["raises-exception"]), RESULTS])
    result = runner.execute_notebook(nb, "smoke", {"seed": 7})
    assert result.ok, result.message
    record = json.loads((workdir / "_build/metrics/98_tiny.json").read_text())
    assert record["profile"] == "smoke" and record["answer"] == 42 and record["seed_seen"] == 7
    assert record["seconds"] > 0 and record["finished_at"] and record["torch"]
    executed = nbformat.read(workdir / "_build/executed/notebooks/98_tiny.ipynb", as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for o in executed.cells[2].outputs)  # tagged cell kept its error


def test_failure_names_notebook_and_cell_and_keeps_partial_copy(workdir):
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("x = 1", []), ("raise ValueError('bad input')", []), RESULTS])
    result = runner.execute_notebook(nb, "smoke")
    assert not result.ok
    assert "98_tiny.ipynb" in result.message and "code cell 4" in result.message and "ValueError" in result.message
    assert "\x1b" not in result.message  # no terminal colour codes in the one-line error
    partial = nbformat.read(workdir / "_build/executed/notebooks/98_tiny.ipynb", as_version=4)
    assert partial.cells[2].execution_count is not None  # what ran is kept
    assert not (workdir / "_build/metrics/98_tiny.json").exists()


def test_notebook_without_results_cell_fails(workdir):
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("x = 1", [])])
    result = runner.execute_notebook(nb, "smoke")
    assert not result.ok and "wrote no" in result.message


def test_cli_unknown_profile_is_one_line(capsys):
    assert cli.main(["run", "--profile", "turbo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "smoke, cpu, gpu, auto" in err


def test_cli_run_exit_status_reflects_failure(workdir, capsys):
    _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("assert False, 'broken'", [])])
    (workdir / "_toc.yml").write_text("root: intro\nchapters:\n  - file: notebooks/98_tiny\n")
    assert cli.main(["run", "--profile", "smoke"]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_toc_order_and_name_resolution(workdir):
    for stem in ("01_a", "02_b"):
        _notebook(workdir / "notebooks" / f"{stem}.ipynb", [PARAMS])
    (workdir / "_toc.yml").write_text(
        "root: intro\nparts:\n  - chapters:\n    - file: notebooks/02_b\n    - file: notebooks/01_a\n"
    )
    assert [p.name for p in runner.toc_notebooks()] == ["02_b.ipynb", "01_a.ipynb"]
    assert runner.resolve_notebook("01").name == "01_a.ipynb"
    with pytest.raises(runner.RunnerError, match="known"):
        runner.resolve_notebook("07")


def test_check_executed_flags_unexecuted_and_errors(workdir):
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("1/0", [])])
    runner.execute_notebook(nb, "smoke")
    problems = runner.check_executed([nb])
    # cell 1 of the executed copy is papermill's injected parameters, cell 2 the failing one
    assert problems == [f"{runner.EXECUTED / '98_tiny.ipynb'}: cell 2 has an error output"]
    executed = nbformat.read(runner.EXECUTED / "98_tiny.ipynb", as_version=4)
    executed.cells[0].execution_count = None
    nbformat.write(executed, runner.EXECUTED / "98_tiny.ipynb")
    assert f"{runner.EXECUTED / '98_tiny.ipynb'}: cell 0 was never executed" in runner.check_executed([nb])


def test_external_loads_detected(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.example.org/x.js"></script><script src="_static/y.js"></script>')
    (tmp_path / "b.html").write_text('<a href="https://colab.research.google.com">Colab</a>')
    bad = runner.external_loads(tmp_path)
    assert len(bad) == 1 and "cdn.example.org" in bad[0]


def test_progress_bars_become_their_final_text(workdir):
    loop = ("from tqdm.auto import tqdm\nfor _ in tqdm(range(30), desc='steps'):\n    pass", [])
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, loop, RESULTS])
    assert runner.execute_notebook(nb, "smoke").ok
    executed = nbformat.read(workdir / "_build/executed/notebooks/98_tiny.ipynb", as_version=4)
    assert "widgets" not in executed.metadata
    outputs = [o for cell in executed.cells for o in cell.get("outputs", [])]
    texts = [o["data"]["text/plain"] for o in outputs if "data" in o]
    assert any("steps: 100%" in t and "30/30" in t for t in texts), texts
    assert not any(runner.WIDGET_MIME in o.get("data", {}) for o in outputs)


def test_pin_keeps_only_checked_outputs_with_a_count(workdir):
    checked = ("print(6 * 7)", ["nbval-check-output"])
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, checked, ("print('noise')", []), RESULTS])
    assert runner.execute_notebook(nb, "smoke").ok
    runner.pin_outputs(nb)
    pinned = nbformat.read(nb, as_version=4)
    assert pinned.cells[1].outputs[0]["text"] == "42\n" and pinned.cells[1].execution_count is not None
    assert pinned.cells[2].outputs == [] and pinned.cells[2].execution_count is None


def test_kernel_that_cannot_start_is_one_line(workdir, monkeypatch):
    # a kernel spec whose process never connects: the runner gives up after the start-up timeout
    spec = workdir / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": ["sleep", "30"], "display_name": "stuck", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(workdir / "jupyter"))
    monkeypatch.setattr(runner, "KERNEL_STARTUP_S", 3)
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, RESULTS])
    result = runner.execute_notebook(nb, "smoke")
    assert not result.ok
    assert result.message.count("\n") == 0
    assert "98_tiny.ipynb" in result.message and "kernel did not start within 3 s" in result.message


def test_tracebacks_fold_to_their_last_line(workdir):
    nb = _notebook(workdir / "notebooks" / "98_tiny.ipynb", [PARAMS, ("import json\njson.loads('{')", ["raises-exception"]), RESULTS])
    assert runner.execute_notebook(nb, "smoke").ok
    executed = nbformat.read(workdir / "_build/executed/notebooks/98_tiny.ipynb", as_version=4)
    runner.fold_tracebacks(executed)
    (out,) = executed.cells[2].outputs
    body = out["data"]["text/html"]
    assert body.startswith('<details class="aigc-traceback"><summary><code>JSONDecodeError: Expecting')
    assert "site-packages" not in body or "…/site-packages/" in body
    assert sys.prefix not in body and "\x1b" not in body


def test_first_screen_shows_the_parameters_and_labels_the_setup():
    """Staging unfolds the parameters cell and introduces it, drops papermill's injected cell and the run's
    log line from the page, and names the folded setup cells and worked solutions."""
    def code(source, tags=(), text=None):
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)})
        if text is not None:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return cell

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · A chapter"),
        code('if "google.colab" in sys.modules:\n    pass', ["hide-input"]),
        code("profile = None\nseed = 0", ["parameters", "hide-input"]),
        code('profile = "cpu"', ["injected-parameters"]),
        code("import torch\n\nch = setup_chapter('99_x', profile, seed)", ["hide-input"],
             text="99_x: profile cpu (budget 300 s), cpu (2 threads), seed 0, offline\nkept\n"),
        code("from torch import (\n    nn,\n    optim,\n)\nimport math", ["hide-input"]),
        code("plt.plot(x)", ["hide-input"]),
        code("answer = 42", ["hide-cell", "solution"]),
    ])
    runner.first_screen(nb)
    prompts = [c.metadata.get("mystnb", {}).get("code_prompt_show") for c in nb.cells]
    assert prompts == [None, "Colab setup (show)", None, None, None, "Imports and chapter setup (show)",
                       "Imports (show)", None, "Worked solution (show)"]
    assert nb.cells[2].cell_type == "markdown" and nb.cells[2].source.startswith("**The knobs.**")
    assert nb.cells[3].metadata.tags == ["parameters"]  # unfolded
    assert "remove-cell" in nb.cells[4].metadata.tags
    assert nb.cells[5].outputs[0]["text"] == "kept\n"  # the log line is gone, the rest stays


def test_machine_paths_leave_the_page():
    """An error's summary line and a printed temporary folder show no path of the building machine."""
    import tempfile

    evalue = f"cannot import name 'AdamW' from 'transformers' ({sys.prefix}/lib/python3.11/site-packages/x.py)"
    folder = tempfile.mkdtemp()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("error", ename="ImportError", evalue=evalue, traceback=[]),
        nbformat.v4.new_output("stream", name="stdout", text=f"process 0 wrote {folder}/0\n")])])
    runner.fold_tracebacks(nb)
    runner.hide_temp_folders(nb)
    error, printed = nb.cells[0].outputs
    assert "(…/site-packages/x.py)" in error["data"]["text/html"] and sys.prefix not in str(error)
    assert printed["text"] == "process 0 wrote <temporary folder>/0\n"


def test_series_lose_their_dtype_footer_on_the_page():
    text = "a    1.0\nb    2.0\ndtype: float64"
    named = "a    1\nName: loss, dtype: int64"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("s", outputs=[
        nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1),
        nbformat.v4.new_output("execute_result", data={"text/plain": named}, execution_count=1),
        nbformat.v4.new_output("execute_result", data={"text/plain": "x\ndtype: a", "text/html": "<b>"},
                               execution_count=1)])])
    runner.drop_dtype_footers(nb)
    shown = [o["data"]["text/plain"] for o in nb.cells[0].outputs]
    assert shown == ["a    1.0\nb    2.0", "a    1", "x\ndtype: a"]  # with HTML, the text is not shown


def test_pdf_bookmarks_get_their_headings_own_text():
    """Chromium's bookmarks lose the spaces at a heading's line breaks; retitle_outline restores the
    heading's text in an incremental update that PDF readers accept."""
    import io

    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader

    long = "a heading long enough to wrap across two lines of the page"
    page_html = "".join(f"<h1>Chapter {i}: {long}, {i}</h1><p>{'text ' * 300}</p><h2>§{i}.1 “引号”</h2>"
                        for i in range(2))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=runner.chromium_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.set_content(page_html)
        data = page.pdf(format="A4", outline=True, tagged=True)
        headings = page.eval_on_selector_all("h1, h2", "hs => hs.map(h => h.innerText.trim())")
        browser.close()

    def titles(pdf: bytes) -> list[str]:
        flat = lambda items: [t for i in items for t in (flat(i) if isinstance(i, list) else [i.title])]
        return flat(PdfReader(io.BytesIO(pdf)).outline)

    assert titles(data) != headings  # "…across twolines…": the break's space is lost
    fixed = runner.retitle_outline(data, headings)
    assert fixed.startswith(data) and titles(fixed) == headings
    size = [int(n) for n in re.findall(rb"/Size\s+(\d+)", fixed)]
    assert size[-1] >= size[-2]  # the update's trailer counts every object the file had
    assert len(PdfReader(io.BytesIO(fixed)).pages) == len(PdfReader(io.BytesIO(data)).pages)
