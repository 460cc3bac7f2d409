"""The book's own pages (book/*.md): checks on their sources that need no build."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


_CITATION = re.compile(
    r"(?:van den |de )?[A-Z][\w-]+(?: et\s+al\.|,? (?:&|and) [A-Z][\w-]+|, [A-Z][\w-]+ & [A-Z][\w-]+),?\s*\(?"
    r"(?:[A-Z][A-Za-z]*\s+)?((?:19|20)\d\d)"
)
_LINK = re.compile(r"\[([^\]]*)\]\((?:https?://[^)\s]+)\)")


def unlinked_citations(markdown: str) -> list[str]:
    """Papers cited as "Author et al., 2019" (or "A & B (2014)") with no web link on the page: each
    distinct (author, year) needs one occurrence whose own parenthesis carries or is a link."""
    text = _LINK.sub(lambda m: m.group(1) + "\0", markdown)  # \0 marks the end of a link
    linked, seen = set(), {}
    for m in _CITATION.finditer(text):
        key = (m.group(0).split()[0].strip(","), m.group(1))
        following = _CITATION.search(text, m.end())
        tail = text[m.end(): following.start() if following else len(text)][:160]
        tail = tail[: tail.index(")") + 2] if ")" in tail else tail[:60]
        if "\0" in tail:
            linked.add(key)
        seen.setdefault(key, " ".join(m.group(0).split()))
    return [cite for key, cite in seen.items() if key not in linked]


def test_book_pages_link_the_papers_they_cite():
    pages = sorted(p for p in (ROOT / "book").glob("*.md") if p.name != "glossary.md")  # glossary: no citations
    missing = {p.name: unlinked_citations(p.read_text(encoding="utf-8")) for p in pages}
    assert not {name: cites for name, cites in missing.items() if cites}


def test_unlinked_citations_are_found():
    assert unlinked_citations("GANs (Goodfellow et al., 2014) and (Vaswani et al., 2017, [arXiv](https://a.b)).") == [
        "Goodfellow et al., 2014"
    ]
    assert unlinked_citations("[Mirza & Osindero (2014)](https://arxiv.org/abs/1411.1784)") == []
