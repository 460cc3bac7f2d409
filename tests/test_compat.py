"""The declared dependency window is the tested one: `make test-compat` installs the pins of
compat/constraints-lowest.txt in a second environment, and these tests keep the pins, the lower
bounds in pyproject.toml and the README's "Tested versions" section saying the same thing."""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PINS_FILE = ROOT / "compat" / "constraints-lowest.txt"


def pins(text: str | None = None) -> dict[str, Version]:
    """``name==version`` lines of the constraints file (comments and blank lines skipped)."""
    text = PINS_FILE.read_text() if text is None else text
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"{PINS_FILE.name}: not an exact pin: {line!r}"
            found[name.strip().lower()] = Version(pinned.strip())
    return found


def lower_bounds() -> dict[str, Version]:
    """The ``>=`` bound of each main dependency in pyproject.toml that declares one."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        at_least = [Version(s.version) for s in req.specifier if s.operator == ">="]
        if at_least:
            bounds[req.name.lower()] = max(at_least)
    return bounds


def test_every_declared_lower_bound_is_pinned_exactly_in_the_lowest_environment():
    assert {"torch", "torchvision", "transformers", "accelerate"} <= set(lower_bounds())
    assert pins() == lower_bounds()


def test_the_readme_states_the_tested_lowest_versions():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tested versions", 1)[1].split("\n## ", 1)[0]
    assert "make test-compat" in section
    lowest = section.split("\nLowest:", 1)[1].split("\nNewest:", 1)[0]
    for name, pinned in pins().items():
        assert re.search(rf"`{re.escape(name)} {re.escape(str(pinned))}`", lowest), (name, lowest)


@pytest.mark.skipif(os.environ.get("AIGC_COMPAT") != "1", reason="only in make test-compat")
def test_this_environment_has_exactly_the_lowest_versions():
    import torch

    installed = {name: Version(version(name)) for name in pins()}
    assert installed == pins()
    assert Version(torch.__version__).release == pins()["torch"].release


@pytest.mark.skipif(not os.environ.get("AIGC_COMPAT_METRICS"), reason="only in make test-compat")
def test_the_compat_chapters_ran_on_the_lowest_torch():
    files = [f for f in Path(os.environ["AIGC_COMPAT_METRICS"]).glob("*.json")
             if not f.name.endswith(".bars.json")]
    assert files
    for f in files:
        record = json.loads(f.read_text())
        assert Version(record["torch"]).release == pins()["torch"].release, f.name
        assert record.get("finished_at"), f"{f.name}: the chapter did not finish"


def test_pins_parser_refuses_a_range():
    assert pins("torch==2.6.0  # lowest\n\nnumpy==2.0.2\n") == {"torch": Version("2.6.0"),
                                                                "numpy": Version("2.0.2")}
    with pytest.raises(AssertionError, match="not an exact pin"):
        pins("torch>=2.6\n")
