"""Generated parts of the rendered book: vendored MathJax / mermaid, verified stamps."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import nbformat

from .core.assets import ASSETS, ONLINE_ONLY, ensure
from .core.checkpoints import sha256_file


def vendor_static(static: Path) -> None:
    """Copy MathJax 3 and mermaid 11 (installed from npm by ``make setup``) into the book's ``_static``."""
    modules = ensure("npm-vendor")
    shutil.copytree(modules / "mathjax" / "es5", static / "mathjax", dirs_exist_ok=True)
    mermaid = static / "mermaid"
    mermaid.mkdir(parents=True, exist_ok=True)
    dist = modules / "mermaid" / "dist"
    shutil.copy2(dist / "mermaid.esm.min.mjs", mermaid / "mermaid.esm.min.mjs")
    shutil.copytree(dist / "chunks" / "mermaid.esm.min", mermaid / "chunks" / "mermaid.esm.min", dirs_exist_ok=True)


def stamp_text(record: dict[str, object]) -> str:
    """"Last run: date · profile · device · torch · seconds" from one metrics record."""
    when = str(record.get("finished_at", "?"))[:10]
    return (
        f"**Last run:** {when} · profile `{record.get('profile', '?')}` · {record.get('device', '?')} · "
        f"torch {record.get('torch', '?')} · {record.get('seconds', '?')} s"
    )


def provenance_markdown(max_files: int = 8) -> str:
    """The provenance table of every asset the book reads, from the asset registry and the files on disk."""
    rows = ["| Asset | What it is | Offline source | Licence | Online source | Files (size, sha256) |",
            "|---|---|---|---|---|---|"]
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
                    f"{asset.online or '—'} | {listing} |")
    for what, online, licence in ONLINE_ONLY:
        rows.append(f"| — | {what} | none | {licence} | {online} | downloaded only when reachable |")
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
        stamp = nbformat.v4.new_markdown_cell(f"```{{admonition}} Verified\n{stamp_text(json.loads(record_path.read_text()))}\n```")
        stamp.metadata["tags"] = ["aigc-stamp"]
        nb.cells.insert(1, stamp)
        nbformat.write(nb, nb_path)


# Published numbers that serve as anchors on the dashboard, by chapter stem.
ANCHORS: dict[str, list[str]] = {
    "01_deep_learning_basics": [
        "Xiao et al. 2017 (Fashion-MNIST benchmark): MLP classifiers 0.87–0.88 test accuracy; CNNs about 0.92.",
    ],
    "02_gan_math": [
        "PacGAN (Lin et al. 2018) Table 1, 2D-ring (8 modes): GAN 6.3 modes / 98.2 % HQ; PacGAN2 7.9 / 95.6 %.",
        "PacGAN Table 1, 2D-grid (25 modes): GAN 17.3 modes / 94.8 % HQ; PacGAN2 23.8 / 91.3 %; PacGAN4 24.8 / 93.6 %.",
    ],
    "03_image_gan": [
        "Lucic et al. 2018 (Are GANs Created Equal?): best Inception-feature FID on MNIST roughly 7–10, on "
        "Fashion-MNIST roughly 21–31 across GAN variants — a different feature space from this book's classifier "
        "FID, so compare the normalised FID, not the raw number.",
    ],
    "04_self_supervised_mlm": [
        "Devlin et al. 2019: BERT-base pretrained on 3.3 B words for 1 M steps; all-MiniLM-L6-v2 was trained on "
        "over 1 B sentence pairs — the scale this chapter's few CPU minutes are compared against.",
    ],
    "05_transformer_decoder": [
        "nanoGPT README (Karpathy 2023), Shakespeare characters: the 6-layer, 384-wide 'baby GPT' reaches "
        "validation loss 1.47 nats/char in about 3 minutes on one A100; its CPU configuration (4 layers, "
        "128 wide, 2,000 iterations) about 1.88. A character bigram model sits near 2.5.",
    ],
    "06_gpt2_finetuning": [
        "GPT-2 paper (Radford et al. 2019) Table 3, smallest model zero-shot: WikiText-2 ppl 29.41, PTB 65.85. "
        "The paper lists that model as 117 M parameters; the released `gpt2` checkpoint counts 124 M "
        "(its token embedding, shared with the output layer, counted once).",
        "Hugging Face run_clm example: gpt2 fine-tuned on WikiText-2 reaches perplexity about 20.",
    ],
    "07_style_transfer": [
        "PyTorch Gatys tutorial: VGG19, content layer conv_4, style conv_1–conv_5, style weight 1e6, "
        "content weight 1, 300 L-BFGS steps at 512 px (GPU) or 128 px (CPU).",
    ],
    "08_inpainting": [
        "Pathak et al. 2016 Table 1 (Paris StreetView, centre hole): context encoder PSNR 18.58 dB on 128×128 "
        "photographs — natural scenes, so not directly comparable to 28×28 Fashion-MNIST.",
    ],
    "09_seed_errata": ["The source text's code blocks and formulas: every one must have a fix that runs and passes."],
}
_META = ("profile", "device", "seconds", "torch", "finished_at")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_COMPARISON = re.compile(r"\s*(<=|>=|==|<|>)\s*")


