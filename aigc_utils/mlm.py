"""Chapter 04: self-supervised learning — masked language modelling, denoising, and what pretraining buys.

Everything heavy the chapter runs lives here, in the order the chapter tells it:

1. the corpus: Austen's novels split *by chapter* into train / held-out (no sentence leaks);
2. a WordPiece tokenizer trained with HF ``tokenizers`` on the train split;
3. BERT's masking written by hand (:func:`bert_mask`; a test proves it agrees with
   ``transformers.DataCollatorForLanguageModeling``);
4. a tiny ``BertForMaskedLM`` pretrained on one sentence per row, the loss computed on the masked positions only;
5. a second self-supervised objective, *noise injection* (random-token corruption, no ``[MASK]``);
6. the downstream task (original vs locally shuffled sentences), few-shot fine-tuning and linear probes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
IGNORE_INDEX = -100  # the label of a position that carries no loss (PyTorch's cross-entropy default)

# --------------------------------------------------------------------------------------------------
# 1. Corpus: chapters, the train / held-out split, sentences
# --------------------------------------------------------------------------------------------------

_CHAPTER_HEAD = re.compile(r"^(?:CHAPTER|Chapter)\s+[IVXLC\d]+\.?\s*$", flags=re.M)
_SENTENCE_END = re.compile(r"[.!?][\"'”’)]*(\s+)(?=[\"'“‘(]*[A-Z])")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Dr.", "St.", "Messrs.")


@dataclass(frozen=True)
class Chapter:
    """One chapter of one novel (``index`` counts chapters within the novel from 0)."""

    novel: str
    index: int
    text: str


def split_chapters(novels: dict[str, str]) -> list[Chapter]:
    """Cut every novel at its ``CHAPTER n`` headings; the front matter before the first heading is dropped."""
    chapters: list[Chapter] = []
    for novel, text in novels.items():
        starts = [m.end() for m in _CHAPTER_HEAD.finditer(text)]
        ends = [m.start() for m in _CHAPTER_HEAD.finditer(text)][1:] + [len(text)]
        for index, (start, end) in enumerate(zip(starts, ends)):
            body = text[start:end].strip()
            if body:
                chapters.append(Chapter(novel, index, body))
    return chapters


def train_heldout_split(chapters: Sequence[Chapter], every: int = 8) -> tuple[list[Chapter], list[Chapter]]:
    """Every ``every``-th chapter of each novel (indices 3, 3+every, ...) is held out; the rest is train.

    Splitting by chapter rather than by sentence keeps whole scenes (and their rare names and phrases)
    on one side, so a held-out score is not inflated by neighbouring sentences seen in training.
    """
    offset = min(3, every - 1)
    held = [c for c in chapters if c.index % every == offset]
    train = [c for c in chapters if c.index % every != offset]
    return train, held


def split_sentences(text: str, min_words: int = 1, max_words: int = 10_000) -> list[str]:
    """Whitespace-normalised sentences of a text, kept when ``min_words <= len(words) <= max_words``."""
    flat = re.sub(r"\s+", " ", text.replace("_", "")).strip()
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(flat):
        if flat[: m.start() + 1].endswith(_ABBREVIATIONS):
            continue  # "Mr. Darcy" is not the end of a sentence
        pieces.append(flat[start : m.start(1)])
        start = m.end(1)
    pieces.append(flat[start:])
    out = []
    for sentence in pieces:
        words = sentence.split()
        if min_words <= len(words) <= max_words:
            out.append(sentence)
    return out


# --------------------------------------------------------------------------------------------------
# 2. WordPiece tokenizer
# --------------------------------------------------------------------------------------------------


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2):
    """Train a lower-casing BERT-style WordPiece tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    Encoding adds ``[CLS] ... [SEP]`` like BERT; ids 0..4 are ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(list(texts), trainer=trainer)
    # The trainer numbers its alphabet in hash order, which also breaks ties between equally frequent merges, so
    # the ids (not the set of pieces) differ from run to run. WordPiece encodes by longest match against the *set*,
    # so re-numbering canonically (specials, then every piece sorted) makes the tokenizer identical in every run.
    order = list(SPECIAL_TOKENS) + sorted(t for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(order)}, unk_token="[UNK]",
                                 max_input_chars_per_word=100)  # fmt: skip
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )  # fmt: skip
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )  # fmt: skip


