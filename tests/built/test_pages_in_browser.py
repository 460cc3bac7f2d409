"""Every built page, read in headless Chromium at 1400 px as a reader would (the checks: page_checks.py)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from page_checks import inspect_page, problems, serve

HTML = Path(__file__).resolve().parents[2] / "_build" / "html"
PAGES = sorted(  # every page but the theme's files and the root's redirect to the first page
    p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
    if not p.relative_to(HTML).parts[0].startswith("_")
    and 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8", errors="replace")[:2000]
) if HTML.exists() else []

# (page, check, text in the complaint): a case the test must let pass, and why. Each entry is one case,
# not a kind of case; none is needed today.
ALLOWED: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
def site():
    assert (HTML / "index.html").exists(), "no _build/html: run `aigc-book run --profile smoke && aigc-book build`"
    with serve(HTML) as url:
        yield url


def _allowed(page: str, check: str, complaint: str) -> bool:
    return any(p == page and c == check and text in complaint for (p, c, text) in ALLOWED)


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_cleanly(browser, site, page):
    facts = inspect_page(browser, f"{site}/{page}")
    if page.startswith("notebooks/"):  # a chapter: its figures drawn, and a way to run it in Colab
        figures = [img for img in facts.facts["images"] if img["output"]]
        assert figures and all(img["complete"] and img["natural"] > 0 for img in figures), "figures missing"
        assert any("colab.research.google.com" in href for href in facts.facts["links"]), "no Colab button"
    found = problems(facts, HTML)
    left = {check: [c for c in complaints if not _allowed(page, check, c)] for check, complaints in found.items()}
    left = {check: complaints for check, complaints in left.items() if complaints}
    if left:
        report = "\n".join(f"  {check}: {c}" for check, complaints in left.items() for c in complaints[:8])
        pytest.fail(f"{page}:\n{report}", pytrace=False)


# Chinese queries as a reader types them, each with a page that contains it: one word, and words that the
# index's word splitter (jieba) cuts into shorter ones, which the browser does not split the same way.
CHINESE_QUERIES = {"生成": "glossary", "扩散模型": "10_diffusion", "生成对抗网络": "glossary",
                   "困惑度": "06_gpt2_finetuning"}


@pytest.mark.parametrize("query", CHINESE_QUERIES)
def test_a_chinese_query_finds_the_pages_that_contain_it(browser, site, query):
    """Multi-character Chinese queries find their pages (aigc_utils.search_zh indexes every run of
    Chinese characters besides jieba's words)."""
    page = browser.new_page()
    try:
        page.goto(f"{site}/search.html?q={quote(query)}", wait_until="load")
        page.wait_for_function(  # the summary is written when the search has finished
            "document.querySelector('#search-results p.search-summary')?.textContent.length > 0",
            timeout=30000)
        hits = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
    finally:
        page.close()
    assert any(CHINESE_QUERIES[query] in href for href in hits), f"{query}: {hits[:10]}"
