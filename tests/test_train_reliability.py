"""train(): divergence, argument checks, evaluation spacing, timing; amp's choice per GPU; memory units."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import synthetic_batches, tiny_classifier

from ftcourse import amp as ftamp
from ftcourse.memory import ru_maxrss_mb
from ftcourse.train import MAX_CONSECUTIVE_SKIPS, evaluate, evaluation_steps, train


def _setup(lr=1e-3, n_batches=8):
    torch.manual_seed(0)
    model = tiny_classifier()
    return model, synthetic_batches(n_batches), torch.optim.SGD(model.parameters(), lr=lr)


def test_a_huge_lr_diverges_stops_warns_and_keeps_finite_weights():
    model, batches, optimizer = _setup(lr=1e12)
    with pytest.warns(RuntimeWarning, match=r"diverged at optimizer step \d+: loss"):
        history = train(model, batches, optimizer, epochs=3, eval_loader=batches[:2], max_grad_norm=None, progress=False)
    assert history.diverged and history.diverged_step == len(history.steps) < 3 * len(batches)
    assert not history.steps[-1]["stepped"] and not math.isfinite(history.steps[-1]["loss"])
    assert not history.stopped_early  # a divergence is not an early stop
    # the step with the non-finite loss was not applied
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_gradient_without_a_scaler_diverges():
    model, batches, optimizer = _setup()
    first = next(model.parameters())
    first.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.warns(RuntimeWarning, match="gradient norm nan"):
        history = train(model, batches, optimizer, progress=False)
    assert history.diverged and len(history.steps) == 1


def test_consecutive_scaler_skips_mean_divergence():
    model, batches, optimizer = _setup(n_batches=MAX_CONSECUTIVE_SKIPS + 5)

    class Scaler:
        def __init__(self):
            self.value = 2.0**16

        def scale(self, loss):
            return loss

        def unscale_(self, optimizer):
            pass

        def step(self, optimizer):
            pass

        def update(self):
            self.value /= 2

        def get_scale(self):
            return self.value

    precision = ftamp.Precision(None, "cpu", scaler=Scaler())
    with pytest.warns(RuntimeWarning, match=f"{MAX_CONSECUTIVE_SKIPS} consecutive steps skipped"):
        history = train(model, batches, optimizer, precision=precision, progress=False)
    assert history.diverged and len(history.steps) == MAX_CONSECUTIVE_SKIPS == history.skipped_steps


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_grad_norm=0), "max_grad_norm"), (dict(max_grad_norm=-1.0), "max_grad_norm"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm"), (dict(max_steps=0), "max_steps"),
    (dict(max_steps=2.5), "max_steps"), (dict(accumulation_steps=0), "accumulation_steps"),
    (dict(epochs=0), "epochs"), (dict(epochs=1.5), "epochs"), (dict(epochs=True), "epochs"),
    (dict(eval_every=0), "eval_every"), (dict(evals_per_epoch=0), "evals_per_epoch"),
    (dict(eval_every=2, evals_per_epoch=2), "not both"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    model, batches, optimizer = _setup()
    with pytest.raises(ValueError, match=name):
        train(model, batches, optimizer, progress=False, **kwargs)


def test_empty_loaders_are_refused():
    model, batches, optimizer = _setup()
    with pytest.raises(ValueError, match="train_loader is empty"):
        train(model, [], optimizer, progress=False)
    with pytest.raises(ValueError, match="eval_loader is empty"):
        train(model, batches, optimizer, eval_loader=[], progress=False)
    with pytest.raises(ValueError, match="no labelled item"):
        evaluate(model, [])


def test_numpy_integers_are_accepted():
    model, batches, optimizer = _setup()
    history = train(model, batches, optimizer, epochs=np.int64(1), max_steps=np.int64(3),
                    accumulation_steps=np.int64(1), progress=False)
    assert len(history.steps) == 3


def test_none_max_grad_norm_measures_without_clipping():
    model, batches, optimizer = _setup()
    history = train(model, batches, optimizer, max_grad_norm=None, max_steps=2, progress=False)
    assert all(row["grad_norm"] > 0 for row in history.steps)


def test_a_stop_requested_in_on_train_begin_takes_zero_steps():
    class StopAtOnce:
        def on_train_begin(self, state):
            state.should_stop = True

    model, batches, optimizer = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    history = train(model, batches, optimizer, callbacks=[StopAtOnce()], eval_loader=batches[:1], progress=False)
    assert history.steps == [] and history.evals == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_evaluations_are_evenly_spaced_within_each_epoch():
    # 47 steps an epoch, 4 evaluations: steps//evals would give 11, 22, 33, 44, 47 (5, drifting).
    assert evaluation_steps(47, 2, 4) == [12, 24, 36, 47, 59, 71, 83, 94]
    assert evaluation_steps(3, 1, 5) == [1, 2, 3]  # at most one a step
    model, batches, optimizer = _setup(n_batches=10)
    history = train(model, batches, optimizer, epochs=2, eval_loader=batches[:2], evals_per_epoch=4, progress=False)
    assert [e["step"] for e in history.evals] == [3, 5, 8, 10, 13, 15, 18, 20]


def test_training_time_excludes_evaluation_and_callbacks():
    import time

    class Slow:
        def on_step_end(self, state):
            time.sleep(0.05)

    model, batches, optimizer = _setup()
    history = train(model, batches, optimizer, eval_loader=batches, eval_every=1, callbacks=[Slow()], progress=False)
    assert history.callback_time_s >= 0.05 * len(batches) * 0.9
    assert history.eval_time_s > 0
    assert history.train_time_s < sum(row["time_s"] for row in history.steps) + 0.5
    assert history.samples_per_s == pytest.approx(sum(r["items"] for r in history.steps) / history.train_time_s)


@pytest.mark.parametrize("capability, auto, explicit_bf16", [
    ((7, 0), torch.float16, torch.float16), ((7, 5), torch.float16, torch.float16),
    ((8, 0), torch.bfloat16, torch.bfloat16), ((9, 0), torch.bfloat16, torch.bfloat16),
])
def test_amp_picks_bf16_only_where_the_gpu_has_it_natively(monkeypatch, capsys, capability, auto, explicit_bf16):
    # is_bf16_supported() counts emulation and says True on a T4 (7.5): it must not decide.
    monkeypatch.setattr(ftamp, "_said", set())  # each distinct message is said once per process
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4" if capability < (8, 0) else "A100")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: "scaler")
    assert ftamp._resolve("auto", torch.device("cuda", 0), verbose=True) == auto
    said = capsys.readouterr().out
    assert f"compute capability {capability[0]}.{capability[1]}" in said
    assert ftamp._resolve("bf16", torch.device("cuda", 0), verbose=True) == explicit_bf16
    said = capsys.readouterr().out
    if explicit_bf16 == torch.float16:
        assert "no native bfloat16" in said and "using fp16 instead of bf16" in said
    precision = ftamp.Precision("auto", "cuda", verbose=False)
    assert (precision.scaler is not None) == (auto == torch.float16)


def test_ru_maxrss_is_bytes_on_macos_and_kib_on_linux():
    assert ru_maxrss_mb(2**30, "darwin") == pytest.approx(1024.0)
    assert ru_maxrss_mb(2**20, "linux") == pytest.approx(1024.0)


def test_a_window_without_a_labelled_item_is_an_error_naming_the_step():
    """All labels -100 (IGNORE_INDEX): the window's mean loss is 0/0. It used to surface as a 'diverged
    at step 3: loss nan' warning, which blames the optimisation for a data problem."""
    model, batches, optimizer = _setup(n_batches=6)
    for b in batches[4:6]:  # the third window of two micro-batches: micro-batches 5 and 6
        b["labels"] = torch.full_like(b["labels"], -100)
    with pytest.raises(ValueError, match=r"optimizer step 3 \(epoch 0, micro-batches 5-6 of the epoch\).*-100"):
        train(model, batches, optimizer, accumulation_steps=2, progress=False)
    model, batches, optimizer = _setup(n_batches=3)
    batches[1]["labels"][:] = -100  # a micro-batch alone may be empty: its window still has items
    history = train(model, batches[:2], optimizer, accumulation_steps=2, progress=False)
    assert len(history.steps) == 1 and history.steps[0]["items"] == 8 and not history.diverged