def cached_wordpiece(texts: Sequence[str], vocab_size: int, key: dict) -> tuple[object, bool]:
    """:func:`train_wordpiece` behind the checkpoint cache (the tokenizer's JSON is stored as a string).

    Returns ``(tokenizer, loaded_from_cache)``; ``key`` must name everything that changes ``texts``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from .checkpoints import cached_payload

    def produce() -> dict:
        return {"json": train_wordpiece(texts, vocab_size).backend_tokenizer.to_str()}

    payload, hit = cached_payload("04_wordpiece", {**key, "vocab_size": vocab_size}, produce)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(payload["json"]), unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )  # fmt: skip
    return tok, hit


def sentence_rows(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """One text per row, ``[CLS] t_1 .. t_n [SEP]`` then ``[PAD]``, truncated to ``seq_len``; rows sorted by length.

    Every row starts its sentence at position 1, exactly as a sentence is fed to the classifier downstream, so a
    position embedding means "the k-th token of a sentence". Sorting by length (stably) lets :func:`length_batch`
    cut batches of similar length that waste little compute on padding. Returns a ``(n, seq_len)`` long tensor.
    """
    ids = sorted(tokenizer(list(texts), truncation=True, max_length=seq_len)["input_ids"], key=len)
    rows = torch.full((len(ids), seq_len), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        rows[i, : len(row)] = torch.tensor(row)
    return rows


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row (``attention_mask`` 0); returns both, trimmed."""
    width = int(attention_mask.sum(1).max())
    return input_ids[:, :width], attention_mask[:, :width]


