"""Static checks of the book's sources: config, table of contents, notebooks' shape and Colab cells."""

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from aigc_utils.runner import toc_notebooks
from test_generated import page_code

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = toc_notebooks(ROOT)
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
APPENDICES = {Path(entry["file"]).stem for part in TOC["parts"] if part["caption"] == "Appendices"
              for entry in part["chapters"]}


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
    title = "# Appendix " if path.stem in APPENDICES else f"# {path.stem[:2]} · "
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(title)
    colab = code[0].source
    assert 'if "google.colab" in sys.modules' in colab
    assert f"git+{CONFIG['repository']['url']}@main" in colab, "Colab cell must use _config.yml's repository URL"
    installs = [line for line in colab.splitlines() if "pip install" in line]
    assert installs and not any(pkg in line for line in installs for pkg in ("torch", "numpy")), "never reinstall Colab's torch"
    assert "parameters" in code[1].metadata.get("tags", []) and "profile = None" in code[1].source
    story = [c for c in code if "solution" not in c.metadata.get("tags", [])]
    assert story[-1].source.strip() == "ch.results()", "the Results cell is one call, after the story"
    assert any(f'setup_chapter("{path.stem}"' in c.source for c in code[2:6]), "one call sets the chapter up"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem[:2] != "09"], ids=lambda p: p.stem)
