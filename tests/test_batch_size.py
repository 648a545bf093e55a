"""The batch-size finder: halving on (fake) CUDA out-of-memory, a CPU memory budget, bad inputs,
and the accumulation steps that reach a target effective batch."""
from __future__ import annotations

import time

import pytest
import torch

import ftcourse.batch_size as bs
from ftcourse.batch_size import accumulation_for, find_max_batch_size


class FakeCudaPeak:
    """Stands in for PeakMemory on a machine without CUDA (the finder only reads .peak_mb)."""

    peak_mb = 100.0

    def __init__(self, device):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_cuda(monkeypatch):
    calls = {"empty_cache": 0}
    monkeypatch.setattr(bs, "PeakMemory", FakeCudaPeak)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.__setitem__("empty_cache", calls["empty_cache"] + 1))
    return calls


def oom_above(threshold: int, tried: list):
    def try_batch(batch: int) -> None:
        tried.append(batch)
        if batch > threshold:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake): batch {batch} > {threshold}")
    return try_batch


def test_cuda_halves_on_out_of_memory(fake_cuda, capsys):
    tried = []
    assert find_max_batch_size(oom_above(40, tried), start=256, device="cuda") == 32
    assert tried == [256, 128, 64, 32]
    # the cache is emptied before every trial and after every out-of-memory
    assert fake_cuda["empty_cache"] == len(tried) + 3
    out = capsys.readouterr().out
    assert "batch 64: does not fit (CUDA out of memory)" in out and "batch 32: fits" in out


def test_cuda_start_that_fits_is_returned_at_once(fake_cuda):
    tried = []
    assert find_max_batch_size(oom_above(1000, tried), start=48, device="cuda", verbose=False) == 48
    assert tried == [48]


def test_cuda_budget_is_checked_too(fake_cuda):
    # FakeCudaPeak reports 100 MiB for every trial: over a 50 MiB budget down to min_batch.
    with pytest.raises(RuntimeError, match="min_batch=4 does not fit"):
        find_max_batch_size(lambda b: None, start=16, device="cuda", memory_budget_mb=50, min_batch=4, verbose=False)


def test_min_batch_is_tried_and_then_an_error(fake_cuda):
    tried = []
    with pytest.raises(RuntimeError, match="even min_batch=5 does not fit"):
        find_max_batch_size(oom_above(2, tried), start=24, device="cuda", min_batch=5, verbose=False)
    assert tried == [24, 12, 6, 5]  # 6 // 2 = 3 < min_batch: min_batch itself is the last trial


def test_other_errors_are_not_swallowed(fake_cuda):
    def broken(batch):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        find_max_batch_size(broken, start=8, device="cuda", verbose=False)


def test_cpu_halves_while_over_the_budget():
    tried = []

    def try_batch(batch: int) -> None:
        tried.append(batch)
        block = torch.ones(batch * 2**18)  # `batch` MiB of float32, touched so it is resident
        time.sleep(0.05)  # long enough for PeakMemory's sampler to see it
        del block

    assert find_max_batch_size(try_batch, start=256, device="cpu", memory_budget_mb=48, verbose=False) == 32
    assert tried == [256, 128, 64, 32]


@pytest.mark.parametrize("kwargs,match", [
    (dict(start=0), "start must be an int >= 1"),
    (dict(start=8.0), "start must be an int >= 1"),
    (dict(start=8, min_batch=0), "min_batch must be an int >= 1"),
    (dict(start=8, min_batch=16), "min_batch must be <= start"),
    (dict(start=8, device="mps"), "device must be one of 'cuda', 'cpu'"),
    (dict(start=8, memory_budget_mb=-1), "memory_budget_mb must be a finite number > 0"),
    (dict(start=8, memory_budget_mb=float("nan")), "memory_budget_mb must be a finite number > 0"),
    (dict(start=8, memory_budget_mb=None), "memory_budget_mb is required on device 'cpu'"),
])
def test_bad_inputs(kwargs, match):
    kwargs = {"device": "cpu", "memory_budget_mb": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        find_max_batch_size(lambda b: None, **kwargs)


def test_try_batch_must_be_callable():
    with pytest.raises(TypeError, match="try_batch must be a callable"):
        find_max_batch_size(16, start=8, device="cpu", memory_budget_mb=100)


def test_accumulation_for(capsys):
    assert accumulation_for(32, 8) == 4
    assert accumulation_for(32, 32) == 1
    assert capsys.readouterr().out == ""
    assert accumulation_for(32, 12) == 3  # 36 >= 32: the nearest reachable effective batch above
    assert "effective batch of 36, not 32" in capsys.readouterr().out
    assert accumulation_for(8, 16) == 1  # a micro-batch larger than the target: one step, batch 16
    assert "effective batch of 16, not 8" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [
    ((0, 8), "target_effective_batch"), ((32, 0), "micro_batch"), ((32, 2.5), "micro_batch"), ((True, 8), "target_effective_batch"),
])
def test_accumulation_for_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        accumulation_for(*args)