def bar_margins(bars: dict[str, bool], record: dict[str, object]) -> list[tuple[str, float, bool]]:
    """For each bar ``lhs OP rhs``: ``(bar, margin, passed)``, the factor by which it is met (> 1) or missed.

    Bars whose sides are zero or of different signs have no meaningful ratio and are left out.
    """
    numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
    out = []
    for bar, ok in bars.items():
        parts = _COMPARISON.split(bar, maxsplit=1)
        if len(parts) != 3:
            continue
        lhs, rhs = (float(eval(side, {"__builtins__": {}, "abs": abs, "min": min, "max": max, "math": math},
                                numbers)) for side in (parts[0], parts[2]))  # noqa: S307 - our own bars
        if lhs * rhs > 0:  # oriented so that > 1 is on the passing side
            out.append((bar, lhs / rhs if parts[1][0] in ">=" else rhs / lhs, ok))
    return out


def margin_figure(stem: str, margins: list[tuple[str, float, bool]], out: Path) -> None:
    """A small chart of how far each bar is from failing: measured / required, on a log axis around 1."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 0.45 * len(margins) + 0.9), dpi=150)
    labels = [bar if len(bar) <= 48 else bar[:47] + "…" for bar, _, _ in margins]
    ratios = [ratio for _, ratio, _ in margins]
    ax.barh(range(len(margins)), [r - 1 for r in ratios], left=1,
            color=["#2a9d8f" if ok else "#e63946" for _, _, ok in margins])
    ax.axvline(1, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(min(ratios + [1]) / 1.35, max(ratios + [1]) * 1.35)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("×%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for i, ratio in enumerate(ratios):
        ax.annotate(f"×{ratio:.3g}", (ratio, i), xytext=(4 if ratio >= 1 else -4, 0), textcoords="offset points",
                    ha="left" if ratio >= 1 else "right", va="center", fontsize=9)
    ax.set_yticks(range(len(margins)), labels, fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("margin: the factor by which the bar is met (×1 = exactly at the bar)", fontsize=10)
    ax.set_title(f"{stem}: this run against its quality bars", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def dashboard_markdown(stems: list[str], titles: dict[str, str], metrics: Path, figures: Path | None = None) -> str:
    """The dashboard: per chapter its run (profile, device, torch, date, seconds), metrics, bars and anchors."""
    out: list[str] = []
    summary = ["| Chapter | Profile | Device | Seconds | Bars |", "|---|---|---|---|---|"]
    sections: list[str] = []
    for stem in stems:
        title = titles.get(stem, stem)
        link = f"[{title}](../notebooks/{stem})"
        path = metrics / f"{stem}.json"
        if not path.exists():
            summary.append(f"| {link} | — | — | — | **not run** |")
            sections.append(f"### {title}\n\nThis chapter has not been run: no `{path.name}`.\n")
            continue
        record = json.loads(path.read_text())
        bars_path = metrics / f"{stem}.bars.json"
        bars: dict[str, bool] = json.loads(bars_path.read_text()) if bars_path.exists() else {}
        passed = sum(bars.values())
        verdict = f"{passed}/{len(bars)} passed" if all(bars.values()) else f"**{len(bars) - passed} FAILED** of {len(bars)}"
        summary.append(
            f"| {link} | {record.get('profile')} | {record.get('device')} | {record.get('seconds', '?')} | {verdict} |"
        )
        lines = [f"### {title}", "", stamp_text(record), ""]
        margins = bar_margins(bars, record)
        if figures is not None and margins:
            margin_figure(stem, margins, figures / f"{stem}.png")
            lines += [f"![How far each of {stem}'s quality bars is from failing]({figures.name}/{stem}.png)", ""]
        lines += ["| Metric | Value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in record.items() if k not in _META]
        if bars:
            lines += ["", "| Quality bar | Outcome |", "|---|---|"]
            lines += [f"| `{bar}` | {'pass' if ok else '**FAILED**'} |" for bar, ok in bars.items()]
        anchors = ANCHORS.get(stem, [])
        if anchors:
            lines += ["", "Published anchors:", ""] + [f"- {a}" for a in anchors]
        sections.append("\n".join(lines) + "\n")
    out += ["## At a glance", "", *summary, "", "## By chapter", "", *sections]
    return "\n".join(out)


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
    """Replace the marker in the staged ``book/results.md`` with the generated dashboard."""
    page = stage / "book" / "results.md"
    notebooks = sorted((stage / "notebooks").glob("*.ipynb"))
    titles = {p.stem: notebook_title(p) for p in notebooks}
    table = dashboard_markdown([p.stem for p in notebooks], titles, metrics, stage / "book" / "dashboard")
    page.write_text(page.read_text().replace("<!-- AIGC-DASHBOARD -->", table))