def test_every_chapter_ends_with_exercises_and_a_worked_solution(path):
    """After the Results cell: an "## Exercises" section of at least three numbered exercises, then at
    least one collapsed (``hide-cell``) solution cell that executes in CI and asserts what it claims."""
    nb = nbformat.read(path, as_version=4)
    results = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() == "ch.results()")
    after = nb.cells[results + 1 :]
    heading = [c for c in after if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    assert heading, f"{path.name}: no '## Exercises' section after the Results cell"
    items = re.findall(r"^\d+\. ", "\n".join(c.source for c in after if c.cell_type == "markdown"), re.M)
    assert len(items) >= 3, f"{path.name}: {len(items)} exercises, want at least 3"
    solutions = [c for c in after if c.cell_type == "code"]
    assert solutions and all({"hide-cell", "solution"} <= set(c.metadata.get("tags", [])) for c in solutions)
    assert any("assert " in c.source for c in solutions), "a worked solution checks its own claim"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_carry_only_pinned_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "nbval-check-output" not in cell.metadata.get("tags", []):
            assert cell.outputs == [], f"{path.name}: unpinned cell with stored output"
        text = json.dumps(cell.outputs)
        assert "image/png" not in text, f"{path.name}: images in git"


# --- the page a reader sees -------------------------------------------------------------------------

_MARKERS = ("NBVAL_", "# fmt:", "# noqa", "# type: ignore")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reader_facing_code_is_clean_and_narrow(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            assert len(line) <= 100, f"{path.name} cell {i}: line of {len(line)} characters: {line[:60]}…"
            assert not any(m in line for m in _MARKERS), f"{path.name} cell {i}: test/lint marker: {line.strip()}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_lesson_is_on_the_page(path):
    """A page that shows core code with ``show_source`` calls what it shows (its own code is in its cells)."""
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    shown = re.findall(r"show_source\(([^)]*)\)", code)
    names = [n.strip() for group in shown for n in group.split(",") if n.strip()]
    rest = re.sub(r"show_source\([^)]*\)", "", code)
    for name in names:
        leaf = name.split(".")[-1]
        assert re.search(rf"\b{re.escape(leaf)}\b", rest) or _used_by_package(name), (
            f"{path.name} shows {name} but neither the page nor the package code it calls uses it"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_shown_on_the_page_is_narrow(path):
    """Package code rendered with ``show_source`` obeys the page's 100-character limit too."""
    import inspect

    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    namespace: dict = {}
    for cell in (c for c in nb.cells if c.cell_type == "code"):  # the page's imports resolve what it shows
        plain = re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", cell.source)  # IPython magics
        for node in ast.parse(plain).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                try:
                    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
                except ImportError:  # the source text's own imports, shown failing on purpose
                    pass
    for group in re.findall(r"show_source\(([^)]*)\)", code):
        for name in (n.strip() for n in group.split(",") if n.strip()):
            try:
                obj = eval(name, namespace)  # a name the page defines itself is checked as notebook code
            except (NameError, AttributeError):
                continue
            for line in inspect.getsource(inspect.unwrap(obj)).splitlines():
                assert len(line) <= 100, f"{path.name} shows {name} with a line of {len(line)}: {line[:60]}…"


def _used_by_package(name: str) -> bool:
    """True when ``name`` (e.g. ``gan.gan_step``) is called somewhere in the package besides its definition."""
    leaf = name.split(".")[-1]
    hits = 0
    for module in (ROOT / "aigc_utils").rglob("*.py"):
        text = module.read_text()
        hits += len(re.findall(rf"\b{re.escape(leaf)}\(", text)) - len(re.findall(rf"def {re.escape(leaf)}\(", text))
    return hits > 0


# Numbers that look measured: decimals, percentages, grouped thousands, "27 k"-style counts.
_MEASURED = re.compile(r"(?<![\w.])(\d+\.\d+|\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?\s?%|\d+\s?[kK]\b)")
_CITED = re.compile(r"et al\.|\(\d{4}[a-z]?\)|\b(?:19|20)\d{2}\b|Table \d|README|paper|report")
# Numbers that are properties of a data set, tokenizer or convention, stated by their sources and not
# measured by the book: GPT-2's vocabulary and context, the data sets' sizes, a 95 % interval's level.
_FACTS = re.compile(r"\b(?:50,25[67]|50,000|1,024|60,000|10,000|70,000|31,102|5,000|1,797)\b|\b95 ?%")
_SKIP = [
    re.compile(r"```.*?```|~~~.*?~~~", re.S),  # fenced blocks
    re.compile(r"\$\$.*?\$\$", re.S),  # display math: formulas and constants
    re.compile(r"\$[^$\n]+\$"),  # inline math
    re.compile(r"`[^`\n]*`"),  # code, glue roles' arguments, file names
    _FACTS,
    re.compile(r"\]\([^)]*\)"),  # link targets
    # section numbers of the source, also in lists: "sections 2.1 and 3.4", "§5.1–5.3"
    re.compile(r"(?:§|section|sections|seed)\s*[\d.–-]+(?:\s*(?:,|and|&|or)\s*§?[\d.–-]+)*", re.I),
]


def unglued_numbers(markdown: str) -> list[str]:
    """Sentences of ``markdown`` that state a measured-looking number that is neither glued nor cited.

    Allowed: numbers inside math, code spans or ``{glue:…}`` roles, link targets, section numbers, the
    constants in ``_FACTS``, and any number in a sentence that carries a citation (an author "et al.", a
    year, a paper's table).
    """
    text = markdown
    for pattern in _SKIP:
        text = pattern.sub(" ", text)
    bad = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n[-*|] ", text):
        if _MEASURED.search(sentence) and not _CITED.search(sentence):
            bad.append(" ".join(sentence.split())[:160])
    return bad


def test_unglued_number_detector():
    assert unglued_numbers("The model reaches 0.87 accuracy.") == ["The model reaches 0.87 accuracy."]
    assert unglued_numbers("It trains on 27,272 characters.") != []
    assert unglued_numbers("The model reaches {glue:text}`acc:.3f` accuracy.") == []
    assert unglued_numbers("MLPs reach 0.87–0.88 (Xiao et al., 2017).") == []
    assert unglued_numbers("With $\\beta_1 = 0.5$ and section 3.2.2 of the source.") == []
    assert unglued_numbers("GPT-2 has 50,257 tokens; a 95 % interval.\n```bash\nrun --steps 2.5\n```") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_measured_number_in_prose_is_glued_or_cited(path):
    nb = nbformat.read(path, as_version=4)
    bad = [f"cell {i}: {s}" for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
           for s in unglued_numbers(c.source)]
    assert bad == [], f"{path.name}: numbers typed by hand (glue them or cite them):\n" + "\n".join(bad)


def test_the_repository_stands_alone():
    """Nothing in the repository cites a document that is not in it."""
    outside = re.compile(r"\b(?:ASSETS|DESIGN|STYLE)\.md\b|\.\./shared\b")
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".ipynb", ".yml", ".cfg"}
             or p.name == "Makefile"]
    offenders = [f"{p.relative_to(ROOT)}: {line.strip()[:80]}" for p in files
                 if not any(part in {".venv", "_build", ".git"} for part in p.parts) and p.name != "test_book.py"
                 for line in p.read_text(errors="replace").splitlines()
                 if outside.search(line) and " not in " not in line]  # a test may check for absence
    assert offenders == []


def test_provenance_page_is_generated_from_the_registry():
    from aigc_utils.book import provenance_markdown
    from aigc_utils.core.assets import ASSETS

    table = provenance_markdown()
    for asset in ASSETS.values():
        assert asset.source and asset.licence and asset.what, asset.name
        assert f"| {asset.name} | {asset.what} | {asset.source} | {asset.licence} |" in table
    assert "<!-- AIGC-PROVENANCE -->" in (ROOT / "book" / "provenance.md").read_text()


def harness_share(nb: nbformat.NotebookNode) -> tuple[int, int]:
    """(harness lines, code lines) of a notebook, comments and blank lines left out. Harness: the
    parameters cell's tables (all but ``profile``/``seed``), the Colab and set-up cells, result dicts,
    ``ch.record``/``glue``/``ch.results`` calls, ``print`` calls and the string lines that continue them."""
    harness = total = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or "solution" in cell.metadata.get("tags", []):
            continue
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.strip().startswith("#")]
        total += len(lines)
        text = "\n".join(lines)
        if "parameters" in cell.metadata.get("tags", []):
            harness += sum(1 for line in lines if not re.match(r"^(profile|seed)\s*=", line))
        elif "google.colab" in text:
            harness += len(lines)
        elif "setup_chapter(" in text and len(lines) < 30:
            harness += sum(1 for line in lines if not line.startswith(("import ", "from ")))
        else:
            in_dict = False
            for line in lines:
                in_dict = in_dict or bool(re.match(r"^metrics\s*=\s*\{", line))
                if in_dict or re.search(r"print\(|ch\.record\(|record_results\(|ch\.results\(|glue\(", line) \
                        or re.match(r"^\s+(f?[\"'].*[\"'],?\)?)$", line):
                    harness += 1
                in_dict = in_dict and not line.strip().startswith("}")
    return harness, total


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_harness_is_at_most_15_percent_of_the_code(path):
    """Set-up, size and bar tables, result dicts and print formatting stay out of the story."""
    harness, total = harness_share(nbformat.read(path, as_version=4))
    assert harness <= 0.15 * total, f"{path.name}: harness {harness}/{total} = {harness / total:.0%} > 15 %"


