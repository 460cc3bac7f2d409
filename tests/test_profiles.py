import pytest
import torch

from aigc_utils.profiles import PROFILES, ProfileError, by_profile, resolve_profile, seed_everything


def test_named_profiles_and_budgets():
    assert resolve_profile("smoke").budget_s == 60
    assert resolve_profile("CPU").name == "cpu"
    assert resolve_profile("gpu").budget_s == 300


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