def length_batch(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` consecutive rows of the length-sorted ``rows`` from a random start (length bucketing)."""
    start = int(torch.randint(max(len(rows) - batch_size, 0) + 1, (1,), generator=generator))
    return rows[start : start + batch_size]


# --------------------------------------------------------------------------------------------------
# 3. BERT's masking, by hand
# --------------------------------------------------------------------------------------------------


def bert_mask(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    mlm_prob: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
    random_low: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""BERT's corruption (Chapter 04, "Masking by hand"). Returns ``(inputs, labels)``.

    Each non-special position is *selected* with probability $p = $ ``mlm_prob`` (0.15):
    $s_i \sim \mathrm{Bernoulli}(p)$. A selected position is replaced by ``[MASK]`` with probability
    ``mask_replace_prob`` (0.8), else by a uniformly random token with probability
    ``random_replace_prob`` (0.1 of all selected), else left unchanged (the remaining 0.1).
    The loss is computed on the selected positions only; every other label is $-100$, which
    ``F.cross_entropy`` ignores:

    $$\mathcal{L}_{\text{MLM}} = -\frac{1}{|S|}\sum_{i \in S} \log p_\theta(x_i \mid \tilde{x}).$$

    The random draws are made in the same order as ``DataCollatorForLanguageModeling.torch_mask_tokens``,
    so with the same generator state the two give identical batches (tests/test_mlm.py checks both that
    and the rates). With ``mask_replace_prob=0`` this is *noise injection*: corrupt with random tokens,
    never show a ``[MASK]`` symbol, and reconstruct the original. Random tokens are drawn from
    ``[random_low, vocab_size)``: the collator uses 0 (it may insert ``[CLS]`` or ``[MASK]`` mid-sentence);
    our pretraining passes the number of special tokens so that noise is always a real word piece.
    """
    labels = input_ids.clone()
    inputs = input_ids.clone()
    prob = torch.full(labels.shape, mlm_prob)
    prob.masked_fill_(special_mask.bool(), 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool()
    labels[~selected] = IGNORE_INDEX
    to_mask = torch.bernoulli(torch.full(labels.shape, mask_replace_prob), generator=generator).bool() & selected
    inputs[to_mask] = mask_id
    if mask_replace_prob == 1 or random_replace_prob == 0:
        return inputs, labels
    scaled = random_replace_prob / (1 - mask_replace_prob)  # P(random | selected and not [MASK])
    to_random = torch.bernoulli(torch.full(labels.shape, scaled), generator=generator).bool() & selected & ~to_mask
    random_ids = torch.randint(random_low, vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def masking_rates(original: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, special: torch.Tensor,
                  mask_id: int) -> dict[str, float]:  # fmt: skip
    """Observed rates of a masked batch: selected / eligible, and [MASK] / random / kept among selected.

    "random" counts selected positions whose token changed to something other than ``[MASK]``; a random
    draw that happens to hit the original token counts as "kept" (the collator has the same property).
    """
    eligible = ~special.bool()
    selected = labels != IGNORE_INDEX
    n_sel = max(int(selected.sum()), 1)
    masked = selected & (inputs == mask_id)
    changed = selected & (inputs != original) & ~masked
    return {
        "selected": int(selected.sum()) / max(int(eligible.sum()), 1),
        "mask": int(masked.sum()) / n_sel,
        "random": int(changed.sum()) / n_sel,
        "kept": int((selected & (inputs == original)).sum()) / n_sel,
        "labels_ok": float(bool((labels[selected] == original[selected]).all()) and
                           bool((labels[~selected] == IGNORE_INDEX).all())),
        "special_selected": float(bool((selected & special.bool()).any())),
        "unselected_changed": float(bool(((inputs != original) & ~selected).any())),
    }  # fmt: skip


def compare_with_collator(tokenizer, rows: torch.Tensor, seed: int = 0, z: float = 5.0) -> dict[str, float]:
    """Mask the same large batch by hand and with ``DataCollatorForLanguageModeling``; compare.

    Returns both sets of rates and ``matches`` (1.0 or 0.0): every rate of the hand-written masking lies
    within ``z`` binomial standard errors of the collator's and the expected values, the label convention
    is the same (original id at selected positions, -100 elsewhere), special tokens are never selected
    and unselected positions never change.
    """
    from transformers import DataCollatorForLanguageModeling

    special = torch.tensor([tokenizer.get_special_tokens_mask(r, already_has_special_tokens=True)
                            for r in rows.tolist()], dtype=torch.bool)  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
    batch = collator([{"input_ids": r} for r in rows.tolist()])
    ours_in, ours_lab = bert_mask(rows, special, len(tokenizer), tokenizer.mask_token_id,
                                  generator=torch.Generator().manual_seed(seed + 1))  # fmt: skip
    theirs = masking_rates(rows, batch["input_ids"], batch["labels"], special, tokenizer.mask_token_id)
    ours = masking_rates(rows, ours_in, ours_lab, special, tokenizer.mask_token_id)
    n_eligible = int((~special).sum())
    n_sel = n_eligible * 0.15
    expected = {"selected": 0.15, "mask": 0.8, "random": 0.1 * (1 - 1 / len(tokenizer)), "kept": 0.1}
    ok = True
    for key, p in expected.items():
        n = n_eligible if key == "selected" else n_sel
        se = math.sqrt(p * (1 - p) / n)
        ok &= abs(ours[key] - p) <= z * se and abs(ours[key] - theirs[key]) <= z * se * math.sqrt(2)
    for rates in (ours, theirs):
        ok &= rates["labels_ok"] == 1.0 and rates["special_selected"] == 0.0 and rates["unselected_changed"] == 0.0
    return {"ours": ours, "collator": theirs, "matches": float(ok)}


# --------------------------------------------------------------------------------------------------
# 4. Tiny BERT and its pretraining loop
# --------------------------------------------------------------------------------------------------


def tiny_bert_config(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 2, seq_len: int = 64,
                     dropout: float = 0.0, pad_token_id: int = 0):  # fmt: skip
    """A small ``BertConfig`` (feed-forward width $4\\times$ hidden, like BERT)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=seq_len, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id, type_vocab_size=1,
    )  # fmt: skip


def masked_lm_logits(model, inputs: torch.Tensor, labels: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Logits of a ``BertForMaskedLM`` at the labelled positions only, and those labels.

    ``BertForMaskedLM(inputs, labels=labels)`` projects *every* position onto the vocabulary and then
    ignores 85% of them; selecting the labelled hidden states first gives the same loss (a test checks)
    at a fraction of the cost of the output layer.
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
    """Apply ``objective`` to sentence rows; ``[CLS]``, ``[SEP]`` and ``[PAD]`` are never selected."""
    special = torch.isin(rows, torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]))
    return bert_mask(rows, special, len(tokenizer), tokenizer.mask_token_id, objective.mlm_prob,
                     objective.mask_replace_prob, objective.random_replace_prob, generator,
                     random_low=len(SPECIAL_TOKENS))  # fmt: skip


def _clipped_step(
    model: nn.Module, loss: torch.Tensor, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler
) -> float:
    """One update shared by pretraining and fine-tuning: backward, clip the gradient norm to 1, step, schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.item()


def pretrain(
    model,
    rows: torch.Tensor,
    tokenizer,
    objective: Objective,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    desc: str | None = None,
    snapshot_at: int | None = None,
) -> tuple[list[float], dict[str, torch.Tensor] | None]:
    r"""Pretrain ``model`` (a ``BertForMaskedLM``) for a fixed number of steps.

    Returns the loss per step and, when ``snapshot_at`` is given, a copy of the weights after that many
    steps (to compare another objective trained for ``snapshot_at`` steps at equal compute).

    AdamW with linear warm-up then cosine decay to 10% of ``lr``; each step draws a batch of sentence rows of
    similar length (:func:`length_batch`) and corrupts it afresh (dynamic masking, as in RoBERTa), so no two
    epochs see the same mask. The loss is $\mathcal{L}_{\text{MLM}}$ of :func:`bert_mask` on the selected positions.
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))  # fmt: skip

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses: list[float] = []
    snapshot = None
    bar = tqdm(range(steps), desc=desc or f"pretrain ({objective.name})", mininterval=2.0)
    for _ in bar:
        batch = length_batch(rows, batch_size, gen)
        batch, attention = trim(batch, (batch != tokenizer.pad_token_id).long())
        inputs, labels = corrupt(batch, tokenizer, objective, gen)
        logits, targets = masked_lm_logits(model, inputs.to(device), labels.to(device), attention.to(device))
        losses.append(_clipped_step(model, F.cross_entropy(logits.float(), targets), opt, sched))
        if len(losses) == snapshot_at:
            snapshot = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    model.eval()
    return losses, snapshot


@torch.no_grad()
def evaluate_mlm(model, rows: torch.Tensor, tokenizer, unigram_id: int, seed: int = 0,
                 batch_size: int = 128, device: torch.device | str = "cpu") -> dict[str, float]:  # fmt: skip
    r"""Held-out masked-token accuracy and perplexity of ``model``, with BERT's 80/10/10 masking.

    Perplexity is $\exp$ of the mean cross-entropy over the selected positions,
    $\mathrm{PPL} = \exp\big(-\frac{1}{|S|}\sum_{i\in S}\log p_\theta(x_i\mid\tilde x)\big)$.
    The baseline always predicts ``unigram_id`` (the most frequent training token).
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device).eval()
    n = correct = base = 0
    nll = 0.0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        batch, attention = trim(batch, (batch != tokenizer.pad_token_id).long())
        inputs, labels = corrupt(batch, tokenizer, MLM, gen)
        logits, targets = masked_lm_logits(model, inputs.to(device), labels.to(device), attention.to(device))
        nll += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        base += (targets == unigram_id).sum().item()
        n += len(targets)
    return {"accuracy": correct / n, "perplexity": math.exp(nll / n), "unigram_accuracy": base / n, "n": n}


def most_frequent_token(rows: torch.Tensor, n_special: int = len(SPECIAL_TOKENS)) -> int:
    """The most frequent non-special token id in ``rows`` (the unigram baseline's constant guess)."""
    counts = torch.bincount(rows.flatten())
    counts[:n_special] = 0
    return int(counts.argmax())


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, k: int = 5) -> list[tuple[str, list[str]]]:
    """Top-``k`` predictions at every ``[MASK]`` of ``text``: ``[(context, [token, ...]), ...]``."""
    enc = tokenizer(text, return_tensors="pt")
    model.eval()
    logits = model(**{k_: v for k_, v in enc.items() if k_ != "token_type_ids"}).logits[0]
    where = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    return [(text, tokenizer.convert_ids_to_tokens(logits[i].topk(k).indices.tolist())) for i in where]


# --------------------------------------------------------------------------------------------------
# 5. The downstream task: is this sentence as Austen wrote it, or locally shuffled?
# --------------------------------------------------------------------------------------------------


def shuffle_window(words: list[str], window: int, rng: np.random.Generator) -> list[str]:
    """Permute ``window`` consecutive words (never the identity); ``window <= 0`` shuffles the whole sentence."""
    if window <= 0 or len(words) < window:
        window = len(words)
    start = int(rng.integers(0, len(words) - window + 1))
    span = words[start : start + window]
    for _ in range(10):
        perm = rng.permutation(window)
        if (perm != np.arange(window)).any() and [span[i] for i in perm] != span:
            break
    return words[:start] + [span[i] for i in perm] + words[start + window :]


def order_task(sentences: Sequence[str], n: int, window: int, seed: int) -> tuple[list[str], np.ndarray]:
    r"""``n`` labelled examples: label 1 = the sentence as written, 0 = ``window`` words permuted.

    Each example uses a different sentence (a sentence never appears both ways), classes are balanced.
    Bag-of-words features are *identical* for a sentence and its shuffle, so a bag-of-words classifier
    can only exploit incidental differences between the two sets of sentences: it should sit near 0.5.
    """
    rng = np.random.default_rng(seed)
    pool = [s for s in sentences if len(set(s.split())) >= max(window, 2)]
    idx = rng.choice(len(pool), size=n, replace=False)
    labels = np.array([i % 2 for i in range(n)], dtype=np.int64)
    texts = []
    for j, i in enumerate(idx):
        words = pool[i].split()
        texts.append(pool[i] if labels[j] == 1 else " ".join(shuffle_window(words, window, rng)))
    return texts, labels


class SentenceClassifier(nn.Module):
    """A BERT encoder, mean pooling over real tokens, LayerNorm, and a linear head.

    Mean pooling reads the token states that MLM actually trained; ``[CLS]``'s own output is never a
    prediction target in MLM (it is never masked), so it is not a trained summary of the sentence.
    """

    def __init__(self, encoder: nn.Module, n_classes: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the last hidden states over non-padding positions, $h = \\frac{1}{|T|}\\sum_{t\\in T} H_t$."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(input_ids, attention_mask)))


def encode(tokenizer, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    """Tokenise to padded ``input_ids`` / ``attention_mask`` tensors (truncated to ``max_len``)."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def finetune(
    model: nn.Module,
    data: dict[str, torch.Tensor],
    labels: torch.Tensor,
    steps: int,
    lr_body: float,
    lr_head: float,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    forward: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    head_names: tuple[str, ...] = ("head", "norm", "classifier", "pooler"),
) -> list[float]:
    """Fine-tune every weight for ``steps`` AdamW steps (body and head at their own learning rates).

    ``forward(model, batch)`` returns logits; the default calls ``model(**batch)``. A constant learning
    rate after a 10% warm-up. Returns the training losses.
    """
    gen = torch.Generator().manual_seed(seed)
    forward = forward or (lambda m, b: m(**b))
    head = [p for n, p in model.named_parameters() if n.split(".")[0] in head_names]
    body = [p for n, p in model.named_parameters() if n.split(".")[0] not in head_names]
    opt = torch.optim.AdamW([{"params": body, "lr": lr_body}, {"params": head, "lr": lr_head}], weight_decay=0.01)
    warm = max(steps // 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    model.to(device).train()
    losses = []
    n = len(labels)
    for _ in range(steps):
        rows = torch.randint(n, (min(batch_size, n),), generator=gen)
        ids, mask = trim(data["input_ids"][rows].to(device), data["attention_mask"][rows].to(device))
        batch = {"input_ids": ids, "attention_mask": mask}
        loss = F.cross_entropy(forward(model, batch).float(), labels[rows].to(device))
        losses.append(_clipped_step(model, loss, opt, sched))
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 256,
            device: torch.device | str = "cpu",
            forward: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """Argmax class of every row of ``data``."""
    forward = forward or (lambda m, b: m(**b))
    model.to(device).eval()
    out = []
    for start in range(0, len(data["input_ids"]), batch_size):
        ids, mask = trim(data["input_ids"][start : start + batch_size].to(device),
                         data["attention_mask"][start : start + batch_size].to(device))  # fmt: skip
        batch = {"input_ids": ids, "attention_mask": mask}
        out.append(forward(model, batch).argmax(-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def embed(encoder: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 256,
          device: torch.device | str = "cpu", layers: Sequence[int] = (-1,)) -> np.ndarray:  # fmt: skip
    """Frozen features: mean-pooled hidden states of the chosen ``layers``, concatenated (for linear probes)."""
    encoder.to(device).eval()
    out = []
    for start in range(0, len(data["input_ids"]), batch_size):
        ids, mask = trim(data["input_ids"][start : start + batch_size].to(device),
                         data["attention_mask"][start : start + batch_size].to(device))  # fmt: skip
        states = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        m = mask.unsqueeze(-1).float()
        out.append(torch.cat([(states[i].float() * m).sum(1) / m.sum(1) for i in layers], dim=-1).cpu())
    return torch.cat(out).numpy()


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 c: float = 1.0) -> float:  # fmt: skip
    """Accuracy of a standardised logistic regression on frozen features (the encoder is not trained)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def bag_of_words_accuracy(train_texts: Sequence[str], train_y: np.ndarray, test_texts: Sequence[str],
                          test_y: np.ndarray, c: float = 1.0) -> float:  # fmt: skip
    """Accuracy of a bag-of-words logistic regression (TF-IDF weighted word and punctuation counts)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 1), token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(vec.fit_transform(train_texts), train_y)
    return float((clf.predict(vec.transform(test_texts)) == test_y).mean())