def test_no_escaped_underscore_in_text_mode_math():
    """MathJax shows \\text{a\\_b} and \\texttt{a\\_b} with their backslash; names with underscores go in
    \\mathrm or \\mathtt, where \\_ is an underscore."""
    pages = [*(ROOT / "book").glob("*.md"), *NOTEBOOKS]
    bad = {p.name: found for p in pages
           if (found := re.findall(r"\\text(?:tt|rm|bf|it)?\{[^}]*\\_[^}]*\}", p.read_text(encoding="utf-8")
                                   .replace("\\\\", "\\")))}
    assert not bad, bad


# --- the results dashboard: what each metric measures (book/metrics.yml) -------------------------

METRIC_DESCRIPTIONS = yaml.safe_load((ROOT / "book" / "metrics.yml").read_text(encoding="utf-8"))


def _each(template: str, *values: tuple[str, ...] | list[str]) -> list[str]:
    """Every key a ``**`` expansion makes: the template filled with each combination of values."""
    import itertools

    return [template.format(*combo) for combo in itertools.product(*values)]


def _errata_keys() -> dict[str, list[str]]:
    from aigc_utils.errata import SOURCE_BLOCKS, ErrataLedger

    return {"fixed_{}": _each("fixed_{}", [b.key for b in SOURCE_BLOCKS]),
            "ledger.metrics()": list(ErrataLedger().metrics())}


