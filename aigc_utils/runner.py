"""Execute the chapters headless and build the book from the executed copies.

``run``: papermill injects the parameters (``profile``, ``seed``, …), nbclient executes — nbclient, not
papermill's engine, because it honours the ``raises-exception`` cell tag. Executed copies go to
``_build/executed/notebooks/<stem>.ipynb`` and metrics to ``_build/metrics/<stem>.json``.
``build``: Jupyter Book 1.x over a staged copy of the book whose notebooks are the executed copies.
"""

from __future__ import annotations

import atexit
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

from .core.checkpoints import atomic_write_bytes
from .core.profiles import resolve_profile

BUILD = Path("_build")
EXECUTED = BUILD / "executed" / "notebooks"
METRICS = BUILD / "metrics"
STAGE = BUILD / "src"
HTML = BUILD / "html"
CHECK_TAG = "raises-exception"
KERNEL_STARTUP_S = 60
PIN_TAG = "nbval-check-output"  # nbval compares this cell's stored output
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RunnerError(RuntimeError):
    """A failure the runner reports as one line and a non-zero exit."""


def toc_notebooks(root: Path = Path(".")) -> list[Path]:
    """The notebooks listed in ``_toc.yml``, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: list[Path] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            entry = node.get("file")
            if isinstance(entry, str) and entry.startswith("notebooks/"):
                found.append(root / (entry if entry.endswith(".ipynb") else entry + ".ipynb"))
            node = list(node.values())
        if isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    return found


def resolve_notebook(name: str, root: Path = Path(".")) -> Path:
    """Accept a path, a stem (``01_deep_learning_basics``) or a chapter number (``01``)."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    matches = sorted((root / "notebooks").glob(f"{path.stem}*.ipynb"))
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.stem for p in sorted((root / "notebooks").glob("*.ipynb")))
    raise RunnerError(f"no single notebook matches {name!r}; known: {known}")


@dataclass
class RunResult:
    notebook: Path
    ok: bool
    seconds: float
    message: str = ""


