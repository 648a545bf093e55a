"""``pick_device``: CUDA when there is one, else the CPU; an Apple GPU (mps) only when FTCOURSE_DEVICE asks for it."""
from __future__ import annotations

import pytest
import torch

from ftcourse.train import pick_device


@pytest.fixture
def mac_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.delenv("FTCOURSE_DEVICE", raising=False)


def test_a_mac_runs_on_its_cpu_unless_mps_is_asked_for(mac_without_cuda, monkeypatch, capsys):
    assert pick_device().type == "cpu"
    assert "FTCOURSE_DEVICE=mps uses it" in capsys.readouterr().out  # says how to opt in
    monkeypatch.setenv("FTCOURSE_DEVICE", "mps")
    assert pick_device(verbose=False).type == "mps"
    assert pick_device("cpu", verbose=False).type == "cpu"  # an explicit argument still wins


def test_cuda_first_without_the_setting(monkeypatch):
    monkeypatch.delenv("FTCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(verbose=False).type == "cuda"
    monkeypatch.setenv("FTCOURSE_DEVICE", "cpu")
    assert pick_device(verbose=False).type == "cpu"


@pytest.mark.parametrize("value, message", [
    ("gpu", "FTCOURSE_DEVICE must be one of cpu, cuda, mps"),
    ("mps", "FTCOURSE_DEVICE=mps, but torch finds no mps device here"),
    ("cuda", "FTCOURSE_DEVICE=cuda, but torch finds no cuda device here"),
])
def test_a_device_setting_that_cannot_work_names_the_variable(monkeypatch, value, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("FTCOURSE_DEVICE", value)
    with pytest.raises(ValueError, match=message):
        pick_device(verbose=False)
