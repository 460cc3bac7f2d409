"""Static checks of the book's sources: config, table of contents, notebooks' shape and Colab cells."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from aigc_utils.runner import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = toc_notebooks(ROOT)


def test_toc_lists_only_existing_pages():
    toc = (ROOT / "_toc.yml").read_text()
    for entry in yaml.safe_load(toc)["parts"]:
        for chapter in entry["chapters"]:
            stem = ROOT / chapter["file"]
            assert stem.with_suffix(".md").exists() or stem.with_suffix(".ipynb").exists(), chapter["file"]


def test_every_notebook_is_in_the_toc():
    on_disk = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(p.name for p in NOTEBOOKS)


def test_colab_launch_configuration():
    assert CONFIG["repository"]["path_to_book"] == "" and CONFIG["repository"]["branch"] == "main"
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert CONFIG["execute"]["execute_notebooks"] == "off"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.stem[:2]} ")
    colab = code[0].source
    assert 'if "google.colab" in sys.modules' in colab
    assert f"git+{CONFIG['repository']['url']}@main" in colab, "Colab cell must use _config.yml's repository URL"
    installs = [line for line in colab.splitlines() if "pip install" in line]
    assert installs and not any(pkg in line for line in installs for pkg in ("torch", "numpy")), "never reinstall Colab's torch"
    assert "parameters" in code[1].metadata.get("tags", []) and "profile = None" in code[1].source
    assert "record_results(" in code[-1].source and f'"{path.stem}"' in code[-1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_carry_only_pinned_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert cell.outputs == [], f"{path.name}: unpinned cell with stored output"
        text = json.dumps(cell.outputs)
        assert "image/png" not in text, f"{path.name}: images in git"
