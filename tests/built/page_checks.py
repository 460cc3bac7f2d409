"""What a reader would notice on a built page, checked in headless Chromium at 1400 px (and 1280 and 390 px).

``inspect_page`` loads a page once, waits for MathJax and mermaid, and collects facts with one script
(``COLLECT``); ``problems`` turns the facts into complaints, one function per check:

- ``raw_math``: a ``$`` left in the rendered text (outside code and typeset math), or a math element that
  MathJax did not typeset (its ``\\(`` / ``\\[`` delimiters still showing).
- ``raw_tables``: a markdown table left as pipes — a paragraph, list item or text output that holds a
  separator row (``|---|``) or starts with ``|`` and has three or more of them.
- ``tracebacks``: an error trace of more than ``TRACEBACK_LINES`` lines that is not inside a fold
  (``<details>`` or a toggle); the fold's summary line is what a reader sees.
- ``noise``: a library log or progress line in a cell output (``NOISE`` lists the patterns: tqdm bars,
  "Loading weights", logging's ``WARNING``, Python warnings, transformers' config messages).
- ``overflow``: the page is wider than the viewport, or a ``pre``, table, display equation, image or other
  box in the article scrolls sideways (its content is wider than its box) or sticks out of the column.
- ``links``: a link to this site whose file is not in the build or whose ``#anchor`` is not on the target
  page; or a link to a "host" that is a file name (``http://CHANGES.md``, made by linkify).
- ``small_text``: a raster figure whose text would be read below 9 pt. The rule: text of ``s`` pt in a
  figure saved at ``dpi`` (the PNG's pHYs; 96 when absent, i.e. one image pixel per CSS pixel) is
  ``s·dpi/72`` image pixels tall; drawn at ``r = rendered CSS width / natural width`` it is
  ``s·dpi·r/72`` CSS pixels, that is ``s·dpi·r/96`` pt. The book's figures use 10 pt and up, so a
  figure fails when ``dpi·r/96 < 0.9`` (10 pt would read below 9 pt). A retina PNG (200 dpi) shown at
  half its pixel width has ``200·0.5/96 = 1.04``: fine; a 100 dpi figure squeezed into 80 % of its
  width has ``0.83``: fails.
- ``laptop``: at a laptop's 1280 px a display equation or a table is wider than the column.
- ``phone``: at a phone's 390 px the page itself is wider than the window (boxes may scroll inside).
- ``escapes``: a table cell that shows ``\\n`` or ``\\t`` where its text had a line break or a tab.
- ``machine_paths``: visible text naming a folder of the machine that built the page (``…/site-packages/…``,
  ``/tmp/tmp…``, a home folder).
- ``console``: a console error, an uncaught exception, a failed request, a response of 400 or more, or a
  request to anywhere but the book's own server (pages must read offline).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aigc_utils.runner import serve  # noqa: F401  (the tests serve built pages with it)

WIDTH, HEIGHT = 1400, 900
PHONE = 390  # a phone's width: the page itself must not scroll sideways there
LAPTOP = 1280  # a laptop's width: equations and tables fit the column there too (code: at WIDTH)
WIDE_AT_LAPTOP = """
() => {
  const article = document.querySelector('article.bd-article, article, main') || document.body;
  const column = article.getBoundingClientRect();
  const found = [];
  for (const el of article.querySelectorAll('mjx-container[display="true"], table')) {
    const rect = el.getBoundingClientRect();
    if (rect.width && (el.scrollWidth > el.clientWidth + 1 || rect.right > column.right + 1))
      found.push(`${el.tagName.toLowerCase()} ${Math.round(Math.max(el.scrollWidth, rect.width))} px wide, `
                 + `${el.clientWidth} px shown: ${el.textContent.replace(/\\s+/g, ' ').slice(0, 60)}`);
  }
  return found;
}
"""
TRACEBACK_LINES = 5
MIN_TEXT_SCALE = 0.9
FILE_HOST = re.compile(r"\.(md|ipynb|py|txt|ya?ml|json|toml|cfg|csv)$", re.I)
NOISE = [
    (re.compile(r"\d+%\|"), "progress bar"),
    (re.compile(r"(it|s)/(s|it)\]|\d+it \["), "progress bar"),
    (re.compile(r"Loading (weights|checkpoint)"), "loading log"),
    (re.compile(r"\b(WARNING|INFO|DEBUG)\b[:\s]"), "log line"),
    (re.compile(r"\b\w*Warning: "), "Python warning"),
    (re.compile(r"warnings\.warn\("), "Python warning"),
    (re.compile(r"loss_type=|Some weights of |You should probably TRAIN"), "transformers log"),
]
SEPARATOR_ROW = re.compile(r"\|\s*:?-{3,}:?\s*\|")

# One script, run once per page: every fact the checks need.
COLLECT = r"""
() => {
  const SKIP = 'script, style, noscript, template, code, pre, kbd, samp, textarea, mjx-container, .math';
  const folded = el => !!el.closest('details, .toggle, .toggle-details');
  const snippet = (s, i) => s.slice(Math.max(0, i - 50), i + 50).replace(/\s+/g, ' ').trim();
  const facts = {dollars: [], untypeset: [], pipes: [], traces: [], outputs: [], boxes: [], links: [], images: []};
  facts.scrollWidth = document.documentElement.scrollWidth;
  facts.innerWidth = window.innerWidth;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!text.includes('$') || (node.parentElement && node.parentElement.closest(SKIP))) continue;
    facts.dollars.push(snippet(text, text.indexOf('$')));
  }
  for (const el of document.querySelectorAll('.math')) {
    let own = '';
    for (const child of el.childNodes) if (child.nodeType === Node.TEXT_NODE) own += child.nodeValue;
    if (/\\\(|\\\[|\$\$/.test(own)) facts.untypeset.push(own.trim().slice(0, 100));
  }
  for (const el of document.querySelectorAll('p, li, dd, dt, td, th, h1, h2, h3, h4, .cell_output pre')) {
    if (el.closest('.cell_input')) continue;
    const text = el.textContent;
    const lines = text.split('\n').map(l => l.trim()).filter(l => l.startsWith('|') && (l.match(/\|/g) || []).length >= 3);
    if (/\|\s*:?-{3,}:?\s*\|/.test(text) || (el.tagName !== 'PRE' && lines.length) || lines.length >= 2)
      facts.pipes.push(text.replace(/\s+/g, ' ').trim().slice(0, 120));
  }
  for (const el of document.querySelectorAll('pre, .traceback')) {
    if (el.closest('.cell_input') || folded(el) || (el.tagName === 'PRE' && el.parentElement.closest('.traceback'))) continue;
    const lines = el.textContent.split('\n').filter(l => l.trim());
    const frames = lines.filter(l => /Traceback \(most recent call last\)|^\s*(File ["~\/]|Cell In\[|-+> ?\d+)/.test(l));
    if (frames.length || el.classList.contains('traceback'))
      facts.traces.push({lines: lines.length, head: lines.slice(0, 2).join(' / ').slice(0, 120)});
  }
  for (const el of document.querySelectorAll('.cell_output > *')) {
    if (folded(el)) continue;
    const shown = el.cloneNode(true);  // what is not folded away: drop the <details> inside it
    shown.querySelectorAll('details, .toggle').forEach(d => d.remove());
    facts.outputs.push(shown.textContent);
  }
  const article = document.querySelector('article.bd-article, article, main') || document.body;
  const column = article.getBoundingClientRect();
  for (const el of article.querySelectorAll('*')) {
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    const style = getComputedStyle(el);
    const what = el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '');
    const text = (el.textContent || el.getAttribute('src') || '').replace(/\s+/g, ' ').trim().slice(0, 80);
    if (['auto', 'scroll'].includes(style.overflowX) && el.scrollWidth > el.clientWidth + 1)
      facts.boxes.push({what, text, why: `scrolls sideways: content ${el.scrollWidth} px in a ${el.clientWidth} px box`});
    else if (el.matches('pre, table, img, svg, mjx-container, .math, .cell_output > *') && rect.right > column.right + 1)
      facts.boxes.push({what, text, why: `sticks out of the column by ${Math.round(rect.right - column.right)} px`});
  }
  facts.escapes = [];
  for (const cell of article.querySelectorAll('td, th')) {
    const text = cell.textContent;
    if (/\\n|\\t/.test(text)) facts.escapes.push(text.replace(/\s+/g, ' ').trim().slice(0, 80));
  }
  facts.paths = [];
  const PATH = new RegExp('(?<![…\\w./-])(?:(?:/[\\w.-]+)+/(?:site-packages|lib/python3\\.\\d+|\\.venv)/\\S*'
                          + '|/tmp/tmp\\w+\\S*|/root/\\S*|/home/\\w+/\\S*)', 'g');
  for (const m of document.body.innerText.matchAll(PATH))
    facts.paths.push(m[0].slice(0, 100));
  for (const a of document.querySelectorAll('a[href]')) facts.links.push(a.href);
  for (const img of document.querySelectorAll('img')) {
    const rect = img.getBoundingClientRect();
    facts.images.push({src: img.currentSrc || img.src, natural: img.naturalWidth, shown: rect.width, alt: img.alt,
                       output: !!img.closest('.cell_output'), complete: img.complete});
  }
  return facts;
}
"""


@dataclass
class PageFacts:
    url: str
    facts: dict
    console: list[str] = field(default_factory=list)


def inspect_page(browser, url: str) -> PageFacts:
    """Load ``url`` once at 1400 px, let MathJax and mermaid finish, and collect the facts."""
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: console.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: console.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    origin = "/".join(url.split("/")[:3]) + "/"
    page.on("request", lambda r: None if r.url.startswith((origin, "data:", "blob:")) else console.append(
        f"request outside the book: {r.url}"))
    try:
        page.goto(url, wait_until="load")
        page.evaluate("async () => { const s = window.MathJax && MathJax.startup; if (s && s.promise) await s.promise; }")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.mermaid')].every(m => m.querySelector('svg'))", timeout=30000
        )
        page.wait_for_timeout(100)  # late console messages
        facts = page.evaluate(COLLECT)
        page.set_viewport_size({"width": LAPTOP, "height": HEIGHT})  # a laptop's narrower column
        page.wait_for_timeout(50)
        facts["laptop"] = page.evaluate(WIDE_AT_LAPTOP)
        page.set_viewport_size({"width": PHONE, "height": HEIGHT})  # the same page on a phone
        page.wait_for_timeout(50)
        facts["phone"] = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    finally:
        page.close()
    return PageFacts(url, facts, console)


def raw_math(f: PageFacts) -> list[str]:
    return [f"un-typeset $: …{s}…" for s in f.facts["dollars"]] + [
        f"math not typeset: {s}" for s in f.facts["untypeset"]
    ]


def raw_tables(f: PageFacts) -> list[str]:
    return [f"markdown table left as pipes: {s}" for s in f.facts["pipes"]]


def tracebacks(f: PageFacts) -> list[str]:
    return [
        f"traceback of {t['lines']} lines outside a fold: {t['head']}"
        for t in f.facts["traces"] if t["lines"] > TRACEBACK_LINES
    ]


def noise(f: PageFacts) -> list[str]:
    found = []
    for text in f.facts["outputs"]:
        for line in text.splitlines():
            for pattern, what in NOISE:
                if pattern.search(line):
                    found.append(f"{what} in an output: {line.strip()[:120]}")
                    break
    return found


def overflow(f: PageFacts) -> list[str]:
    found = []
    if f.facts["scrollWidth"] > f.facts["innerWidth"]:
        found.append(f"page is {f.facts['scrollWidth']} px wide in a {f.facts['innerWidth']} px window")
    return found + [f"{b['what']} {b['why']}: {b['text']}" for b in f.facts["boxes"]]


@functools.lru_cache(maxsize=None)
def _anchors(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(unquote(m) for m in re.findall(r"""\s(?:id|name)=["']([^"']+)["']""", text))


def links(f: PageFacts, root: Path) -> list[str]:
    """Links to this site must name a built file (and an anchor on it); links out must name a host."""
    here = urlsplit(f.url)
    found = []
    for href in sorted(set(f.facts["links"])):
        url = urlsplit(href)
        if url.scheme in ("http", "https") and url.netloc != here.netloc:
            if FILE_HOST.search(url.hostname or ""):
                found.append(f"link to a file name as if it were a website: {href}")
            continue
        if url.netloc != here.netloc:
            continue  # mailto:, javascript: and the like
        path = root / unquote(url.path).lstrip("/")
        if url.path.endswith("/"):
            path = path / "index.html"
        if not path.is_file():
            found.append(f"link to a missing page: {href}")
        elif url.fragment and path.suffix == ".html" and unquote(url.fragment) not in _anchors(path):
            found.append(f"link to a missing anchor: {href}")
    return found


def text_scale(png: Path, natural: float, shown: float) -> float:
    """Points at which 1 pt of the figure's text is read: dpi · (shown / natural) / 96 (see the module doc)."""
    from PIL import Image

    with Image.open(png) as im:
        dpi = float((im.info.get("dpi") or (96, 96))[0]) or 96.0
    return dpi * (shown / natural) / 96


def small_text(f: PageFacts, root: Path) -> list[str]:
    here = urlsplit(f.url)
    found = []
    for img in f.facts["images"]:
        url = urlsplit(img["src"])
        if url.netloc != here.netloc or not url.path.lower().endswith(".png") or not img["natural"] or not img["shown"]:
            continue  # vector images scale; data: URLs and failed loads are other checks' business
        path = root / unquote(url.path).lstrip("/")
        if not path.is_file():
            continue
        scale = text_scale(path, img["natural"], img["shown"])
        if scale < MIN_TEXT_SCALE:
            found.append(
                f"figure text would read at {scale:.2f}× its size ({10 * scale:.1f} pt for 10 pt): {url.path} "
                f"({img['natural']} px shown at {img['shown']:.0f} px)"
            )
    return found


def alt_text(f: PageFacts) -> list[str]:
    """A chapter's figure says what it shows to a reader who cannot see it: not empty, not a file name."""
    return [f"figure without real alt text ({img['alt']!r}): {urlsplit(img['src']).path}"
            for img in f.facts["images"]
            if img["output"] and (not img["alt"].strip() or re.search(r"\.(png|jpe?g|svg)$|^\.{1,2}/|_images/", img["alt"]))]


def laptop(f: PageFacts) -> list[str]:
    """At a laptop's 1280 px every display equation and table still fits the (narrower) column."""
    return [f"too wide at {LAPTOP} px: {s}" for s in f.facts["laptop"]]


def phone(f: PageFacts) -> list[str]:
    """At a phone's 390 px the page itself does not scroll sideways (a wide box may, inside itself)."""
    wide, window = f.facts["phone"]
    return [f"page is {wide} px wide in a {window} px phone window"] if wide > window else []


def escapes(f: PageFacts) -> list[str]:
    """A table cell that shows an escape (``\\n``, ``\\t``) where the text had a line break or a tab."""
    return [f"escape shown in a table cell: {s}" for s in f.facts["escapes"]]


def machine_paths(f: PageFacts) -> list[str]:
    """Visible text that names a folder of the machine that built the page."""
    return [f"path of the building machine shown: {s}" for s in f.facts["paths"]]


def console(f: PageFacts) -> list[str]:
    return list(f.console)


CHECKS = {"raw_math": raw_math, "raw_tables": raw_tables, "tracebacks": tracebacks, "noise": noise,
          "overflow": overflow, "laptop": laptop, "phone": phone, "alt_text": alt_text, "escapes": escapes, "machine_paths": machine_paths,
          "console": console}
CHECKS_WITH_ROOT = {"links": links, "small_text": small_text}


def problems(f: PageFacts, root: Path) -> dict[str, list[str]]:
    """Every check's complaints about one page (only the checks that complain)."""
    out = {name: check(f) for name, check in CHECKS.items()}
    out.update({name: check(f, root) for name, check in CHECKS_WITH_ROOT.items()})
    return {name: found for name, found in out.items() if found}
