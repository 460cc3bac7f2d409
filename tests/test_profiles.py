import pytest
import torch

from aigc_utils.core.profiles import PROFILES, ProfileError, by_profile, resolve_profile, seed_everything


def test_budgets_are_the_ones_the_readme_promises():
    """The README's profile table and the code agree (a budget changed in one place fails here)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    promised = {m[0]: int(m[1]) * (60 if m[2] == "min" else 1)
                for m in re.findall(r"^\| `(smoke|cpu|gpu)` \|[^|]*\| ≤ (\d+) (s|min)", readme, re.M)}
    assert promised == {name: p.budget_s for name, p in PROFILES.items()}
    assert resolve_profile("CPU").name == "cpu"


def test_auto_picks_by_cuda(monkeypatch):
    monkeypatch.delenv("AIGC_PROFILE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert resolve_profile(None).name == expected
    assert resolve_profile("auto").name == expected


def test_environment_variable_is_used_when_parameter_is_none(monkeypatch):
    monkeypatch.setenv("AIGC_PROFILE", "smoke")
    assert resolve_profile(None).name == "smoke"
    assert resolve_profile("cpu").name == "cpu"  # the parameter wins


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ProfileError) as err:
        resolve_profile("fast")
    message = str(err.value)
    assert "smoke, cpu, gpu, auto" in message and "\n" not in message


def test_by_profile_table():
    table = {"smoke": 1, "cpu": 2, "gpu": 3}
    assert by_profile(PROFILES["cpu"], table) == 2
    with pytest.raises(ProfileError):
        by_profile("gpu", {"smoke": 1})


def test_seed_everything_is_deterministic():
    seed_everything(123)
    a = torch.randn(5)
    seed_everything(123)
    assert torch.equal(a, torch.randn(5))
