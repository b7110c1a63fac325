import pytest

from companion import profiles
from companion.errors import ProfileError


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("TLBOOK_PROFILE", "quick")
    assert profiles.get_profile().name == "quick"
    monkeypatch.setenv("TLBOOK_PROFILE", "FULL")
    assert profiles.get_profile().name == "full"


def test_argument_beats_env(monkeypatch):
    monkeypatch.setenv("TLBOOK_PROFILE", "quick")
    assert profiles.get_profile("smoke").name == "smoke"


def test_default_depends_on_cuda(monkeypatch):
    import torch

    monkeypatch.delenv("TLBOOK_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profiles.get_profile().name == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.get_profile().name == "quick"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TLBOOK_PROFILE", "fastest")
    with pytest.raises(ProfileError, match=r"unknown profile 'fastest'.*smoke, quick, full"):
        profiles.get_profile()


def test_profiles_grow():
    s, q, f = (profiles.PROFILES[n] for n in ("smoke", "quick", "full"))
    assert s.train_per_class < q.train_per_class and f.train_per_class is None
    assert s.image_size < q.image_size <= f.image_size == 224
    assert "20 train" in str(s)


def test_check_asserts_where_the_claim_applies_and_says_so(capsys):
    quick = profiles.get_profile("quick")
    assert quick.check("probe beats scratch", True, value="0.8 vs 0.3") is True
    assert capsys.readouterr().out == "[claim] probe beats scratch (0.8 vs 0.3): holds\n"
    with pytest.raises(AssertionError, match=r"probe >= 0.85 \(0.812\) does not hold in the 'quick' profile"):
        quick.check("probe >= 0.85", False, value="0.812", applies_in=("quick", "full"))
    assert capsys.readouterr().out == "[claim] probe >= 0.85 (0.812): FAILS\n"
    assert quick.check("probe >= 0.85", False, value="0.812", applies_in=("full",)) is False
    assert capsys.readouterr().out == "[claim] probe >= 0.85 (0.812): not checked in 'quick' (applies in full)\n"
