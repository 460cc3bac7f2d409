"""Chapter 04: self-supervised learning: masked language modelling, denoising, few-shot transfer."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core.checkpoints import cached_payload
from .core.train import History, adamw, fit, warmup_cosine_scheduler

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
IGNORE_INDEX = -100  # the label of a position without loss (PyTorch's cross-entropy default)
Forward = Callable[[nn.Module, dict], torch.Tensor]

# Sizes per profile. hidden/layers/heads/seq_len: the tiny BERT; headline_labels: labels per class
# of the headline few-shot numbers; minilm_finetune: fine-tune MiniLM (else frozen features and
# a probe); batch_size/steps/lr: MLM pretraining; denoise_steps: the denoiser's steps (= the
# MLM snapshot's);
# eval_rows: held-out rows scored; label_counts: labels per class of the few-shot curve; test_size:
# test sentences; ft_steps: fine-tuning steps; probe_labels: labels per class of the linear probes.
_COMMON = {"hidden": 128, "layers": 2, "heads": 2, "seq_len": 64, "headline_labels": 32,
           "minilm_finetune": False}
SIZES = {
    "smoke": {**_COMMON, "batch_size": 64, "steps": 40, "denoise_steps": 20, "lr": 2e-3,
              "eval_rows": 400, "label_counts": [8, 32], "test_size": 200, "ft_steps": 20,
              "probe_labels": 64},
    "cpu": {**_COMMON, "batch_size": 128, "steps": 640, "denoise_steps": 120, "lr": 2e-3,
            "eval_rows": 2000, "label_counts": [8, 32, 128], "test_size": 600, "ft_steps": 60,
            "probe_labels": 128},
    "gpu": {**_COMMON, "hidden": 256, "layers": 4, "heads": 4, "batch_size": 256, "steps": 6000,
            "denoise_steps": 3000, "lr": 1e-3, "eval_rows": 100_000, "test_size": 2000,
            "label_counts": [8, 32, 128, 512], "ft_steps": 150, "probe_labels": 512,
            "minilm_finetune": True},
}
# Fine-tuning: batch size; body learning rate from scratch / from pretrained weights; the new head's
# rate; the naive recipe's one rate for everything; MiniLM's body rate (gpu profile).
FINETUNE = {"batch_size": 32, "lr_body": {"scratch": 1e-3, "pretrained": 3e-4}, "lr_head": 3e-3,
            "naive_lr": 1e-3, "minilm_lr_body": 5e-5}

# ---- 1. Corpus: chapters, the train / held-out split, sentences ----------------------------------
_CHAPTER_HEAD = re.compile(r"^(?:CHAPTER|Chapter)\s+[IVXLC\d]+\.?\s*$", flags=re.M)
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*(\s+)(?=[\"'“‘(]*[A-Z])")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Dr.", "St.", "Messrs.")


class NovelChapter(NamedTuple):
    """One chapter of one novel (``index`` counts chapters within the novel from 0)."""

    novel: str
    index: int
    text: str


def split_chapters(novels: dict[str, str]) -> list[NovelChapter]:
    """Cut every novel at its ``CHAPTER n`` headings; front matter before the first is dropped."""
    chapters: list[NovelChapter] = []
    for novel, text in novels.items():
        heads = list(_CHAPTER_HEAD.finditer(text))
        ends = [m.start() for m in heads][1:] + [len(text)]
        for index, (head, end) in enumerate(zip(heads, ends)):
            body = text[head.end() : end].strip()
            if body:
                chapters.append(NovelChapter(novel, index, body))
    return chapters


def train_heldout_split(chapters: Sequence[NovelChapter],
                        every: int = 8) -> tuple[list[NovelChapter], list[NovelChapter]]:
    """Every ``every``-th chapter of each novel (indices 3, 3+every, ...) is held out; rest trains.
    Whole scenes stay on one side: no leak from neighbouring sentences."""
    offset = min(3, every - 1)
    held = [c for c in chapters if c.index % every == offset]
    return [c for c in chapters if c.index % every != offset], held


def split_sentences(text: str, min_words: int = 1, max_words: int = 10_000) -> list[str]:
    """Whitespace-normalised sentences, kept when ``min_words <= len(words) <= max_words``."""
    flat = re.sub(r"\s+", " ", text.replace("_", "")).strip()
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(flat):
        if flat[: m.start() + 1].endswith(_ABBREVIATIONS):
            continue  # "Mr. Darcy" is not the end of a sentence
        pieces.append(flat[start : m.start(1)])
        start = m.end(1)
    pieces.append(flat[start:])
    return [s for s in pieces if min_words <= len(s.split()) <= max_words]


# ---- 2. WordPiece tokenizer ----------------------------------------------------------------------
def _fast_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=512)


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2):
    """A lower-casing BERT-style WordPiece tokenizer (``[CLS] ... [SEP]``; ids 0..4: specials)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    # The trainer numbers its alphabet in hash order (which also breaks ties between merges), so
    # ids, not the set of pieces, vary between runs. Encoding is a longest match against the *set*:
    # canonical ids (specials, then every piece sorted) make the tokenizer identical in every run.
    order = list(SPECIAL_TOKENS) + sorted(t for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(order)}, unk_token="[UNK]",
                                 max_input_chars_per_word=100)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return _fast_tokenizer(tok)


