"""Appendix A (notebook 09): the finite-support GAN value, the causal-LM loss, the install check, the
ledger and its bars, the page showing what it runs, one step of the ``gpu`` profile's models on the CPU,
and the appendix's place in the book."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import notebook_parameters

from aigc_utils import errata
from aigc_utils.core.results import QualityBarFailed, record_results
from aigc_utils.core.train import fit
from aigc_utils.gan_math import d_step, g_step

pytestmark = pytest.mark.usefixtures("one_thread")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "09_seed_errata.ipynb"


def test_discrete_value_closed_form_and_optimum():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    d_star = errata.discrete_optimal_d(p, q)
    assert torch.allclose(d_star, torch.tensor([5 / 7, 0.6, 0.25], dtype=torch.float64))
    # JSD by hand: m = (0.35, 0.25, 0.4)
    m = [0.35, 0.25, 0.4]
    by_hand = 0.5 * sum(a * math.log(a / c) for a, c in zip(p.tolist(), m)) + 0.5 * sum(
        b * math.log(b / c) for b, c in zip(q.tolist(), m))
    assert math.isclose(errata.discrete_jsd(p, q).item(), by_hand, rel_tol=1e-12)
    v_star = errata.discrete_value(d_star, p, q)
    assert math.isclose(v_star.item(), -math.log(4) + 2 * by_hand, abs_tol=1e-12)
    by_def = sum(a * math.log(d) + b * math.log(1 - d) for a, b, d in zip(p, q, d_star.tolist()))
    assert math.isclose(v_star.item(), float(by_def), abs_tol=1e-12)
    g = torch.Generator().manual_seed(1)
    for d in torch.rand(200, 3, dtype=torch.float64, generator=g).clamp(1e-6, 1 - 1e-6):
        assert errata.discrete_value(d, p, q) <= v_star + 1e-12
    assert errata.discrete_jsd(p, p).abs().item() < 1e-12


def test_causal_lm_loss_matches_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=12,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(1, 50, (2, 9))
    labels = ids.clone()
    labels[1, 6:] = -100
    out = model(input_ids=ids, labels=labels)
    assert torch.allclose(out.loss, errata.causal_lm_loss(out.logits, labels), atol=1e-5)


def test_python_supported_reads_metadata():
    assert errata.requires_python("torch").startswith(">=")
    assert errata.python_supported("torch", "3.11")
    assert not errata.python_supported("torch", "2.7")


def test_ledger_records_every_check_without_raising(capsys):
    recorded: dict[str, int] = {}
    ledger = errata.ErrataLedger(record=lambda **kv: recorded.update(kv))
    ledger.check("value_function", ok=True)
    ledger.check("gan_training", good=True, bad=False)
    ledger.check("environment")  # no condition is no pass
    out = capsys.readouterr().out
    assert "[pass] value_function: ok" in out and "[FAIL] gan_training: bad" in out
    assert "[FAIL] environment: no conditions" in out
    assert recorded == {"fixed_value_function": 1, "fixed_gan_training": 0, "fixed_environment": 0}
    with pytest.raises(KeyError):
        ledger.check("nonexistent", ok=True)
    assert ledger.metrics() == {"source_blocks_listed": len(errata.SOURCE_BLOCKS),
                                "source_blocks_covered": 3, "fixed_blocks_passing": 1}
    table = ledger.table_html()
    assert table.count("<tr>") == len(errata.SOURCE_BLOCKS) + 1
    assert '<a href="03_image_gan.html">' in table and ".ipynb" not in table
    assert "FAILED" in table and "not run" in table and "H = Attention(X, H₋₁)" in table


def test_a_failing_fix_fails_the_results(monkeypatch, tmp_path):
    """The notebook's bars on the ledger's metrics: all passing is green, one failure is not."""
    monkeypatch.setenv("AIGC_METRICS_DIR", str(tmp_path))
    params = notebook_parameters("09_seed_errata")
    assert params["BLOCKS"] == [b.key for b in errata.SOURCE_BLOCKS]
    bars = params["BARS"]["cpu"]
    for failing in (None, "gan_training"):
        metrics: dict[str, int] = {}
        ledger = errata.ErrataLedger(record=lambda **kv: metrics.update(kv))
        for block in errata.SOURCE_BLOCKS:
            ledger.check(block.key, ok=block.key != failing)
        metrics.update(ledger.metrics())
        if failing is None:
            record_results("09_test", metrics, bars, "cpu", "cpu")
        else:
            with pytest.raises(QualityBarFailed, match=r"fixed_gan_training == 1"):
                record_results("09_test", metrics, bars, "cpu", "cpu")
    assert bars == [f"fixed_{b.key} == 1" for b in errata.SOURCE_BLOCKS]  # one bar per block
    metrics = {f"fixed_{b.key}": 1 for b in errata.SOURCE_BLOCKS[:-1]}  # one block never checked
    metrics.update(source_blocks_listed=10, source_blocks_covered=9)
    with pytest.raises(KeyError, match="fixed_training_driver"):
        record_results("09_test", metrics, bars, "cpu", "cpu")


def _code() -> str:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_the_page_calls_the_fixes_of_the_chapters_that_teach_them():
    """The corrected versions are the chapters' own functions, imported from their generated modules."""
    code = _code()
    for name in ("gan_value(", "generator_loss(", "discriminator_loss(", "d_step(", "g_step(",
                 "CausalSelfAttention(", "Decoder(", "gpt2_finetune.perplexity(", "gpt2_finetune.make_blocks("):
        assert name in code, name
    assert "show_source" not in code and "core.gan" not in code


