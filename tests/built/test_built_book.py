"""Checks of the built website (run after `aigc-book run` + `aigc-book build`, as `make test` does)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aigc_utils.runner import external_loads, toc_notebooks
from page_checks import serve

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
METRICS = ROOT / "_build" / "metrics"
NOTEBOOKS = toc_notebooks(ROOT)
# Chapters whose smoke metrics are compared across two runs with the same seed: two cheap ones, and 04, whose
# tokenizer training once numbered its pieces differently in every run.
DETERMINISM = ["01_deep_learning_basics", "04_self_supervised_mlm", "09_seed_errata"]


@pytest.fixture(scope="module", autouse=True)
def built():
    assert (HTML / "index.html").exists(), "no _build/html: run `aigc-book run --profile smoke && aigc-book build`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_page_shows_outputs_and_stamp(nb):
    page = (HTML / "notebooks" / f"{nb.stem}.html").read_text(encoding="utf-8")
    assert "cell_output" in page, "rendered page without outputs"
    assert "Last run" in page and f'results.html#dashboard-{nb.stem.replace("_", "-").lower()}"' in page, (
        "missing verified stamp, or its link to the chapter's section of the dashboard"
    )
    assert "colab.research.google.com" in page, "missing Colab launch button"
    assert not re.search(r'class="c1">#\| (export|default_exp)', page), "nbdev's marks shown as raw syntax in code"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_screen_shows_the_knobs_and_no_run_log(nb):
    """The first code cell a reader sees unfolded is the parameters cell; papermill's injected cell and the
    run's log line stay in the executed notebook; setup cells and worked solutions say what they are."""
    page = (HTML / "notebooks" / f"{nb.stem}.html").read_text(encoding="utf-8")
    cells = re.findall(r'<div class="cell( [^"]*)?"', page)
    shown = [classes for classes in cells if not re.search(r"tag_(hide-input|hide-cell|remove)", classes)]
    assert shown and "tag_parameters" in shown[0], f"first unfolded code cell: {shown[:1]}"
    assert "tag_injected-parameters" not in page, "papermill's injected parameters shown"
    assert not re.search(r"\w+: profile \w+ \(budget \d+ s\)", page), "the run's log line shown"
    assert "Colab setup (show)" in page, "the Colab cell is not labelled"


def test_no_page_shows_a_path_of_the_building_machine():
    """Paths into the virtual environment and temporary folders are shortened on every page."""
    shown = {}
    for page in HTML.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        found = re.findall(r"[\w.-]/(?:\.venv|site-packages|lib/python3\.\d+)/\S{0,40}|/tmp/tmp\w+", text)
        if found:
            shown[page.relative_to(HTML).as_posix()] = found[:3]
    assert not shown, shown


def test_no_page_shows_a_pandas_dtype_footer():
    shown = [page.name for page in HTML.rglob("*.html")
             if re.search(r"dtype: (?:float|int|uint|object|str|bool|complex)\d*\b",
                          page.read_text(encoding="utf-8", errors="replace"))]
    assert not shown, shown


def test_dashboard_has_every_chapter_and_no_unrun_one():
    page = (HTML / "book" / "results.html").read_text(encoding="utf-8")
    for nb in NOTEBOOKS:
        assert f"{nb.stem}.html" in page
    assert "not run" not in page


def test_no_page_loads_scripts_from_outside():
    assert external_loads(HTML) == []


@pytest.fixture(scope="module")
def server():
    with serve(HTML) as url:
        yield url


def _open(browser, url: str):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, requests


def test_concept_graph_is_an_svg_and_math_is_typeset(browser, server):
    page, requests = _open(browser, f"{server}/book/concepts.html")
    page.wait_for_selector(".mermaid svg", timeout=30000)
    page.wait_for_selector("mjx-container", state="attached", timeout=30000)
    assert all(u.startswith(server) or u.startswith("data:") for u in requests), [u for u in requests if not u.startswith(server)]
    page.close()


# Each chapter page's figures, Colab button and offline loading: test_pages_in_browser.py (one load a page).


def test_smoke_runs_with_the_same_seed_agree(tmp_path):
    """A second smoke run of a few chapters, with an empty checkpoint cache, gives the same metrics."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy2(ROOT / "_toc.yml", tmp_path / "_toc.yml")
    env = {**os.environ, "AIGC_CACHE": str(tmp_path / "cache"), "AIGC_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "aigc_utils.cli", "run", "--profile", "smoke", *DETERMINISM]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    for stem in DETERMINISM:
        first = json.loads((METRICS / f"{stem}.json").read_text())
        second = json.loads((tmp_path / "_build" / "metrics" / f"{stem}.json").read_text())
        for metrics in (first, second):  # timings are the one thing allowed to differ
            for key in [k for k in metrics if k in ("seconds", "finished_at") or k.endswith("_seconds")]:
                metrics.pop(key)
        assert first == second, stem



def test_the_whole_book_is_one_pdf_linked_from_the_landing_page():
    """`aigc-book build` prints the whole book with Chromium: the landing page links the PDF, its bookmarks
    are the book's headings, each chapter starts on its bookmarked page with its stamp, and the math on
    the page of chapter 01's backward pass is typeset (no TeX source left in the text)."""
    from pypdf import PdfReader

    from aigc_utils.book import notebook_title
    from aigc_utils.runner import PDF_NAME

    pdf = HTML / PDF_NAME
    assert pdf.is_file(), f"no {PDF_NAME} in _build/html"
    assert f'href="../{PDF_NAME}"' in (HTML / "book" / "intro.html").read_text(encoding="utf-8")
    reader = PdfReader(pdf)
    assert len(reader.pages) >= 5 * len(NOTEBOOKS), len(reader.pages)

    def bookmarks(outline: list) -> list:
        return [b for item in outline for b in (bookmarks(item) if isinstance(item, list) else [item])]

    def page_text(bookmark) -> str:
        first = reader.get_destination_page_number(bookmark)
        return "\n".join(reader.pages[i].extract_text() for i in range(first, first + 2))

    marks = {b.title.replace("’", "'"): b for b in bookmarks(reader.outline)}  # typographic quotes
    for nb in NOTEBOOKS:
        title = notebook_title(nb).replace("’", "'")
        assert title in marks, f"{nb.stem} is not among the PDF's bookmarks"
        assert "Last run" in page_text(marks[title]), f"{nb.stem}: no stamp on its first pages"
    math = page_text(marks["3. The backward pass, and how to know it is right"])
    assert "∂" in math and not re.search(r"\\frac|\\begin\{|\$\$", math), math[:300]


def test_no_photograph_is_served_as_a_png():
    """Photographs go on the page as JPEG (runner.photos_as_jpeg); PNG is for plots and line art."""
    from PIL import Image

    from aigc_utils.runner import PHOTO_MIN_BYTES, PHOTO_MIN_COLOURS

    photos = []
    for png in (HTML / "_images").glob("*.png"):
        if png.stat().st_size >= PHOTO_MIN_BYTES:
            with Image.open(png) as image:
                if image.convert("RGB").getcolors(maxcolors=PHOTO_MIN_COLOURS) is None:
                    photos.append(png.name)
    assert not photos, photos