@pytest.mark.parametrize("make_loader, match", [
    (lambda batches: batches[0], "one batch"),  # a single batch (a dict): iterating it gives its keys
    (lambda batches: iter(batches), "has no length"),  # a generator: the planned steps are unknown
    (lambda batches: 42, "train_loader must be"),
])
def test_a_train_loader_that_is_not_a_loader_is_a_type_error(make_loader, match):
    model, batches, optimizer = _setup()
    with pytest.raises(TypeError, match=match):
        train(model, make_loader(batches), optimizer, progress=False)
    with pytest.raises(TypeError, match=match.replace("train_loader", "eval_loader")):
        train(model, batches, optimizer, eval_loader=make_loader(batches), progress=False)


@pytest.mark.parametrize("make_loader, match", [
    (lambda batches: batches[0], "one batch"),
    (lambda batches: 42, "loader must be"),
])
def test_evaluate_refuses_what_is_not_a_loader(make_loader, match):
    model, batches, _ = _setup()
    with pytest.raises(TypeError, match=match):
        evaluate(model, make_loader(batches))
    assert evaluate(model, iter(batches[:2]))["n"] == 16  # evaluate needs no length: one pass


@pytest.mark.parametrize("optimizer, match", [
    (lambda model: model.parameters(), "optimizer must be a torch.optim.Optimizer"),
    (lambda model: torch.optim.AdamW, "an instance"),
])
def test_optimizer_must_be_an_optimizer(optimizer, match):
    model, batches, _ = _setup()
    with pytest.raises(TypeError, match=match):
        train(model, batches, optimizer(model), progress=False)


def test_evaluate_takes_a_precision_mode_as_train_does():
    model, batches, _ = _setup()
    assert evaluate(model, batches[:2], precision="fp32") == evaluate(model, batches[:2])
    with pytest.raises(ValueError, match="amp must be one of"):
        evaluate(model, batches[:2], precision="fp8")
