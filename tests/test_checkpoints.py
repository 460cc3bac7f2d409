import torch
from torch import nn

from aigc_utils.core import checkpoints


def _train_counter(calls):
    def train(model: nn.Module):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(0.5)
        return {"accuracy": 0.9}

    return train


def test_train_once_then_load(tmp_cache):
    calls = []
    model, extras, hit = checkpoints.cached_module("lin", {"n": 1}, nn.Linear(3, 2), _train_counter(calls))
    assert not hit and extras == {"accuracy": 0.9} and len(calls) == 1
    fresh, extras2, hit2 = checkpoints.cached_module("lin", {"n": 1}, nn.Linear(3, 2), _train_counter(calls))
    assert hit2 and extras2 == {"accuracy": 0.9} and len(calls) == 1
    assert torch.equal(fresh.weight, torch.full((2, 3), 0.5))


def test_key_separates_settings(tmp_cache):
    assert checkpoints.checkpoint_path("m", {"steps": 1}) != checkpoints.checkpoint_path("m", {"steps": 2})
    assert checkpoints.checkpoint_path("m", {"a": 1, "b": 2}) == checkpoints.checkpoint_path("m", {"b": 2, "a": 1})


def test_truncated_checkpoint_is_reported_and_retrained(tmp_cache, recwarn):
    calls = []
    checkpoints.cached_module("lin", None, nn.Linear(3, 2), _train_counter(calls))
    path = checkpoints.checkpoint_path("lin", None)
    path.write_bytes(path.read_bytes()[:-20])  # a truncated file
    _, _, hit = checkpoints.cached_module("lin", None, nn.Linear(3, 2), _train_counter(calls))
    assert not hit and len(calls) == 2
    assert any("corrupted" in str(w.message) for w in recwarn.list)
    assert checkpoints.load_checkpoint(path) is not None  # retrained and saved intact


def test_missing_sidecar_is_not_trusted(tmp_cache, recwarn):
    path = checkpoints.checkpoint_path("p", None)
    checkpoints.save_checkpoint(path, {"x": torch.ones(2)})
    path.with_name(path.name + ".sha256").unlink()
    assert checkpoints.load_checkpoint(path) is None and not path.exists()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "f.bin"

    def explode(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    try:
        checkpoints.atomic_write_bytes(target, explode)
    except RuntimeError:
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []
