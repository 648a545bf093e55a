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
    assert "[ftcourse.batch_size] batch 64: does not fit (CUDA out of memory)" in out
    assert "[ftcourse.batch_size] batch 32: fits" in out


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


@pytest.mark.parametrize("kwargs,match", [
    (dict(start=8.0), "start must be an int >= 1"),
    (dict(start=True), "start must be an int >= 1"),
    (dict(start=8, min_batch=1.0), "min_batch must be an int >= 1"),
    (dict(start=8, memory_budget_mb="100"), "memory_budget_mb must be a finite number > 0"),
    (dict(start=8, memory_budget_mb=True), "memory_budget_mb must be a finite number > 0"),
])
def test_wrong_types(kwargs, match):
    kwargs = {"device": "cpu", "memory_budget_mb": 100, **kwargs}
    with pytest.raises(TypeError, match=match):
        find_max_batch_size(lambda b: None, **kwargs)


def test_try_batch_must_be_callable():
    with pytest.raises(TypeError, match="try_batch must be a callable"):
        find_max_batch_size(16, start=8, device="cpu", memory_budget_mb=100)


def test_accumulation_for(capsys):
    assert accumulation_for(32, 8) == 4
    assert accumulation_for(32, 32) == 1
    assert capsys.readouterr().out == ""
    assert accumulation_for(32, 12) == 3  # 36 >= 32: the nearest reachable effective batch above
    assert "[ftcourse.batch_size] accumulation_for: 12 does not divide 32: 3 steps give an effective batch of 36, " \
        "not 32" in capsys.readouterr().out
    assert accumulation_for(8, 16) == 1  # a micro-batch larger than the target: one step, batch 16
    assert "effective batch of 16, not 8" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [((0, 8), "target_effective_batch"), ((32, 0), "micro_batch")])
def test_accumulation_for_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match + " must be an int >= 1"):
        accumulation_for(*args)


@pytest.mark.parametrize("args,match", [((32, 2.5), "micro_batch"), ((True, 8), "target_effective_batch")])
def test_accumulation_for_wrong_types(args, match):
    with pytest.raises(TypeError, match=match + " must be an int >= 1"):
        accumulation_for(*args)


# ---------------------------------------------------------------------------------------------
# The caller's model and optimizer are left as they were
# ---------------------------------------------------------------------------------------------
def _trained_model_and_optimizer():
    from conftest import synthetic_batches, tiny_classifier

    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=1, dropout=0.1)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": params[:4], "lr": 1e-3}, {"params": params[4:], "lr": 4e-3}])
    batch = synthetic_batches(1, batch_size=4)[0]
    model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"]).loss.backward()
    optimizer.step()  # some optimizer state, as mid-training
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.bert.embeddings.dropout.train()  # a mixed mode survives too
    return model, optimizer


def _state(model, optimizer):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in optimizer.state_dict()["state"].items()},
            [dict((k, v) for k, v in g.items() if k != "params") for g in optimizer.param_groups],
            {name: m.training for name, m in model.named_modules()})


def _assert_same(model, optimizer, before):
    weights, opt_state, groups, modes = before
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = optimizer.state_dict()["state"]
    assert after.keys() == opt_state.keys()
    for i, s in after.items():
        for k, v in s.items():
            assert torch.equal(v, opt_state[i][k]) if torch.is_tensor(v) else v == opt_state[i][k], (i, k)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in optimizer.param_groups] == groups
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


def stepping_try_batch(model, optimizer, oom_above=None, tried=None):
    from conftest import synthetic_batches

    def try_batch(batch_size):
        if tried is not None:
            tried.append(batch_size)
        model.train()
        batch = synthetic_batches(1, batch_size=batch_size, seed=batch_size)[0]
        for group in optimizer.param_groups:
            group["lr"] *= 10  # as a scheduler might
        model(**{k: v for k, v in batch.items() if k != "labels"}, labels=batch["labels"]).loss.backward()
        optimizer.step()
        if oom_above is not None and batch_size > oom_above:  # fails after the step changed everything
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake): batch {batch_size}")
    return try_batch


def test_model_and_optimizer_are_bit_identical_after_the_search(fake_cuda, capsys):
    model, optimizer = _trained_model_and_optimizer()
    before = _state(model, optimizer)
    tried = []
    assert find_max_batch_size(stepping_try_batch(model, optimizer, oom_above=4, tried=tried), start=16,
                               device="cuda", model=model, optimizer=optimizer) == 4
    assert tried == [16, 8, 4]
    _assert_same(model, optimizer, before)
    assert "note" not in capsys.readouterr().out  # both given: nothing to warn about


def test_restored_on_cpu_too_and_an_optimizer_without_state_gets_none_back():
    from conftest import tiny_classifier

    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # no state yet: the trials allocate it
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert find_max_batch_size(stepping_try_batch(model, optimizer), start=4, device="cpu", memory_budget_mb=1e6,
                               verbose=False, model=model, optimizer=optimizer) == 4
    assert len(optimizer.state) == 0 and optimizer.param_groups[0]["lr"] == 1e-3
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_restored_when_the_search_raises(fake_cuda):
    model, optimizer = _trained_model_and_optimizer()
    before = _state(model, optimizer)
    with pytest.raises(RuntimeError, match="even min_batch=2 does not fit"):
        find_max_batch_size(stepping_try_batch(model, optimizer, oom_above=1), start=8, device="cuda", min_batch=2,
                            verbose=False, model=model, optimizer=optimizer)
    _assert_same(model, optimizer, before)

    def broken(batch_size):
        stepping_try_batch(model, optimizer)(batch_size)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        find_max_batch_size(broken, start=8, device="cuda", verbose=False, model=model, optimizer=optimizer)
    _assert_same(model, optimizer, before)


def test_without_model_and_optimizer_a_note_says_they_are_not_restored(fake_cuda, capsys):
    model, optimizer = _trained_model_and_optimizer()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    find_max_batch_size(stepping_try_batch(model, optimizer), start=4, device="cuda")
    out = capsys.readouterr().out
    assert "[ftcourse.batch_size] note: no model= and no optimizer= given" in out
    assert any(not torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the caller's job
    find_max_batch_size(lambda b: None, start=4, device="cuda", model=model)
    assert "note: no optimizer= given" in capsys.readouterr().out
    find_max_batch_size(lambda b: None, start=4, device="cuda", verbose=False)
    assert capsys.readouterr().out == ""


def test_numpy_integers_and_wrong_types():
    import numpy as np

    assert find_max_batch_size(lambda b: None, start=np.int64(8), device="cpu", memory_budget_mb=np.float64(1e6),
                               min_batch=np.int32(2), verbose=False) == 8
    assert accumulation_for(np.int64(32), np.int64(8)) == 4
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        find_max_batch_size(lambda b: None, start=8, device="cpu", memory_budget_mb=100, model="bert")
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        find_max_batch_size(lambda b: None, start=8, device="cpu", memory_budget_mb=100, optimizer={})
