"""Site search that finds Chinese terms as a reader types them (a Sphinx extension, see _config.yml).

Sphinx's Chinese search splits the pages into words with jieba, but the browser splits a query only at
spaces and punctuation, so a query such as 扩散模型 or 困惑度 is one term that jieba may have cut into
扩散 + 模型 or 困惑 + 度: nothing matched. This splitter indexes, besides jieba's words, every run of
2 to ``MAX_TERM`` consecutive Chinese characters of the text, so any such query that occurs on a page
finds it. English is indexed and stemmed exactly as before.
"""

from __future__ import annotations

import re

from sphinx.application import Sphinx
from sphinx.search import languages
from sphinx.search.zh import SearchChinese

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")  # CJK ideographs
MAX_TERM = 12  # characters; the glossary's longest term, 基于人类反馈的强化学习, has 11


def han_substrings(text: str, longest: int = MAX_TERM) -> list[str]:
    """Every run of 2 to ``longest`` consecutive Chinese characters in ``text``, in order."""
    return [run[i:j] for run in HAN.findall(text)
            for i in range(len(run)) for j in range(i + 2, min(len(run), i + longest) + 1)]


class SearchChineseSubstrings(SearchChinese):
    """Sphinx's Chinese search (jieba words; English stemmed) plus :func:`han_substrings`."""

    def split(self, input: str) -> list[str]:  # noqa: A002 (Sphinx's signature)
        return super().split(input) + han_substrings(input)


def setup(app: Sphinx) -> dict[str, bool]:
    """Make ``html_search_language: zh`` use :class:`SearchChineseSubstrings`."""
    languages["zh"] = SearchChineseSubstrings
    return {"parallel_read_safe": True, "parallel_write_safe": True}
