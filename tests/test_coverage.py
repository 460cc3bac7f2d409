"""The prose pages cover what they promise: the glossary's terms are used, the source map names every
section of the source text, and every link between pages resolves.

Pure text checks: no network, no models, a fraction of a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"

# The numbered sections of the source text, 《AIGC原理与代码实例讲解》, copied from its headings.
SOURCE_SECTIONS = {
    "1": "背景介绍",
    "2": "核心概念与联系",
    "2.1": "核心概念概述",
    "3": "核心算法原理 & 具体操作步骤",
    "3.1": "算法原理概述",
    "3.2": "算法步骤详解",
    "3.2.1": "生成对抗网络(GANs)",
    "3.2.2": "自监督学习",
    "3.2.3": "深度学习",
    "3.3": "算法优缺点",
    "3.4": "算法应用领域",
    "4": "数学模型和公式 & 详细讲解 & 举例说明",
    "4.1": "数学模型构建",
    "4.1.1": "生成器",
    "4.1.2": "判别器",
    "4.1.3": "对抗性训练",
    "4.2": "公式推导过程",
    "4.2.1": "生成器训练",
    "4.2.2": "判别器训练",
    "4.3": "案例分析与讲解",
    "4.3.1": "文本生成案例",
    "4.3.2": "图像生成案例",
    "5": "项目实践：代码实例和详细解释说明",
    "5.1": "开发环境搭建",
    "5.2": "源代码详细实现",
    "5.3": "代码解读与分析",
    "6": "实际应用场景",
    "6.1": "内容创作",
    "6.2": "图像设计",
    "6.3": "视频制作",
    "6.4": "虚拟现实",
    "7": "工具和资源推荐",
    "7.1": "学习资源推荐",
    "7.2": "开发工具推荐",
    "7.3": "相关论文推荐",
    "8": "总结：未来发展趋势与挑战",
    "8.1": "总结",
    "8.2": "未来发展趋势",
    "8.3": "面临的挑战",
    "8.4": "研究展望",
    "9": "附录：常见问题与解答",
}


def _table_rows(path: Path) -> list[list[str]]:
    """Cells of every row of the markdown tables in ``path``, header and separator rows excluded."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows[1:] if rows else rows  # the first row is the header


def _normalise(text: str) -> str:
    """Lower case, no markdown emphasis / code / math markers, one space between words."""
    text = re.sub(r"[`*$_]", "", text)
    return " ".join(text.lower().split())


def _notebook_markdown(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def _book_text_outside_glossary() -> str:
    pages = [p.read_text(encoding="utf-8") for p in sorted(BOOK.glob("*.md")) if p.name != "glossary.md"]
    notebooks = [_notebook_markdown(p) for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
    return _normalise("\n".join(pages + notebooks))


def glossary_terms() -> list[str]:
    """The English column of the glossary, one entry per alternative.

    ``generative adversarial network (GAN)`` is the term ``generative adversarial network``: a parenthesis
    holds an abbreviation or a gloss. ``backpropagation / backward pass`` is two terms, each of which must be used.
    """
    terms = []
    for cells in _table_rows(BOOK / "glossary.md"):
        english = re.sub(r"\([^)]*\)", "", cells[0])
        terms += [_normalise(t) for t in english.split(" / ") if t.strip()]
    return terms


def missing_glossary_terms() -> list[str]:
    text = _book_text_outside_glossary()
    return [t for t in glossary_terms() if t not in text]


def test_glossary_is_a_sorted_four_column_table():
    rows = _table_rows(BOOK / "glossary.md")
    assert len(rows) >= 100, f"only {len(rows)} glossary rows"
    assert all(len(r) == 4 and all(r) for r in rows), [r for r in rows if len(r) != 4 or not all(r)]
    keys = [_normalise(r[0]) for r in rows]
    assert keys == sorted(keys), "glossary rows must be sorted by the English term"
    assert len(set(keys)) == len(keys), "duplicate glossary rows"


def test_every_glossary_term_is_used_in_the_book():
    missing = missing_glossary_terms()
    assert not missing, f"glossary terms used nowhere in the pages or the notebooks' markdown: {missing}"


def _section_rows() -> dict[str, list[str]]:
    return {cells[0]: cells for cells in _table_rows(BOOK / "source_map.md")}


@pytest.mark.parametrize("number", list(SOURCE_SECTIONS))
def test_source_map_names_every_section(number):
    rows = _section_rows()
    assert number in rows, f"source_map.md has no row for §{number}"
    row = rows[number]
    assert row[1] == SOURCE_SECTIONS[number], f"§{number}: title {row[1]!r}, the source text has {SOURCE_SECTIONS[number]!r}"
    assert row[2], f"§{number}: no English title"
    assert re.search(r"\]\((\.\./notebooks/)?[\w.]+\)", row[3]) or "chapters" in row[3], f"§{number}: no link"


def test_source_map_has_no_extra_sections():
    extra = set(_section_rows()) - set(SOURCE_SECTIONS)
    assert not extra, f"rows for sections the source text does not have: {sorted(extra)}"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _local_links() -> list[tuple[str, str]]:
    links = []
    for page in sorted(BOOK.glob("*.md")):
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto, doi, in-page anchors
            links.append((page.name, target))
    return links


def _resolves(target: str) -> bool:
    path = (BOOK / target.split("#", 1)[0]).resolve()
    if path.suffix in (".md", ".ipynb"):
        return path.is_file()
    return any(path.with_suffix(s).is_file() for s in (".md", ".ipynb"))


def test_pages_have_local_links():
    pages = {page for page, _ in _local_links()}
    assert {"source_map.md", "concepts.md", "glossary.md", "tools_and_papers.md"} <= pages


@pytest.mark.parametrize("page,target", _local_links(), ids=lambda x: str(x))
def test_every_local_link_resolves(page, target):
    assert _resolves(target), f"{page}: link to {target!r} matches no page in the repository"


def test_source_map_is_in_the_toc_after_tools_and_papers():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    files = re.findall(r"file:\s*(\S+)", toc)
    assert "book/source_map" in files
    assert files.index("book/source_map") == files.index("book/tools_and_papers") + 1
