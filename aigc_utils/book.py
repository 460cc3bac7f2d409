"""Generated parts of the rendered book: vendored MathJax / mermaid, verified stamps."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nbformat
import yaml

from .core.assets import ASSETS, ONLINE_ONLY, ensure
from .core.checkpoints import sha256_file
from .core.results import bar_sides, shown_number


def vendor_static(static: Path) -> None:
    """Copy MathJax 3 and mermaid 11 (installed from npm by ``make setup``) into the book's ``_static``."""
    modules = ensure("npm-vendor")
    shutil.copytree(modules / "mathjax" / "es5", static / "mathjax", dirs_exist_ok=True)
    mermaid = static / "mermaid"
    mermaid.mkdir(parents=True, exist_ok=True)
    dist = modules / "mermaid" / "dist"
    shutil.copy2(dist / "mermaid.esm.min.mjs", mermaid / "mermaid.esm.min.mjs")
    shutil.copytree(dist / "chunks" / "mermaid.esm.min", mermaid / "chunks" / "mermaid.esm.min", dirs_exist_ok=True)


def dashboard_label(stem: str) -> str:
    """The target of a chapter's section on the dashboard (chapter stamps link to it)."""
    return "dashboard-" + stem.replace("_", "-").lower()  # Sphinx lowercases labels


def stamp_text(record: dict[str, object], stem: str | None = None) -> str:
    """"Last run: date · profile · device · torch · seconds" from one metrics record; with ``stem``,
    "Last run" links to the chapter's section of the results dashboard."""
    when = str(record.get("finished_at", "?"))[:10]
    last_run = f"{{ref}}`Last run <{dashboard_label(stem)}>`" if stem else "Last run"
    return (
        f"**{last_run}:** {when} · profile `{record.get('profile', '?')}` · {record.get('device', '?')} · "
        f"torch {record.get('torch', '?')} · {record.get('seconds', '?')} s"
    )


def provenance_markdown(max_files: int = 8) -> str:
    """The provenance table of every asset the book reads, from the asset registry and the files on disk."""
    rows = ["| Asset | What it is | Offline source | Licence | Online source; files (size, sha256) |",
            "|---|---|---|---|---|"]  # five columns: six do not fit the page's column
    for asset in ASSETS.values():
        path = asset.path()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files = [p for p in files if p.exists()]
        if not files:
            listing = "not installed: run `make setup`"
        elif len(files) > max_files:
            listing = f"{len(files):,} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"
        else:
            listing = "<br>".join(
                f"`{p.relative_to(path.parent)}` {p.stat().st_size / 1e6:.2f} MB `{sha256_file(p)[:16]}…`"
                for p in files
            )
        rows.append(f"| {asset.name} | {asset.what} | {asset.source} | {asset.licence} | "
                    f"online: {asset.online or '—'}<br>{listing} |")
    for what, online, licence in ONLINE_ONLY:
        rows.append(f"| — | {what} | none | {licence} | online: {online}<br>downloaded only when reachable |")
    return "\n".join(rows)


def write_generated_pages(stage: Path, metrics: Path) -> None:
    """Stamp every chapter with its last run; write the results dashboard and the provenance table."""
    write_dashboard(stage, metrics)
    page = stage / "book" / "provenance.md"
    page.write_text(page.read_text().replace("<!-- AIGC-PROVENANCE -->", provenance_markdown()))
    for nb_path in sorted((stage / "notebooks").glob("*.ipynb")):
        record_path = metrics / f"{nb_path.stem}.json"
        if not record_path.exists():
            continue
        nb = nbformat.read(nb_path, as_version=4)
        stamp = stamp_text(json.loads(record_path.read_text()), nb_path.stem)
        stamp = nbformat.v4.new_markdown_cell(f"```{{admonition}} Verified\n{stamp}\n```")
        stamp.metadata["tags"] = ["aigc-stamp"]
        nb.cells.insert(1, stamp)
        nbformat.write(nb, nb_path)


_META = ("profile", "device", "seconds", "torch", "finished_at")


def bar_margins(bars: dict[str, bool], record: dict[str, object]) -> list[tuple[str, float, bool]]:
    """For each bar ``lhs OP rhs``: ``(bar, margin, passed)``, the factor by which it is met (> 1)
    or missed; bars with a zero side or sides of different signs have no such ratio, so none."""
    numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
    out = []
    for bar, ok in bars.items():
        sides = bar_sides(bar, numbers)  # type: ignore[arg-type]
        if sides is None:
            continue
        lhs, op, rhs = sides
        if lhs * rhs > 0:  # oriented so that > 1 is on the passing side
            out.append((bar, lhs / rhs if op[0] in ">=" else rhs / lhs, ok))
    return out


