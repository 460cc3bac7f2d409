"""Generated parts of the rendered book: vendored MathJax / mermaid, verified stamps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat

from .assets import ensure


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


def write_generated_pages(stage: Path, metrics: Path) -> None:
    """Stamp every staged chapter with its last run and write the results dashboard (from ``_build/metrics``)."""
    write_dashboard(stage, metrics)
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
        "Vaswani et al. 2017 / nanoGPT: a 6-layer character model on Shakespeare reaches ~1.47 validation loss "
        "(nats/char) after minutes on a GPU.",
    ],
    "06_gpt2_finetuning": [
        "GPT-2 paper (Radford et al. 2019) Table 3, 117 M model zero-shot: WikiText-2 ppl 29.41, PTB 65.85.",
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
    "09_seed_errata": ["The seed's code blocks and formulas: every one treated must have a fix that runs and passes."],
}
_META = ("profile", "device", "seconds", "torch", "finished_at")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def dashboard_markdown(stems: list[str], titles: dict[str, str], metrics: Path) -> str:
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
        lines = [f"### {title}", "", stamp_text(record), "", "| Metric | Value |", "|---|---|"]
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
    table = dashboard_markdown([p.stem for p in notebooks], titles, metrics)
    page.write_text(page.read_text().replace("<!-- AIGC-DASHBOARD -->", table))