def cached_wordpiece(texts: Sequence[str], vocab_size: int, key: dict) -> tuple[object, bool]:
    """:func:`train_wordpiece` behind the cache (``key`` names what changes ``texts``)."""
    from tokenizers import Tokenizer

    def produce() -> dict:
        return {"json": train_wordpiece(texts, vocab_size).backend_tokenizer.to_str()}

    payload, hit = cached_payload("04_wordpiece", {**key, "vocab_size": vocab_size}, produce)
    return _fast_tokenizer(Tokenizer.from_str(payload["json"])), hit


def sentence_rows(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """``(n, seq_len)`` ids, one text per row, ``[CLS] t_1 .. t_n [SEP]`` then ``[PAD]``, cut to
    ``seq_len``, stably sorted by length (:func:`length_batch` cuts batches of similar length)."""
    ids = sorted(tokenizer(list(texts), truncation=True, max_length=seq_len)["input_ids"], key=len)
    rows = torch.full((len(ids), seq_len), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        rows[i, : len(row)] = torch.tensor(row)
    return rows


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Drop the columns that are padding in every row (``attention_mask`` 0); returns both."""
    width = int(attention_mask.sum(1).max())
    return input_ids[:, :width], attention_mask[:, :width]


def length_batch(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` consecutive rows of the length-sorted ``rows`` from a random start."""
    start = int(torch.randint(max(len(rows) - batch_size, 0) + 1, (1,), generator=generator))
    return rows[start : start + batch_size]


# ---- 3. BERT's masking, by hand ------------------------------------------------------------------
def bert_mask(input_ids: torch.Tensor, special_mask: torch.Tensor, vocab_size: int, mask_id: int,
              mlm_prob: float = 0.15, mask_replace_prob: float = 0.8,
              random_replace_prob: float = 0.1, generator: torch.Generator | None = None,
              random_low: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption. Select 15% of the non-special positions; of those, 80% -> ``[MASK]``,
    10% -> a random token from ``[random_low, vocab_size)``, 10% unchanged. Returns ``(inputs,
    labels)``: the original id at selected positions, -100 (no loss) everywhere else.

    The draws come in the order of ``DataCollatorForLanguageModeling.torch_mask_tokens``: with the
    same generator state both give identical batches. ``mask_replace_prob=0`` is noise injection.
    """
    labels = input_ids.clone()
    inputs = input_ids.clone()
    prob = torch.full(labels.shape, mlm_prob).masked_fill(special_mask.bool(), 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool()
    labels[~selected] = IGNORE_INDEX
    p_mask = torch.full(labels.shape, mask_replace_prob)
    to_mask = torch.bernoulli(p_mask, generator=generator).bool() & selected
    inputs[to_mask] = mask_id
    if mask_replace_prob == 1 or random_replace_prob == 0:
        return inputs, labels
    p_random = torch.full(labels.shape, random_replace_prob / (1 - mask_replace_prob))
    to_random = torch.bernoulli(p_random, generator=generator).bool() & selected & ~to_mask
    random_ids = torch.randint(random_low, vocab_size, labels.shape, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def masking_rates(original: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
                  special: torch.Tensor, mask_id: int) -> dict[str, float]:
    """Observed rates: selected / eligible; [MASK] / random / kept (a random draw of the original
    token counts as kept) among the selected; and three checks (1.0 = true) of the conventions."""
    sel = labels != IGNORE_INDEX
    n_sel = max(int(sel.sum()), 1)
    masked = sel & (inputs == mask_id)
    labels_ok = (labels[sel] == original[sel]).all() & (labels[~sel] == IGNORE_INDEX).all()
    return {"selected": int(sel.sum()) / max(int((~special.bool()).sum()), 1),
            "mask": int(masked.sum()) / n_sel,
            "random": int((sel & (inputs != original) & ~masked).sum()) / n_sel,
            "kept": int((sel & (inputs == original)).sum()) / n_sel,
            "labels_ok": float(labels_ok),
            "special_selected": float((sel & special.bool()).any()),
            "unselected_changed": float(((inputs != original) & ~sel).any())}


MASK_KINDS = ("unchanged", "[MASK]", "random", "kept")  # what happened to each position


def mask_kinds(original: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
               mask_id: int) -> torch.Tensor:
    """Per position, an index into :data:`MASK_KINDS`: 0 not selected, 1 ``[MASK]``, 2 a random
    token, 3 selected but kept (a random draw of the original token counts as kept, as in
    :func:`masking_rates`)."""
    sel = labels != IGNORE_INDEX
    kinds = torch.zeros_like(original)
    kinds[sel & (inputs == original)] = 3
    kinds[sel & (inputs != original)] = 2
    kinds[sel & (inputs == mask_id)] = 1
    return kinds


def masking_rows(tokenizer, original: torch.Tensor, inputs: torch.Tensor,
                 labels: torch.Tensor) -> list[tuple[list[str], list[str], list[int]]]:
    """(original tokens, input tokens, :func:`mask_kinds`) of each row, ``[PAD]`` left out: what
    :func:`plot_masking` draws."""
    kinds = mask_kinds(original, inputs, labels, tokenizer.mask_token_id)
    tokens = tokenizer.convert_ids_to_tokens
    keep = original != tokenizer.pad_token_id
    return [(tokens(o[k].tolist()), tokens(i[k].tolist()), c[k].tolist())
            for o, i, c, k in zip(original, inputs, kinds, keep)]


def plot_masking(rows: list[tuple[list[str], list[str], list[int]]], title: str | None = None,
                 width: int = 80):
    """Draw masked sentences as coloured token boxes: ``rows`` of (original tokens, input tokens,
    kinds). A box shows the input token; a changed one shows the original below it. Lines wrap
    at ``width`` characters. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = ["#f2f2f2", "#4c72b0", "#dd8452", "#55a868"]
    lines: list[list[tuple[str, str, int]]] = []
    for original, inputs, kinds in rows:
        lines.append([])
        used = 0
        for orig, shown, kind in zip(original, inputs, kinds):
            if used + len(shown) + 1 > width and lines[-1]:
                lines.append([])
                used = 0
            lines[-1].append((orig, shown, kind))
            used += max(len(shown), len(orig) if kind in (1, 2) else 0) + 1
    fig = plt.figure(figsize=(7.6, 0.52 * len(lines) + 0.7))
    ax = fig.add_axes((0.01, 0.0, 0.98, 1 - 0.7 / (0.52 * len(lines) + 0.7)))
    ax.set(xlim=(0, width), ylim=(len(lines), -0.05))
    ax.set_axis_off()
    for y, line in enumerate(lines):
        x = 0.0
        for orig, shown, kind in line:
            w = max(len(shown), len(orig) if kind in (1, 2) else 0) + 1
            ax.add_patch(plt.Rectangle((x, y), w - 0.3, 0.42, color=colours[kind]))
            ax.text(x + 0.2, y + 0.21, shown, va="center", fontsize=9, family="monospace",
                    color="white" if kind in (1, 2) else "black")
            if kind in (1, 2):
                ax.text(x + 0.2, y + 0.62, orig, va="center", fontsize=9, family="monospace",
                        color="#555555")
            x += w
    handles = [Patch(color=c, label=k) for c, k in zip(colours, MASK_KINDS)]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4,
              fontsize=9, frameon=False, title=title, title_fontsize=10)
    return fig


def compare_with_collator(tokenizer, rows: torch.Tensor, seed: int = 0, z: float = 5.0) -> dict:
    """Mask a batch by hand and with ``DataCollatorForLanguageModeling``: ``matches`` = 1.0 when our
    rates lie within ``z`` standard errors of theirs and of the expected, conventions kept."""
    from transformers import DataCollatorForLanguageModeling

    special = torch.tensor([tokenizer.get_special_tokens_mask(r, already_has_special_tokens=True)
                            for r in rows.tolist()], dtype=torch.bool)
    batch = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)(
        [{"input_ids": r} for r in rows.tolist()])
    mask_id = tokenizer.mask_token_id
    ours_in, ours_lab = bert_mask(rows, special, len(tokenizer), mask_id,
                                  generator=torch.Generator().manual_seed(seed + 1))
    theirs = masking_rates(rows, batch["input_ids"], batch["labels"], special, mask_id)
    ours = masking_rates(rows, ours_in, ours_lab, special, mask_id)
    n_eligible = int((~special).sum())
    expected = {"selected": 0.15, "mask": 0.8, "random": 0.1 * (1 - 1 / len(tokenizer)),
                "kept": 0.1}
    ok = True
    for key, p in expected.items():
        se = math.sqrt(p * (1 - p) / (n_eligible * (1 if key == "selected" else 0.15)))
        ok &= abs(ours[key] - p) <= z * se and abs(ours[key] - theirs[key]) <= z * se * math.sqrt(2)
    for r in (ours, theirs):
        ok &= r["labels_ok"] == 1.0 and r["special_selected"] == r["unselected_changed"] == 0.0
    return {"ours": ours, "collator": theirs, "matches": float(ok)}


# ---- 4. Tiny BERT and its pretraining ------------------------------------------------------------
def tiny_bert_config(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 2,
                     seq_len: int = 64, dropout: float = 0.0, pad_token_id: int = 0):
    """A small ``BertConfig`` (feed-forward width 4 x hidden, like BERT)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=4 * hidden,
                      max_position_embeddings=seq_len, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id,
                      type_vocab_size=1)


def masked_lm_logits(model, inputs: torch.Tensor, labels: torch.Tensor,
                     attention_mask: torch.Tensor | None = None):
    """Logits of a ``BertForMaskedLM`` at the labelled positions only, and those labels.

    The library's forward projects *every* position onto the vocabulary and then ignores 85% of
    them; selecting the labelled hidden states first gives the same loss at a fraction of the cost.
    """
    hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
    keep = labels != IGNORE_INDEX
    return model.cls(hidden[keep]), labels[keep]


@dataclass(frozen=True)
class Objective:
    """A corruption recipe for :func:`bert_mask`: BERT's MLM or noise injection."""

    name: str
    mlm_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1


MLM = Objective("mlm")
DENOISE = Objective("denoise", mask_replace_prob=0.0, random_replace_prob=0.8)


def corrupt(rows: torch.Tensor, tokenizer, objective: Objective, generator: torch.Generator):
    """Apply ``objective`` to sentence rows; ``[CLS]``, ``[SEP]``, ``[PAD]`` are never selected."""
    ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    special = torch.isin(rows, torch.tensor(ids))
    return bert_mask(rows, special, len(tokenizer), tokenizer.mask_token_id, objective.mlm_prob,
                     objective.mask_replace_prob, objective.random_replace_prob, generator,
                     random_low=len(SPECIAL_TOKENS))


def masked_batch(model, rows: torch.Tensor, tokenizer, objective: Objective,
                 generator: torch.Generator, device: torch.device | str = "cpu"):
    """Trim ``rows``, corrupt them, and return :func:`masked_lm_logits` (logits, targets)."""
    rows, attention = trim(rows, (rows != tokenizer.pad_token_id).long())
    inputs, labels = corrupt(rows, tokenizer, objective, generator)
    return masked_lm_logits(model, inputs.to(device), labels.to(device), attention.to(device))


def no_embedding_decay(name: str, param: torch.Tensor) -> bool:
    """Weight decay for the weight matrices, not embeddings, biases or LayerNorm gains."""
    return param.ndim >= 2 and "embeddings" not in name


def pretrain(model, rows: torch.Tensor, tokenizer, objective: Objective, steps: int,
             batch_size: int, lr: float, warmup: int, seed: int = 0,
             device: torch.device | str = "cpu",
             snapshot_at: int | None = None) -> tuple[History, dict | None]:
    """Pretrain a ``BertForMaskedLM``; returns the history and (``snapshot_at``) the weights then.

    Each step corrupts a fresh batch (dynamic masking); the loss is the cross-entropy at the
    selected positions only. AdamW, warm-up then cosine to 10% of ``lr``, gradient norm <= 1.
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = adamw(model, lr, 0.01, betas=(0.9, 0.98), decay=no_embedding_decay)
    snapshot = {}

    def step(i: int) -> torch.Tensor:
        batch = length_batch(rows, batch_size, gen)
        logits, targets = masked_batch(model, batch, tokenizer, objective, gen, device)
        return F.cross_entropy(logits.float(), targets)

    def keep_snapshot(i: int) -> None:
        if i + 1 == snapshot_at:
            snapshot.update({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})

    schedule = warmup_cosine_scheduler(opt, warmup, steps, floor=0.1)
    history = fit(step, steps, opt, scheduler=schedule, clip=1.0, on_step=keep_snapshot,
                  desc=f"pretrain ({objective.name})")
    model.eval()
    return history, snapshot or None


@torch.no_grad()
def evaluate_mlm(model, rows: torch.Tensor, tokenizer, unigram_id: int, seed: int = 0,
                 batch_size: int = 128, device: torch.device | str = "cpu") -> dict[str, float]:
    """Held-out masked-token accuracy, perplexity (exp of the mean cross-entropy; 80/10/10 masking)
    and the accuracy of always predicting ``unigram_id``."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).eval()
    n = correct = base = nll = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        logits, targets = masked_batch(model, batch, tokenizer, MLM, gen, device)
        nll += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        base += (targets == unigram_id).sum().item()
        n += len(targets)
    return {"accuracy": correct / n, "perplexity": math.exp(nll / n),
            "unigram_accuracy": base / n, "n": n}


# ---- 5. The downstream task: is this sentence as Austen wrote it, or shuffled? -------------------
def shuffle_window(words: list[str], window: int, rng: np.random.Generator) -> list[str]:
    """Permute ``window`` consecutive words (never the identity); ``window <= 0``: all of them."""
    if window <= 0 or len(words) < window:
        window = len(words)
    start = int(rng.integers(0, len(words) - window + 1))
    span = words[start : start + window]
    for _ in range(10):
        perm = rng.permutation(window)
        if (perm != np.arange(window)).any() and [span[i] for i in perm] != span:
            break
    return words[:start] + [span[i] for i in perm] + words[start + window :]


def order_task(sentences: Sequence[str], n: int, window: int,
               seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` balanced examples, one per sentence: 1 = as written, 0 = ``window`` words permuted."""
    rng = np.random.default_rng(seed)
    pool = [s for s in sentences if len(set(s.split())) >= max(window, 2)]
    idx = rng.choice(len(pool), size=n, replace=False)
    labels = np.array([i % 2 for i in range(n)], dtype=np.int64)
    texts = [pool[i] if labels[j] == 1 else " ".join(shuffle_window(pool[i].split(), window, rng))
             for j, i in enumerate(idx)]
    return texts, labels


class SentenceClassifier(nn.Module):
    """A BERT encoder, mean pooling over real tokens, LayerNorm, a zero-initialised linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.norm = nn.LayerNorm(encoder.config.hidden_size)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head(self.norm((states * m).sum(1) / m.sum(1).clamp(min=1)))


def encode(tokenizer, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    """Tokenise to padded ``input_ids`` / ``attention_mask`` tensors (truncated to ``max_len``)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _batches(data: dict[str, torch.Tensor], batch_size: int, device) -> Iterator[dict]:
    for start in range(0, len(data["input_ids"]), batch_size):
        ids, mask = trim(data["input_ids"][start : start + batch_size].to(device),
                         data["attention_mask"][start : start + batch_size].to(device))
        yield {"input_ids": ids, "attention_mask": mask}


def _call(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch)


def finetune(model: nn.Module, data: dict[str, torch.Tensor], labels: torch.Tensor, steps: int,
             lr_body: float, lr_head: float, batch_size: int = 32, seed: int = 0,
             device: torch.device | str = "cpu", forward: Forward = _call,
             head_names: tuple[str, ...] = ("head", "norm", "classifier", "pooler")) -> History:
    """Fine-tune every weight for ``steps`` AdamW steps, body and head at their own learning rates
    (constant after a 10% warm-up), ``batch_size`` rows drawn with replacement per step."""
    gen = torch.Generator().manual_seed(seed)
    head = [p for n, p in model.named_parameters() if n.split(".")[0] in head_names]
    body = [p for n, p in model.named_parameters() if n.split(".")[0] not in head_names]
    opt = torch.optim.AdamW([{"params": body, "lr": lr_body}, {"params": head, "lr": lr_head}],
                            weight_decay=0.01)
    model.to(device).train()

    def step(i: int) -> torch.Tensor:
        rows = torch.randint(len(labels), (min(batch_size, len(labels)),), generator=gen)
        batch = next(_batches({k: v[rows] for k, v in data.items()}, len(rows), device))
        return F.cross_entropy(forward(model, batch).float(), labels[rows].to(device))

    sched = warmup_cosine_scheduler(opt, max(steps // 10, 1), steps, floor=1.0)
    history = fit(step, steps, opt, scheduler=sched, clip=1.0, progress=False)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 256,
            device: torch.device | str = "cpu", forward: Forward = _call) -> torch.Tensor:
    """Argmax class of every row of ``data``."""
    model.to(device).eval()
    batches = _batches(data, batch_size, device)
    return torch.cat([forward(model, b).argmax(-1).cpu() for b in batches])


@torch.no_grad()
def embed(encoder: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 256,
          device: torch.device | str = "cpu", layers: Sequence[int] = (-1,)) -> np.ndarray:
    """Frozen features: mean-pooled hidden states of the chosen ``layers``, concatenated."""
    encoder.to(device).eval()
    out = []
    for b in _batches(data, batch_size, device):
        states = encoder(**b, output_hidden_states=True).hidden_states
        m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.cat([(states[i].float() * m).sum(1) / m.sum(1) for i in layers], -1))
    return torch.cat(out).cpu().numpy()


def linear_probe(train_x, train_y: np.ndarray, test_x, test_y: np.ndarray, c: float = 1.0,
                 standardise: bool = True) -> float:
    """Test accuracy of a logistic regression on fixed features (standardised by default)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = [StandardScaler()] if standardise else []
    clf = make_pipeline(*scaler, LogisticRegression(C=c, max_iter=2000)).fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def bag_of_words_accuracy(train_texts: Sequence[str], train_y: np.ndarray,
                          test_texts: Sequence[str], test_y: np.ndarray) -> float:
    """:func:`linear_probe` on TF-IDF weighted word and punctuation counts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    return linear_probe(vec.fit_transform(train_texts), train_y, vec.transform(test_texts),
                        test_y, standardise=False)