def execute_notebook(
    source: Path, profile: str, parameters: dict[str, object] | None = None, timeout: int = 1800
) -> RunResult:
    """Parameterize and execute one notebook; write its executed copy and finish its metrics file."""
    import papermill.iorw
    import papermill.parameterize
    from jupyter_client import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from tqdm.auto import tqdm

    stem = source.stem
    EXECUTED.mkdir(parents=True, exist_ok=True)
    METRICS.mkdir(parents=True, exist_ok=True)
    metrics_file = METRICS / f"{stem}.json"
    metrics_file.unlink(missing_ok=True)

    nb = papermill.iorw.load_notebook_node(str(source))  # also gives every cell a tags list
    params = {"profile": profile, **(parameters or {})}
    nb = papermill.parameterize.parameterize_notebook(nb, params)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    current = {"index": -1}
    bar = tqdm(total=len(code_cells), desc=f"{stem} [{profile}]", unit="cell", leave=True, file=sys.stdout)
    os.environ["AIGC_METRICS_DIR"] = str(METRICS.resolve())
    os.environ["AIGC_PROFILE"] = profile
    sockets = tempfile.mkdtemp(prefix="aigc-kernel-")
    # IPC transport: the kernel's sockets are files, so no loopback interface (and no open TCP port) is needed
    km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        startup_timeout=KERNEL_STARTUP_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(source.parent.resolve())}},
        on_cell_start=lambda cell, cell_index: current.update(index=cell_index),
        on_cell_executed=lambda **_: bar.update(1),
    )
    start = time.perf_counter()
    ok, message = True, ""
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        ok = False
        index = current["index"]
        cell_no = code_cells.index(index) + 1 if index in code_cells else "?"
        lines = [ln for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
        summary = next((ln for ln in reversed(lines) if re.match(r"^\w*(Error|Exception|Failed)\b", ln)), lines[-1] if lines else type(exc).__name__)
        message = f"{source}: code cell {cell_no} (cell index {index}) failed: {summary.strip()}"
    except (RuntimeError, TimeoutError) as exc:
        if current["index"] >= 0:  # not a start-up failure
            raise
        ok = False
        message = (
            f"{source}: the Jupyter kernel did not start within {KERNEL_STARTUP_S} s "
            f"({type(exc).__name__}); check that `{sys.executable} -m ipykernel --version` works "
            "(run `make setup` to reinstall) and that the machine is not out of memory"
        )
    finally:
        bar.close()
        atexit.unregister(client._cleanup_kernel)  # registered by nbclient; stale after a failed start
        if km.has_kernel:  # the kernel manager is ours, so stopping the kernel is too
            km.shutdown_kernel(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
        seconds = time.perf_counter() - start
        drop_widget_outputs(nb)
        nbformat.write(nb, EXECUTED / f"{stem}.ipynb")
    if ok and not metrics_file.exists():
        ok, message = False, f"{source}: ran, but its Results cell wrote no {metrics_file}"
    elif metrics_file.exists():  # a failed bar keeps its numbers, without a finishing time
        record = json.loads(metrics_file.read_text())
        record["seconds"] = round(seconds, 1)
        if ok:
            record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        blob = json.dumps(record, indent=2).encode()
        atomic_write_bytes(metrics_file, lambda handle: handle.write(blob))
    return RunResult(source, ok, seconds, message)


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _widget_text(model_id: str, state: dict[str, dict]) -> str | None:
    """The final text of a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML), from the widget state."""
    box = state.get(model_id, {}).get("state", {})
    parts = []
    for ref in box.get("children", []):
        child = state.get(str(ref).removeprefix("IPY_MODEL_"), {}).get("state", {})
        if "value" in child and isinstance(child["value"], str):
            parts.append(html.unescape(re.sub(r"<[^>]+>", "", child["value"])))
        elif "max" in child:
            done = float(child.get("value") or 0) / max(float(child["max"] or 1), 1e-9)
            parts.append("|" + "█" * round(10 * min(done, 1.0)) + " " * (10 - round(10 * min(done, 1.0))) + "|")
    return "".join(parts).replace("\u2007", " ").strip() or None


def drop_widget_outputs(nb: nbformat.NotebookNode) -> None:
    """Turn progress-bar widgets into their final text: a static page cannot run widgets, and their
    JavaScript would be loaded from a CDN."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                text = _widget_text(data.pop(WIDGET_MIME).get("model_id", ""), state)
                if text:
                    data["text/plain"] = text


def run(profile_name: str | None, names: list[str], parameters: dict[str, object] | None = None) -> int:
    """``aigc-book run``: execute notebooks in order; 0 when all pass, 1 otherwise (each failure named)."""
    profile = resolve_profile(profile_name).name
    notebooks = [resolve_notebook(n) for n in names] if names else toc_notebooks()
    results: list[RunResult] = []
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb} (profile {profile})", flush=True)
        result = execute_notebook(nb, profile, parameters)
        results.append(result)
        status = "ok" if result.ok else "FAILED"
        print(f"    {status} in {result.seconds:.1f} s -> {EXECUTED / nb.name}", flush=True)
        if not result.ok:
            print(f"    {result.message}", file=sys.stderr, flush=True)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"FAILED: {r.message} (partial executed copy kept in {EXECUTED / r.notebook.name})", file=sys.stderr)
    return 1 if failed else 0


def pin_outputs(source: Path) -> None:
    """Copy outputs of cells tagged ``nbval-check-output`` from the executed copy into ``source``
    and strip the rest (after ``aigc-book run --profile smoke NOTEBOOK``) for nbval to compare."""
    executed = nbformat.read(EXECUTED / source.name, as_version=4)
    by_id = {c.get("id"): c for c in executed.cells}
    nb = nbformat.read(source, as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = None
        pinned = PIN_TAG in cell.metadata.get("tags", []) or "NBVAL_CHECK_OUTPUT" in cell.source
        if pinned and cell.get("id") in by_id:
            cell.execution_count = count  # nbval refuses stored outputs of a cell that never ran
            cell.outputs = [o for o in by_id[cell["id"]].outputs if o.get("output_type") != "display_data"]
            for o in cell.outputs:
                if o.get("output_type") == "execute_result":
                    o["execution_count"] = None
        else:
            cell.outputs = []
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, source)


def check_executed(notebooks: list[Path]) -> list[str]:
    """Problems with executed copies: missing, unexecuted code cells, error outputs outside tagged cells."""
    problems = []
    for source in notebooks:
        path = EXECUTED / source.name
        if not path.exists():
            problems.append(f"{path} is missing: run `aigc-book run {source.stem}` first")
            continue
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            tags = cell.metadata.get("tags", [])
            if cell.execution_count is None:
                problems.append(f"{path}: cell {i} was never executed")
            if CHECK_TAG not in tags and any(o.get("output_type") == "error" for o in cell.outputs):
                problems.append(f"{path}: cell {i} has an error output")
    return problems


_EXTERNAL_SCRIPT = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["'](?:https?:)?//[^"']+""", re.I)


def external_loads(html_root: Path) -> list[str]:
    """Pages that load a script or stylesheet from outside the book."""
    bad = []
    for page in html_root.rglob("*.html"):
        for match in _EXTERNAL_SCRIPT.finditer(page.read_text(encoding="utf-8", errors="replace")):
            tag = match.group(0)
            if "<link" in tag.lower() and not re.search(r"stylesheet|preload|modulepreload", tag, re.I):
                continue
            bad.append(f"{page}: {tag[:120]}")
    return bad


_SITE = re.compile(r"(?:/[^\s\"']+)?/(site-packages|lib/python3\.\d+)/")


def fold_tracebacks(nb: nbformat.NotebookNode) -> None:
    """Show an error output as its last line (type and message), the traceback folded below it,
    without the building machine's paths."""
    for cell in nb.cells:
        for i, output in enumerate(cell.get("outputs", [])):
            if output.get("output_type") != "error":
                continue
            trace = _SITE.sub(r"…/\1/", _ANSI.sub("", "\n".join(output.get("traceback", []))))
            summary = html.escape(f"{output.get('ename', 'Error')}: {output.get('evalue', '')}")
            body = (
                f'<details class="aigc-traceback"><summary><code>{summary}</code></summary>'
                f"<pre>{html.escape(trace)}</pre></details>"
            )
            cell.outputs[i] = nbformat.v4.new_output("display_data", data={"text/html": body})


_PROGRESS = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+\s*\[|^\s*[^\s:]*:?\s*\d+it \[")  # tqdm: "x: 100%|██| 8/8 [", "8it ["


def drop_progress_bars(nb: nbformat.NotebookNode) -> None:
    """Remove progress bars (tqdm's lines, a widget's final text) from the outputs: they are for whoever
    runs the notebook; the page shows what the run measured."""
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text = output.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # what a terminal shows
                output["text"] = "\n".join(line for line in lines if not _PROGRESS.search(line))
                if not output["text"].strip():
                    continue
            elif set(output.get("data", {})) == {"text/plain"}:
                lines = [line for line in str(output["data"]["text/plain"]).splitlines() if line.strip()]
                if lines and all(_PROGRESS.search(line) for line in lines):
                    continue
            kept.append(output)
        if "outputs" in cell:
            cell.outputs = kept


def alt_text_to_cell_options(nb: nbformat.NotebookNode) -> None:
    """Give each figure its alt text on the page: MyST-NB reads ``alt`` from the cell's ``mystnb.image``
    options, the kernel puts it in each PNG output's metadata (``core.plotting.figure_alt_text``)."""
    for cell in nb.cells:
        alts = [o.get("metadata", {}).get("image/png", {}).get("alt") for o in cell.get("outputs", [])
                if "image/png" in o.get("data", {})]
        alts = list(dict.fromkeys(a for a in alts if a))  # one per figure, in order, repeats once
        if alts:
            options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
            options.setdefault("alt", " | ".join(alts))


def stage_book(root: Path = Path(".")) -> Path:
    """Copy the book's sources into ``_build/src`` with the executed notebooks and the vendored JS."""
    from .book import write_generated_pages, vendor_static

    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "README.md"):
        shutil.copy2(root / name, STAGE / name)
    shutil.copytree(root / "book", STAGE / "book")
    (STAGE / "notebooks").mkdir()
    for source in toc_notebooks(root):
        nb = nbformat.read(EXECUTED / source.name, as_version=4)
        fold_tracebacks(nb)
        drop_progress_bars(nb)
        alt_text_to_cell_options(nb)
        nbformat.write(nb, STAGE / "notebooks" / source.name)
    vendor_static(STAGE / "book" / "_static")
    write_generated_pages(STAGE, METRICS)
    return STAGE


def build(strict: bool = True) -> int:
    """``aigc-book build``: Jupyter Book (execution off) from the executed copies into ``_build/html``."""
    notebooks = toc_notebooks()
    problems = check_executed(notebooks)
    if problems:
        for p in problems:
            print(f"build: {p}", file=sys.stderr)
        return 1
    stage = stage_book()
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(stage), "--path-output", str(BUILD / "jb"), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("build:", " ".join(cmd), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        print("build: jupyter-book failed (warnings are errors in a strict build); see above", file=sys.stderr)
        return 1
    shutil.rmtree(HTML, ignore_errors=True)
    shutil.copytree(BUILD / "jb" / "_build" / "html", HTML)
    bad = external_loads(HTML)
    if bad:
        for b in bad[:20]:
            print(f"build: page loads from outside the book: {b}", file=sys.stderr)
        return 1
    print(f"build: open {(HTML / 'index.html').resolve()} (or `make serve` and http://localhost:8000)")
    return 0
