import dataclasses

import pytest
import torch

from ftcourse.course.profiles import GROUPS, PROFILE_NAMES, PROFILES, Profile, default_profile_name, get_profile


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
        assert getattr(p, f.name) is not None or f.name in ("amp", "val_size", "test_size"), f.name
    assert 0 < p.reinit.train_size <= p.train_size <= 67_349
    assert 0 < p.optimizers.few_sample_size <= p.train_size
    for group in GROUPS:
        for f in dataclasses.fields(getattr(p, group)):
            value = getattr(getattr(p, group), f.name)
            if isinstance(value, tuple) and f.name.endswith("seeds"):
                assert len(set(value)) == len(value) >= 1, (group, f.name)
            if f.name in ("train_size", "sweep_train_size", "few_sample_size"):
                assert 0 < value <= 67_349, (group, f.name)
    assert p.val_size is None or 0 < p.val_size <= 872
    assert p.test_size is None or 0 < p.test_size <= 1_821
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


def test_replace_reaches_into_groups_and_refuses_unknown_names():
    cpu = get_profile("cpu")
    a = cpu.replace(llrd={"decays": (0.5,)})
    b = cpu.replace(**{"llrd.decays": (0.5,)}, epochs=3)
    assert a.llrd.decays == b.llrd.decays == (0.5,) and a.llrd.seeds == cpu.llrd.seeds
    assert b.epochs == 3 and cpu.llrd.decays != (0.5,)
    with pytest.raises(ValueError, match="unknown field"):
        cpu.replace(epoch=3)
    with pytest.raises(ValueError, match="llrd has no field"):
        cpu.replace(**{"llrd.decay": 0.5})


def test_cpu_and_gpu_evaluate_on_all_of_validation_and_test():
    for name in ("cpu", "gpu"):
        assert PROFILES[name].val_size is None and PROFILES[name].test_size is None
