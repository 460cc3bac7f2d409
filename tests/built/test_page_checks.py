"""The browser checks can fail: each one is run on a small page broken in its one way, and on a clean page."""

from __future__ import annotations

import pytest
from PIL import Image

from page_checks import inspect_page, problems, serve, text_scale

TRACE = "\n".join(
    ["Traceback (most recent call last):", '  File "/x/site-packages/torch/nn.py", line 1, in f', "    f()",
     '  File "/x/site-packages/torch/nn.py", line 2, in g', "    g()", '  File "/x/a.py", line 3, in h',
     "    h()", "ValueError: bad"]
)
BODY = {
    "good": """<p>Inline math <span class="math">x</span> and a code <code>$HOME</code>, a pipe | in prose.</p>
        <section id="intro"><a href="good.html#intro">here</a> <a href="sub/">sub</a>
        <a href="https://example.org/a">out</a></section>
        <table><tr><td>1</td><td>2</td></tr></table><pre>short code</pre>
        <img src="sharp.png" width="200" alt="a sharp figure">
        <div class="cell_output"><img src="sharp.png" width="200" alt="Figure: loss against step">
        <details><summary>ValueError: bad</summary><pre>TRACE</pre></details>
        <div class="output"><pre>epoch 3: loss 0.25</pre></div>
        <div class="output"><details><summary>FutureWarning</summary><pre>warnings.warn(m)</pre></details></div></div>""",
    "dollar": "<p>The formula $x^2$ did not typeset.</p>",
    "untypeset": r'<p>Here <span class="math">\(x^2\)</span> is raw.</p>',
    "pipes": "<p>| § | seed block | |---|---| | 1 | a |</p>",
    "pipes_output": '<div class="cell_output"><div class="output"><pre>| a | b |\n| 1 | 2 |</pre></div></div>',
    "trace": '<div class="cell_output"><div class="output traceback"><pre>TRACE</pre></div></div>',
    "noise": '<div class="cell_output"><div class="output stream"><pre>Loading weights: 100%|##| 5/5</pre></div></div>',
    "noise_log": '<div class="cell_output"><div class="output stderr"><pre>WARNING: loss_type=None set</pre></div></div>',
    "wide_pre": '<pre style="overflow-x: auto">' + "x = 1  # " + "long " * 60 + "</pre>",
    "wide_table": "<table><tr><td style='min-width: 1500px'>wide</td></tr></table>",
    "missing_page": '<a href="missing.html">gone</a>',
    "missing_anchor": '<a href="good.html#nowhere">gone</a>',
    "file_host": '<a href="http://CHANGES.md">CHANGES.md</a>',
    "small_figure": '<img src="blurry.png" width="500" alt="a figure squeezed to half its width">',
    "console_error": "<script>console.error('Got invalid theme mode')</script>",
    "missing_image": '<img src="nothing.png" alt="never there">',
    "outside": '<img src="http://198.51.100.1/cdn.png" alt="from a server outside the book">',
    "alt_path": '<div class="cell_output"><img src="sharp.png" width="200" alt="_build/abc123.png"></div>',
    "escape_cell": r"<table><tr><td>And God said\n\nLet there be</td></tr></table>",
    "laptop_wide": "<table style='width: 1300px'><tr><td>a table as wide as a large screen</td></tr></table>",
    "phone_wide": '<div style="width: 700px">a box as wide as a desktop column</div>',
    "machine_path": '<div class="cell_output"><pre>File /srv/.venv/lib/python3.11/x.py</pre></div>',
}
EXPECTED = {
    "dollar": "raw_math", "untypeset": "raw_math", "pipes": "raw_tables", "pipes_output": "raw_tables",
    "trace": "tracebacks", "noise": "noise", "noise_log": "noise", "wide_pre": "overflow",
    "wide_table": "overflow", "missing_page": "links", "missing_anchor": "links", "file_host": "links",
    "small_figure": "small_text", "console_error": "console", "missing_image": "console",
    "outside": "console", "alt_path": "alt_text", "escape_cell": "escapes", "machine_path": "machine_paths",
    "phone_wide": "phone", "laptop_wide": "laptop",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for name, body in BODY.items():
        html = (f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'></head>"
                f"<body><article style='max-width: 800px'>{body.replace('TRACE', TRACE)}</article></body></html>")
        (root / f"{name}.html").write_text(html, encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<!doctype html><title>sub</title>")
    Image.new("RGB", (400, 100), "white").save(root / "sharp.png", dpi=(200, 200))  # shown at 200 px: 1.04
    Image.new("RGB", (1000, 100), "white").save(root / "blurry.png", dpi=(100, 100))  # shown at 500: 0.52
    with serve(root) as url:
        yield url, root


def test_a_clean_page_passes_every_check(browser, site):
    url, root = site
    assert problems(inspect_page(browser, f"{url}/good.html"), root) == {}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_check_fails_on_its_broken_page(browser, site, name):
    url, root = site
    found = problems(inspect_page(browser, f"{url}/{name}.html"), root)
    assert EXPECTED[name] in found, found


def test_text_scale_is_dpi_times_shrink_over_96(tmp_path):
    png = tmp_path / "f.png"
    Image.new("RGB", (1520, 10)).save(png, dpi=(200, 200))
    assert text_scale(png, 1520, 760) == pytest.approx(200 * 0.5 / 96, rel=1e-4)  # retina at half width: 1.04
    Image.new("RGB", (760, 10)).save(png, dpi=(100, 100))
    assert text_scale(png, 760, 608) == pytest.approx(100 * 0.8 / 96, rel=1e-4)  # squeezed to 80 %: 0.83 < 0.9
    Image.new("RGB", (760, 10)).save(png)  # no pHYs: one image pixel per CSS pixel
    assert text_scale(png, 760, 760) == pytest.approx(1.0)
