"""The site search's Chinese splitter (aigc_utils.search_zh): jieba's words plus every run of Chinese
characters, so that a query typed as one term matches; English is split and stemmed as Sphinx does."""

from sphinx.search import languages
from sphinx.search.zh import SearchChinese

from aigc_utils import search_zh


def test_every_run_of_two_to_longest_chinese_characters_and_nothing_else():
    assert search_zh.han_substrings("扩散模型 (diffusion) 与 GAN") == [
        "扩散", "扩散模", "扩散模型", "散模", "散模型", "模型"]  # 与 alone is one character: no term
    assert search_zh.han_substrings("困惑度") == ["困惑", "困惑度", "惑度"]
    assert search_zh.han_substrings("abc, 123") == []
    runs = search_zh.han_substrings("基于人类反馈的强化学习" * 2, longest=4)
    assert max(map(len, runs)) == 4 and "基于人类" in runs and "基于人类反" not in runs


def test_the_splitter_adds_the_runs_to_what_sphinx_indexes():
    text = "困惑度 (perplexity) measures the model"
    ours, sphinx = search_zh.SearchChineseSubstrings({}), SearchChinese({})
    assert ours.split(text) == sphinx.split(text) + search_zh.han_substrings(text)
    assert {"困惑度", "perplexity", "model"} <= set(ours.split(text))


def test_the_extension_makes_zh_use_it():
    before = languages["zh"]
    try:
        assert search_zh.setup(None)["parallel_read_safe"]  # type: ignore[arg-type]
        assert languages["zh"] is search_zh.SearchChineseSubstrings
    finally:
        languages["zh"] = before