def margin_figure(stem: str, margins: list[tuple[str, float, bool]], out: Path) -> None:
    """A small chart of how far each bar is from failing: measured / required, on a log axis around 1."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 0.45 * len(margins) + 0.9), dpi=150)
    labels = [bar if len(bar) <= 48 else bar[:47] + "…" for bar, _, _ in margins]
    shown = [min(max(ratio, 0.1), 10.0) for _, ratio, _ in margins]  # ×10 and beyond: drawn at ×10
    ax.barh(range(len(margins)), [r - 1 for r in shown], left=1,
            color=["#2a9d8f" if ok else "#e63946" for _, _, ok in margins])
    ax.axvline(1, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(min(shown + [1]) / 1.35, max(shown + [1]) * 2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("×%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for i, ((_, ratio, _), at) in enumerate(zip(margins, shown)):
        ax.annotate(f"×{ratio:.3g}", (at, i), xytext=(4 if ratio >= 1 else -4, 0), textcoords="offset points",
                    ha="left" if ratio >= 1 else "right", va="center", fontsize=9)
    ax.set_yticks(range(len(margins)), labels, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("factor by which each bar is met (×1: exactly at the bar)", fontsize=10)
    ax.set_title(f"{stem}: this run against its quality bars", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


Descriptions = dict[str, dict[str, dict[str, str]]]  # stem or "_shared" → key → {what, unit}


def describe_metric(descriptions: Descriptions, stem: str, key: str) -> dict[str, str]:
    """``{what, unit}`` of a chapter's metric from ``book/metrics.yml``: the chapter's own entry,
    else the ``_shared`` one, else empty."""
    own, shared = descriptions.get(stem) or {}, descriptions.get("_shared") or {}
    return dict(own.get(key) or shared.get(key) or {})


def metric_value(value: object, unit: str = "") -> str:
    """A metric as the dashboard shows it: ints, and floats whose unit is "count" when integral
    or from 1,000 up, as whole numbers with thousands separators (``8``, not ``8.0``;
    ``2,560,124``, not ``2.56e+06``); other floats to four significant digits."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or (isinstance(value, float) and unit == "count" and math.isfinite(value)
                                  and (value.is_integer() or abs(value) >= 1000)):
        return shown_number(value)  # the Results cell's rule for whole numbers
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def dashboard_markdown(
    stems: list[str], titles: dict[str, str], metrics: Path, figures: Path | None = None,
    anchors: dict[str, list[str]] | None = None, descriptions: Descriptions | None = None,
) -> str:
    """The dashboard: per chapter its run (profile, device, torch, date, seconds), metrics with
    what each measures and its unit (``book/metrics.yml``), bars and the published anchors of
    ``book/anchors.yml``."""
    summary = ["| Chapter | Profile | Device | Seconds | Bars |", "|---|---|---|---|---|"]
    sections: list[str] = []
    for stem in stems:
        title = titles.get(stem, stem)
        link = f"[{title}](../notebooks/{stem})"
        path = metrics / f"{stem}.json"
        if not path.exists():
            summary.append(f"| {link} | — | — | — | **not run** |")
            sections.append(f"({dashboard_label(stem)})=\n### {title}\n\nThis chapter has not been run: no `{path.name}`.\n")
            continue
        record = json.loads(path.read_text())
        bars_path = metrics / f"{stem}.bars.json"
        bars: dict[str, bool] = json.loads(bars_path.read_text()) if bars_path.exists() else {}
        passed = sum(bars.values())
        verdict = f"{passed}/{len(bars)} passed" if all(bars.values()) else f"**{len(bars) - passed} FAILED** of {len(bars)}"
        summary.append(
            f"| {link} | {record.get('profile')} | {record.get('device')} | {record.get('seconds', '?')} | {verdict} |"
        )
        lines = [f"({dashboard_label(stem)})=", f"### {title}", "", stamp_text(record), ""]
        margins = bar_margins(bars, record)
        if figures is not None and margins:
            margin_figure(stem, margins, figures / f"{stem}.png")
            lines += [f"![How far each of {stem}'s quality bars is from failing]({figures.name}/{stem}.png)", ""]
        lines += ["| Metric | What it measures | Value | Unit |", "|---|---|---|---|"]
        for key, value in record.items():
            if key not in _META:
                about = describe_metric(descriptions or {}, stem, key)
                unit = about.get("unit", "")
                lines.append(f"| `{key}` | {about.get('what', '')} | {metric_value(value, unit)} "
                             f"| {unit} |")
        if bars:
            lines += ["", "| Quality bar | Outcome |", "|---|---|"]
            lines += [f"| `{bar}` | {'pass' if ok else '**FAILED**'} |" for bar, ok in bars.items()]
        published = (anchors or {}).get(stem, [])
        if published:
            lines += ["", "Published anchors:", ""] + [f"- {a}" for a in published]
        sections.append("\n".join(lines) + "\n")
    return "\n".join(["## At a glance", "", *summary, "", "## By chapter", "", *sections])


def notebook_title(path: Path) -> str:
    """The first markdown heading of a notebook."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def write_dashboard(stage: Path, metrics: Path) -> None:
    """Replace the marker in the staged ``book/results.md`` with the generated dashboard, each
    metric described from the staged ``book/metrics.yml``."""
    page = stage / "book" / "results.md"
    from .runner import toc_notebooks  # the dashboard follows the book's order, appendices last

    notebooks = toc_notebooks(stage)
    titles = {p.stem: notebook_title(p) for p in notebooks}
    anchors = yaml.safe_load((stage / "book" / "anchors.yml").read_text(encoding="utf-8"))
    descriptions = yaml.safe_load((stage / "book" / "metrics.yml").read_text(encoding="utf-8"))
    stems = [p.stem for p in notebooks]
    table = dashboard_markdown(stems, titles, metrics, stage / "book" / "dashboard", anchors,
                               descriptions)
    page.write_text(page.read_text().replace("<!-- AIGC-DASHBOARD -->", table))
