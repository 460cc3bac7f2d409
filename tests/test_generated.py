"""The notebooks are the source of the chapter modules: every generated module equals what nbdev's
exporter writes from its notebook today, and the hand-written package stays the small shared core."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from aigc_utils.runner import GENERATED, export_modules

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aigc_utils"
HAND_WRITTEN_LIMIT = 3100  # the core: profiles … runner, the book's pages and its PDF printer


def generated_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.read_text(encoding="utf-8").startswith(GENERATED))


def test_every_generated_module_equals_a_fresh_export_of_its_notebook(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    (tmp_path / "aigc_utils").mkdir()
    export_modules(root=tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "aigc_utils").glob("*.py")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in generated_modules()}
    stale = sorted(name for name in committed.keys() & fresh.keys() if committed[name] != fresh[name])
    assert not stale, f"notebook and module differ: {stale}; run `aigc-book export` and commit the modules"
    assert committed.keys() == fresh.keys(), (
        f"generated modules without a notebook: {sorted(committed.keys() - fresh.keys())}; "
        f"notebook exports never committed: {sorted(fresh.keys() - committed.keys())}")


def test_each_generated_module_names_its_notebook_in_its_first_line():
    for module in generated_modules():
        first = module.read_text(encoding="utf-8").splitlines()[0]
        source = first.split("File to edit: ", 1)[-1].rstrip(".")
        assert (PACKAGE / source).resolve().is_file(), f"{module.name}: {first}"


def test_the_hand_written_package_is_the_small_shared_core():
    generated = set(generated_modules())
    hand = [p for p in PACKAGE.rglob("*.py") if p not in generated]
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in hand)
    assert lines <= HAND_WRITTEN_LIMIT, f"hand-written package has {lines} lines (limit {HAND_WRITTEN_LIMIT})"
    core = {p.stem for p in (PACKAGE / "core").glob("*.py")}
    assert not core & {p.stem for p in generated}, "a chapter module shadows a core module"


def page_code(stem: str) -> tuple[list[str], str | None]:
    """A notebook's code cells (IPython magics dropped) and the module it exports to."""
    cells = [c.source for c in nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4).cells
             if c.cell_type == "code"]
    code = [re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", src) for src in cells]  # IPython magics
    module = next((line.split()[-1] for src in code for line in src.splitlines()
                   if line.startswith("#| default_exp")), None)
    return code, module


def chapter_imports(code: list[str]) -> dict[str, str]:
    """Local name -> generated module it comes from (``import`` and ``from … import`` of chapter modules)."""
    generated = {p.stem for p in generated_modules()}
    names: dict[str, str] = {}
    for node in ast.walk(ast.parse("\n".join(code))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] == "aigc_utils" and len(parts) == 2 and parts[1] in generated:
                names.update({a.asname or a.name: parts[1] for a in node.names})
            elif node.module == "aigc_utils":
                names.update({a.asname or a.name: a.name for a in node.names if a.name in generated})
    return names


STEMS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("stem", STEMS)
def test_a_page_runs_its_own_cells_not_its_generated_module(stem):
    """The reader's edited cell is what runs: a page never imports the module generated from it."""
    code, module = page_code(stem)
    own = [name for name, source in chapter_imports(code).items() if source == module]
    assert not own, f"{stem} imports {own} from aigc_utils.{module}, which is generated from this page"


@pytest.mark.parametrize("stem", STEMS)
def test_a_page_never_shows_a_generated_module_through_show_source(stem):
    """show_source is for the core a chapter relies on; a chapter's own code is on its page."""
    code, _ = page_code(stem)
    imported = chapter_imports(code)
    for node in ast.walk(ast.parse("\n".join(code))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "show_source":
            shown = {n.id for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Name)}
            assert not shown & imported.keys(), f"{stem} shows generated code {shown & imported.keys()}"


@pytest.mark.parametrize("stem", [stem for stem in STEMS if not stem.startswith("09_")])
def test_each_chapter_builds_its_lesson_on_the_page(stem):
    """A chapter defines its models, losses and steps in its own cells (at least three of them)."""
    cells = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4).cells
    defined = [line for c in cells if c.cell_type == "code" for line in c.source.splitlines()
               if line.startswith(("def ", "class "))]
    assert len(defined) >= 3, f"{stem} defines {len(defined)} functions or classes on the page"