_LOSSES, _TOYS, _PACK = ("saturating", "non_saturating"), ("ring", "grid"), ("", "_vanilla")
_REFEREE = ["classifier_test_accuracy", "fid_floor", "fid_ceiling", "n_eval"]  # Referee.calibration
_JUDGE = ["fid", "fid_norm", "inception_score", "class_coverage"]  # Referee.judge without labels
_REPAIR = ("psnr_hole", "ssim", "grad_ratio", "hf_ratio")  # inpaint.repair_scores
_COSTS = ("train_seconds", "sample_seconds_per_1k")
_VARIETY = ("label_agreement", "within_class_spread")
_ABLATION = ("bias_minsnr", "scaleshift_minsnr", "scaleshift_plain")
# The keys of every ``**`` expansion in a chapter's ``record`` calls, by the expansion's template
# (see recorded_metrics); the step counts are every profile's ``sweep_steps`` of 10_diffusion.
DYNAMIC_METRICS: dict[str, dict[str, list[str]]] = {
    "02_gan_math": {**{f"early_{m}_{{}}": _each(f"early_{m}_{{}}", _LOSSES)
                       for m in ("gap", "d_fake", "grad")},
                    "{}_modes{}": _each("{}_modes{}", _TOYS, _PACK),
                    "{}_hq{}": _each("{}_hq{}", _TOYS, _PACK)},
    "03_image_gan": {"referee.calibration()": _REFEREE, "uncond_scores": _JUDGE,
                     "{}_cond": _each("{}_cond", _JUDGE)},
    "05_transformer_decoder": {"val_loss_{}": _each("val_loss_{}", ("unigram", "bigram",
                                                                    "trigram"))},
    "08_inpainting": {"adv_effect_{}": _each("adv_effect_{}", _REPAIR),
                      "seed_sd_{}": _each("seed_sd_{}", _REPAIR),
                      "{}_{}": _each("{}_{}", _REPAIR, ("model", "adv", "biharmonic", "telea",
                                                       "meanfill")),
                      "psnr_denoise_{}": _each("psnr_denoise_{}", ("input", "tv", "nlm", "model"))},
    "10_diffusion": {"referee.calibration()": _REFEREE, "diff_scores": _JUDGE,
                     "fid_norm_{}_best": _each("fid_norm_{}_best", ("ddim", "ddpm")),
                     "fid_norm_{}_steps_{}": _each("fid_norm_{}_steps_{}",
                                                   ("ddim", "ddpm", "euler"),
                                                   ("5", "10", "25", "50", "100")),
                     "ablation_{}_fid_norm": _each("ablation_{}_fid_norm", _ABLATION),
                     "ablation_{}_agreement": _each("ablation_{}_agreement", _ABLATION),
                     "{}_flow": _each("{}_flow", (*_JUDGE, *_COSTS)),
                     "{}_gan": _each("{}_gan", (*_JUDGE, *_COSTS)),
                     "{}_gan_cond": _each("{}_gan_cond", (*_JUDGE, *_VARIETY, *_COSTS)),
                     "{}_flow_{}": _each("{}_flow_{}", (*_JUDGE, *_VARIETY, _COSTS[1]), ("w2",))},
}


def _template(node: ast.expr) -> str:
    """A key of a ``**`` expansion as a template: ``f"fid_{m}_best"`` gives ``fid_{}_best``."""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return node.value if isinstance(node, ast.Constant) else ast.unparse(node)


def recorded_metrics(path: Path) -> tuple[set[str], set[str]]:
    """The metric names of a notebook's ``*.record(...)`` calls: (keyword names, templates of
    its ``**`` expansions: each key of a dict or dict comprehension, any other expression as
    written)."""
    names: set[str] = set()
    templates: set[str] = set()
    for plain in page_code(path.stem)[0]:  # code cells, IPython magics as `pass`
        for node in ast.walk(ast.parse(plain)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "record"):
                continue
            for kw in node.keywords:
                if kw.arg is not None:
                    names.add(kw.arg)
                elif isinstance(kw.value, ast.Dict):
                    templates |= {_template(k) for k in kw.value.keys if k is not None}
                elif isinstance(kw.value, ast.DictComp):
                    templates.add(_template(kw.value.key))
                else:
                    templates.add(ast.unparse(kw.value))
    return names, templates


def dynamic_metrics(stem: str) -> dict[str, list[str]]:
    """The listed keys of a chapter's ``**`` expansions, by template."""
    return {**DYNAMIC_METRICS, "09_seed_errata": _errata_keys()}.get(stem, {})