def test_the_notebooks_toy_gan_learns_a_gaussian():
    """The §6 recipe (nets, Adam, chapter 02's d_step and g_step inside core.train.fit) on N(2, 0.5²)."""
    params = notebook_parameters("09_seed_errata")
    z_dim, width, batch = params["Z_DIM"], params["GAN_WIDTH"], params["GAN_BATCH"]
    lr = params["LR"]["gan"]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    nn = torch.nn
    G, D = (nn.Sequential(nn.Linear(n_in, width), nn.LeakyReLU(), nn.Linear(width, width),
                          nn.LeakyReLU(), nn.Linear(width, 1)) for n_in in (z_dim, 1))
    opt_d, opt_g = (torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999)) for m in (D, G))

    def step(i):
        real = 2.0 + 0.5 * torch.randn(batch, 1, generator=g)
        fake = G(torch.randn(batch, z_dim, generator=g))
        return {**d_step(D, real, fake, opt_d), "g_loss": g_step(D, fake, opt_g)}

    fit(step, params["SIZES"]["cpu"]["gan_steps"], progress=False)
    with torch.no_grad():
        s = G(torch.randn(2000, z_dim, generator=g))
    assert abs(s.mean().item() - 2.0) < 0.35 and 0.25 < s.std().item() < 0.8


def test_gpu_profile_models_take_one_step_on_cpu():
    """SIZES["gpu"]: the tiny GPT-2 (batch 2, gpu block length) and the decoder, one step each."""
    from aigc_utils import gpt2_finetune
    from aigc_utils.core.train import optimizer_step
    from aigc_utils.decoder import Decoder, DecoderConfig

    params = notebook_parameters("09_seed_errata")
    cfg = params["SIZES"]["gpu"]
    config = gpt2_finetune.tiny_gpt2_config(params["LM_LAYERS"], cfg["lm_width"], params["LM_HEADS"],
                                            cfg["lm_block"], dropout=params["LM_DROPOUT"])
    lm = gpt2_finetune.new_gpt2(config, 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (2, cfg["lm_block"]), generator=g)
    opt = torch.optim.AdamW(lm.parameters(), lr=params["LR"]["lm"])
    before = lm.eval()(input_ids=x, labels=x).loss.item()
    optimizer_step(opt, lm.train()(input_ids=x, labels=x).loss)
    assert lm.eval()(input_ids=x, labels=x).loss.item() < before
    decoder = Decoder(DecoderConfig(**params["DECODER"]))
    pattern = torch.arange(params["DECODER"]["block_size"]).remainder(8).repeat(2, 1)
    dec_opt = torch.optim.Adam(decoder.parameters(), lr=params["LR"]["decoder"])
    loss = optimizer_step(dec_opt, errata.causal_lm_loss(decoder(pattern).logits, pattern))
    assert errata.causal_lm_loss(decoder(pattern).logits, pattern).item() < loss


def test_the_appendix_comes_last_and_takes_its_count_from_the_ledger():
    """Notebook 09 and the prose errata are the book's final part, "Appendices"; the page's number of
    blocks is glued from the ledger's metrics, not typed."""
    import yaml

    toc = yaml.safe_load((NOTEBOOK.parents[1] / "_toc.yml").read_text(encoding="utf-8"))
    last = toc["parts"][-1]
    files = [c["file"] for c in last["chapters"]]
    assert last["caption"] == "Appendices"
    assert files.index("notebooks/09_seed_errata") < files.index("book/errata_text")
    chapters = [c["file"] for part in toc["parts"][:-1] for c in part["chapters"]]
    assert "notebooks/09_seed_errata" not in chapters and "book/errata_text" not in chapters
    intro = "".join(json.loads(NOTEBOOK.read_text())["cells"][0]["source"])
    assert intro.startswith("# Appendix A — ") and "{glue:text}`source_blocks_listed`" in intro
    assert "source_blocks_listed" in errata.ErrataLedger().metrics()
