import dataclasses

import pytest
import torch

from ftcourse.profiles import PROFILE_NAMES, PROFILES, Profile, default_profile_name, get_profile


def test_profile_names():
    assert PROFILE_NAMES == ("ci", "cpu", "gpu")


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    assert get_profile().name == "ci"


def test_default_depends_on_cuda(monkeypatch):
    monkeypatch.delenv("FTCOURSE_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_profile_name() == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_profile_name() == "cpu"


def test_unknown_profile_lists_valid_names(monkeypatch):
    with pytest.raises(ValueError, match="ci, cpu, gpu"):
        get_profile("laptop")
    monkeypatch.setenv("FTCOURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="'fast'"):
        get_profile()


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_size_is_set_and_sane(name):
    p = PROFILES[name]
    for f in dataclasses.fields(Profile):
        assert getattr(p, f.name) is not None or f.name == "amp", f.name
    assert 0 < p.few_sample_size <= p.train_size <= 67_349
    assert p.batch_size > 0 and p.epochs > 0 and p.evals_per_epoch > 0 and p.lr > 0
    assert len(set(p.seeds)) == len(p.seeds) >= 1
    assert 0.5 < p.min_test_accuracy < 1


def test_profiles_grow():
    ci, cpu, gpu = (PROFILES[n] for n in PROFILE_NAMES)
    assert ci.train_size < cpu.train_size < gpu.train_size
    assert ci.n_seeds <= 2 and cpu.n_seeds == 3 and gpu.n_seeds == 5
    assert cpu.min_test_accuracy >= 0.82


def test_replace_keeps_original():
    ci = get_profile("ci")
    assert ci.replace(epochs=7).epochs == 7 and ci.epochs != 7
