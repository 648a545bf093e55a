"""Mixed precision on CPU: GradScaler("cpu") skips a step with an inf gradient (parameters
unchanged, scale halved, scheduler not advanced, step recorded), modes resolve with printed
fallbacks, and bf16 autocast really runs Linear in bfloat16.

Reference: PyTorch AMP docs (torch.amp.GradScaler: a step with inf/nan gradients is skipped and the
scale multiplied by backoff_factor=0.5; the scheduler must not step then) and REFERENCE.md.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ftcourse.amp as ftamp
from ftcourse.amp import MODES, Precision
from ftcourse.train import Callback, train


@pytest.fixture(autouse=True)
def fresh_messages(monkeypatch):
    """Each test starts with no message said yet: Precision says each distinct one once per process,
    so without this a test's expected message could have been said by an earlier test."""
    monkeypatch.setattr(ftamp, "_said", set())


class InfGrad(torch.autograd.Function):
    """Identity forward; backward returns an inf gradient when ``poison`` is set: an overflow
    injected exactly where we want it."""

    @staticmethod
    def forward(ctx, x, poison):
        ctx.poison = bool(poison.any())
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return (torch.full_like(grad, float("inf")) if ctx.poison else grad), None


class TinyClassifier(nn.Module):
    """Takes the loop's dict batches; a batch with ``poison`` set overflows the weight's gradient."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)

    def forward(self, input_ids, poison):  # the loop counts tokens from input_ids
        weight = InfGrad.apply(self.linear.weight, poison)
        return SimpleNamespace(logits=nn.functional.linear(input_ids, weight, self.linear.bias))


def batches(n: int, poisoned: set[int]) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randn(5, 4, generator=g), "poison": torch.tensor([i in poisoned] * 5),
             "labels": torch.randint(0, 3, (5,), generator=g)} for i in range(n)]


class Snapshots(Callback):
    def __init__(self):
        self.params = []

    def on_step_end(self, state):
        self.params.append([p.detach().clone() for p in state.model.parameters()])


def test_overflow_skips_the_step_in_the_loop():
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))  # a new lr every step
    init_scale = 2.0**10
    after_each_window = []

    class Scaler(torch.amp.GradScaler):  # the parameters after every window, skipped or not
        def update(self, new_scale=None):
            super().update(new_scale)
            after_each_window.append([p.detach().clone() for p in model.parameters()])

    precision = Precision(None, "cpu", scaler=Scaler("cpu", init_scale=init_scale))
    snapshots = Snapshots()
    history = train(model, batches(4, poisoned={1}), optimizer, scheduler=scheduler, precision=precision,
                    callbacks=[snapshots], device="cpu", progress=False)
    steps = history.steps_frame()
    assert steps["stepped"].tolist() == [True, False, True, True]
    assert history.skipped_steps == 1
    # skipped: the scale is halved and the parameters are exactly those of the step before
    assert steps["loss_scale"].tolist() == [init_scale, init_scale / 2, init_scale / 2, init_scale / 2]
    for before, after in zip(after_each_window[0], after_each_window[1]):
        assert torch.equal(before, after)
    for before, after in zip(after_each_window[1], after_each_window[2]):  # the next window moves again
        assert not torch.equal(before, after)
    # the skipped window is not a step taken: it is retried by the next one, and callbacks see 3 steps
    assert steps["step"].tolist() == [1, 2, 2, 3]
    assert len(snapshots.params) == 3
    # the scheduler did not advance on the skipped step: step 3 uses the lr step 2 would have used
    assert steps["lr_0"].tolist() == pytest.approx([0.1, 0.1 / 2, 0.1 / 2, 0.1 / 3])
    assert scheduler.last_epoch == 3
    # the same Precision reused for a second run: the history counts that run's skipped steps only
    again = train(model, batches(2, poisoned={0}), optimizer, precision=precision, device="cpu", progress=False)
    assert again.skipped_steps == 1 and precision.skipped_steps == 2


def test_precision_step_unit():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision(None, "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))
    before = [p.detach().clone() for p in model.parameters()]
    precision.backward(model(torch.ones(2, 3)).sum())
    model.weight.grad[0, 0] = float("inf")
    precision.unscale_(optimizer)
    assert precision.step(optimizer) is False
    assert precision.loss_scale == 128.0 and precision.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    optimizer.zero_grad()
    precision.backward(model(torch.ones(2, 3)).sum())
    precision.unscale_(optimizer)
    assert precision.step(optimizer) is True and precision.skipped_steps == 1
    assert not torch.equal(before[0], model.weight)


def test_unscale_before_clipping_gives_true_gradient_units():
    model = nn.Linear(3, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision(None, "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    x = torch.ones(1, 3)
    precision.backward(model(x).sum())  # d/dw sum(w.x) = x: norm sqrt(3) unscaled
    assert model.weight.grad.norm().item() == pytest.approx(1024 * 3**0.5)
    precision.unscale_(optimizer)
    assert model.weight.grad.norm().item() == pytest.approx(3**0.5)


def test_fp16_on_cpu_falls_back_to_bf16_with_a_message(capsys):
    p = Precision("fp16", "cpu")
    assert p.dtype == torch.bfloat16 and p.scaler is None and p.name == "bf16"
    out = capsys.readouterr().out
    assert "using bf16 instead of fp16" in out


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_off_cuda_is_fp32_and_says_so(device, capsys):
    p = Precision("auto", device)
    assert p.dtype is None and p.scaler is None and p.name == "fp32"
    assert "using fp32 instead of auto" in capsys.readouterr().out


def test_other_fallbacks_and_plain_modes(capsys):
    assert Precision("bf16", "mps").dtype is None
    assert "using fp32 instead of bf16" in capsys.readouterr().out
    for mode in (None, "fp32"):
        p = Precision(mode, "cpu")
        assert p.dtype is None and p.scaler is None and p.loss_scale is None
    assert Precision("bf16", "cpu").dtype == torch.bfloat16
    assert capsys.readouterr().out == ""  # honoured requests print nothing


@pytest.mark.parametrize("bad", ["fp8", "float16", "FP16", True, 16])
def test_invalid_mode_lists_the_modes(bad):
    with pytest.raises(ValueError, match=r"amp must be one of None, 'fp32', 'fp16', 'bf16', 'auto'"):
        Precision(bad, "cpu")
    assert MODES == (None, "fp32", "fp16", "bf16", "auto")


def test_bf16_autocast_on_cpu_runs_linear_in_bfloat16():
    linear = nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with Precision("bf16", "cpu").autocast():
        y = linear(x)
        loss = nn.functional.cross_entropy(y, torch.tensor([0, 1]))
    assert linear.weight.dtype == torch.float32  # the master weights stay fp32
    assert y.dtype == torch.bfloat16
    assert loss.dtype == torch.float32  # cross-entropy is on autocast's fp32 list
    with Precision("fp32", "cpu").autocast():
        assert linear(x).dtype == torch.float32


def test_bf16_loop_runs_and_keeps_fp32_weights():
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = train(model, batches(3, poisoned=set()), optimizer, precision="bf16", device="cpu", progress=False)
    assert len(history.steps) == 3 and history.skipped_steps == 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert "loss_scale" not in history.steps_frame()  # bf16 needs no scaler


def fake_cuda(monkeypatch, capability=(7, 5), name="Tesla T4"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: "scaler")


def test_auto_on_cuda_says_its_choice_once_per_process(monkeypatch, capsys):
    """A notebook builds a Precision("auto") per run: the choice was printed 51 times in one notebook."""
    fake_cuda(monkeypatch)
    for _ in range(3):
        assert Precision("auto", "cuda").name == "fp16"
    out = capsys.readouterr().out
    assert out.count("[ftcourse.amp] amp='auto' on Tesla T4, compute capability 7.5: fp16") == 1, out
    # a different message (another GPU, another fallback) is said once too
    fake_cuda(monkeypatch, (8, 0), "A100")
    Precision("auto", "cuda")
    Precision("auto", "cuda")
    Precision("bf16", "cpu")  # honoured: says nothing
    Precision("fp16", "cpu")
    Precision("fp16", "cpu")
    out = capsys.readouterr().out
    assert out.count("amp='auto' on A100, compute capability 8.0: bf16") == 1, out
    assert out.count("using bf16 instead of fp16") == 1, out
    assert len(out.splitlines()) == 2, out


def test_say_once_dedups_per_distinct_message(capsys):
    assert ftamp.say_once("one") is True
    assert ftamp.say_once("one") is False
    assert ftamp.say_once("two") is True
    assert capsys.readouterr().out == "[ftcourse.amp] one\n[ftcourse.amp] two\n"
    Precision("auto", "cpu", verbose=False)  # verbose=False neither prints nor uses up the message
    Precision("auto", "cpu")
    assert "using fp32 instead of auto" in capsys.readouterr().out


class SkippingScaler:
    """Stands in for an fp16 GradScaler (CPU has none worth testing with): skips the optimizer step on the
    given calls of ``step()`` (1-based) and halves the scale then, as a GradScaler does on inf/nan."""

    def __init__(self, skip: set[int]):
        self.value, self.calls, self.skip, self.skipped_now = 2.0**16, 0, skip, False

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        self.calls += 1
        self.skipped_now = self.calls in self.skip
        if not self.skipped_now:
            optimizer.step()

    def update(self):
        if self.skipped_now:
            self.value /= 2

    def get_scale(self):
        return self.value


def test_skipped_steps_do_not_count_toward_the_planned_steps():
    """A skipped step used to advance state.step and count toward total_steps while the schedule stood
    still: linear decay ended above 0, and SWA snapshotted (and counted) unchanged weights."""
    from ftcourse.schedules import get_schedule
    from ftcourse.swa import SWACallback

    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = get_schedule("linear", optimizer, num_warmup_steps=0, num_training_steps=6)
    precision = Precision(None, "cpu", scaler=SkippingScaler(skip={2, 4}))
    seen = []

    class Steps(Callback):
        def on_step_end(self, state):
            seen.append(state.step)

    swa = SWACallback(start=0.5, replace_scheduler=False)
    history = train(model, batches(10, poisoned=set()), optimizer, scheduler=scheduler, max_steps=6,
                    precision=precision, callbacks=[Steps(), swa], device="cpu", progress=False)
    steps = history.steps_frame()
    # 8 windows for 6 steps taken; a skipped window's step number is retried by the next window
    assert steps["stepped"].tolist() == [True, False, True, False, True, True, True, True]
    assert steps["step"].tolist() == [1, 2, 2, 3, 3, 4, 5, 6]
    assert history.skipped_steps == 2 and not history.stopped_early
    assert seen == [1, 2, 3, 4, 5, 6]  # callbacks see the steps taken, once each
    assert swa.update_steps == [3, 4, 5, 6]
    assert scheduler.last_epoch == 6 and optimizer.param_groups[0]["lr"] == 0.0  # the schedule ran to its end
    used = steps[steps["stepped"]]["lr_0"].tolist()
    assert used == pytest.approx([0.1 * (6 - s) / 6 for s in range(6)])


def test_skipped_steps_at_the_end_of_the_data_leave_planned_steps_untaken():
    """Without spare data (no max_steps below the data's windows) the loop stops with the data: one
    planned step per skip is not taken, and the schedule ends short of its end (documented in train)."""
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / 4)
    seen = []

    class Steps(Callback):
        def on_step_end(self, state):
            seen.append(state.step)

    history = train(model, batches(4, poisoned=set()), optimizer, scheduler=scheduler,
                    precision=Precision(None, "cpu", scaler=SkippingScaler(skip={3})), callbacks=[Steps()],
                    device="cpu", progress=False)
    assert seen == [1, 2, 3] and len(history.steps) == 4 and history.skipped_steps == 1
    assert not history.stopped_early and optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 4)