def chapter_metric_keys(path: Path) -> set[str]:
    """Every key the chapter can record: its keyword names and its expansions' listed keys."""
    return recorded_metrics(path)[0] | {key for keys in dynamic_metrics(path.stem).values() for key in keys}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_recorded_metric_is_described(path):
    _, templates = recorded_metrics(path)
    dynamic = dynamic_metrics(path.stem)
    assert templates == set(dynamic), (
        f"{path.name}: its ** expansions in record() are {sorted(templates)}; list each one's keys "
        "in DYNAMIC_METRICS (tests/test_book.py) and describe them in book/metrics.yml")
    for template, keys in dynamic.items():  # an f-string's keys fit it; a call's are as listed
        pattern = re.escape(template).replace(r"\{\}", ".*")
        assert keys and ("{}" not in template or all(re.fullmatch(pattern, k) for k in keys)), keys
    described = {**METRIC_DESCRIPTIONS["_shared"], **METRIC_DESCRIPTIONS.get(path.stem, {})}
    missing = sorted(chapter_metric_keys(path) - set(described))
    assert missing == [], f"{path.name} records metrics book/metrics.yml lacks: {missing}"


def test_no_metric_description_is_stale_and_each_is_short_and_has_a_unit():
    from aigc_utils.book import _META

    recorded = {p.stem: chapter_metric_keys(p) for p in NOTEBOOKS}
    stale = [f"{stem}: {key}" for stem, keys in METRIC_DESCRIPTIONS.items() if stem != "_shared"
             for key in keys if key not in recorded.get(stem, set())]
    stale += [f"_shared: {key}" for key in METRIC_DESCRIPTIONS["_shared"]
              if key not in _META and not any(key in keys for keys in recorded.values())]
    assert stale == [], f"book/metrics.yml describes metrics no chapter records: {stale}"
    for stem, keys in METRIC_DESCRIPTIONS.items():
        for key, about in keys.items():
            assert set(about) == {"what", "unit"} and about["what"] and about["unit"], (stem, key)
            assert len(about["what"].split()) <= 15, f"{stem}: {key}: say it in 15 words or fewer"
            assert "|" not in about["what"] + about["unit"], f"{stem}: {key}: '|' ends a table cell"


def test_dashboard_describes_each_metric_and_shows_counts_as_integers(tmp_path):
    from aigc_utils.book import dashboard_markdown, metric_value

    record = {"profile": "smoke", "device": "cpu", "torch": "2.0", "finished_at": "2026-01-01",
              "fid_norm": 0.0723456, "class_coverage": 8.0, "tokens_seen": 2560123.7,
              "n_eval": 3000, "ratio": 12345.0, "unknown": 0.5, "seconds": 12.5}
    (tmp_path / "ch.json").write_text(json.dumps(record))
    descriptions = {
        "ch": {"fid_norm": {"what": "FID, normalised: 0 = real data", "unit": "—"},
               "class_coverage": {"what": "Classes covered", "unit": "count"},
               "tokens_seen": {"what": "Tokens read", "unit": "count"},
               "ratio": {"what": "A over B", "unit": "×"}},
        "_shared": {"n_eval": {"what": "Samples judged", "unit": "count"}},
    }
    page = dashboard_markdown(["ch"], {"ch": "Chapter"}, tmp_path, descriptions=descriptions)
    assert "| Metric | What it measures | Value | Unit |\n|---|---|---|---|" in page
    assert "| `fid_norm` | FID, normalised: 0 = real data | 0.07235 | — |" in page
    assert "| `class_coverage` | Classes covered | 8 | count |" in page  # not 8.0
    assert "| `tokens_seen` | Tokens read | 2,560,124 | count |" in page  # not 2.56e+06
    assert "| `n_eval` | Samples judged | 3,000 | count |" in page  # from _shared
    assert "| `ratio` | A over B | 1.234e+04 | × |" in page  # a float that is not a count
    assert "| `unknown` |  | 0.5 |  |" in page and "`seconds`" not in page  # run facts stay out
    assert metric_value(True) == "1" and metric_value(float("nan"), "count") == "nan"
