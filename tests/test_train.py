import math

import pytest
import torch
from conftest import synthetic_batches, tiny_classifier

from ftcourse.param_groups import decay_param_groups
from ftcourse.train import Callback, History, evaluate, set_seed, train


def _run(seed, steps_batches=None, dropout=0.1, **kwargs):
    set_seed(seed)
    model = tiny_classifier("bert", dropout=dropout)
    batches = steps_batches or synthetic_batches(6)
    optimizer = torch.optim.AdamW(decay_param_groups(model, 0.01), lr=1e-2)
    history = train(model, batches, optimizer, progress=False, **kwargs)
    return model, history


def test_same_seed_bit_identical_losses():
    # dropout on: the seed must also fix the dropout masks
    _, a = _run(3, epochs=2)
    _, b = _run(3, epochs=2)
    _, c = _run(4, epochs=2)
    assert [r["loss"] for r in a.steps] == [r["loss"] for r in b.steps]
    assert [r["loss"] for r in a.steps] != [r["loss"] for r in c.steps]


def test_loss_falls_on_tiny_model():
    batches = synthetic_batches(8, seed=1)
    set_seed(0)
    model = tiny_classifier("bert")
    before = evaluate(model, batches)
    train(model, batches, torch.optim.AdamW(model.parameters(), lr=3e-3), epochs=15, progress=False)
    after = evaluate(model, batches)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.9


def test_history_records_each_step_and_group_lrs():
    set_seed(0)
    model = tiny_classifier("bert")
    groups = [{"params": list(model.bert.parameters()), "lr": 1e-3}, {"params": list(model.classifier.parameters()), "lr": 1e-2}]
    optimizer = torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    batches = synthetic_batches(5)
    history = train(model, batches, optimizer, scheduler=scheduler, epochs=2, eval_loader=batches[:2], eval_every=3, progress=False)
    assert isinstance(history, History)
    assert [r["step"] for r in history.steps] == list(range(1, 11))
    # the lrs logged are those the step used: the schedule's value before scheduler.step()
    assert history.steps[0]["lr_0"] == pytest.approx(1e-3) and history.steps[0]["lr_1"] == pytest.approx(1e-2)
    assert history.steps[2]["lr_1"] == pytest.approx(1e-2 / 3)
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["items"] == 8 for r in history.steps)
    assert [e["step"] for e in history.evals] == [3, 6, 9, 10]
    assert {"val_loss", "val_accuracy"} <= set(history.evals[0])
    # on CPU what the run added to the process's RSS: 0 is possible when it reuses freed memory
    assert history.peak_memory_mb >= 0 and history.train_time_s > 0


def test_eval_every_none_evaluates_each_epoch():
    _, history = _run(0, epochs=3, eval_loader=synthetic_batches(2))
    assert [e["epoch"] for e in history.evals] == [0, 1, 2]


def test_gradient_is_clipped_once_per_step():
    seen = []

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for g in self.param_groups for p in g["params"] if p.grad is not None)))
            return super().step(closure)

    set_seed(0)
    model = tiny_classifier("bert")
    history = train(model, synthetic_batches(4), Spy(model.parameters(), lr=0.1), max_grad_norm=1e-3, progress=False)
    assert all(norm == pytest.approx(1e-3, rel=1e-4) for norm in seen)
    assert all(r["grad_norm"] > 1e-3 for r in history.steps)  # the pre-clip norm is what is logged


def test_callbacks_see_every_event_and_can_stop():
    events = []

    class Recorder(Callback):
        def on_train_begin(self, state):
            events.append("begin")

        def on_step_end(self, state):
            events.append(f"step{state.step}")
            if state.step == 3:
                state.should_stop = True

        def on_evaluate(self, state, metrics):
            events.append("eval")

        def on_train_end(self, state):
            events.append("end")

    _, history = _run(0, epochs=5, eval_loader=synthetic_batches(1), eval_every=2, callbacks=[Recorder()])
    assert events == ["begin", "step1", "step2", "eval", "step3", "end"]
    assert history.stopped_early and len(history.steps) == 3


def test_max_steps_and_bad_arguments():
    _, history = _run(0, epochs=10, max_steps=4)
    assert len(history.steps) == 4
    with pytest.raises(ValueError, match="epochs"):
        _run(0, epochs=0)
    with pytest.raises(ValueError, match="eval_every"):
        _run(0, eval_every=0)


def _counting_forwards(model):
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(module.training))
    return calls


def test_a_shuffled_eval_loader_is_evaluated_in_one_pass():
    """run_evaluation used to try predictions first and, on a shuffled loader, evaluate a second time."""
    batches = synthetic_batches(4)
    shuffled = torch.utils.data.DataLoader(batches[:3], batch_size=None, shuffle=True)
    set_seed(0)
    model = tiny_classifier("bert")
    calls = _counting_forwards(model)
    history = train(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), eval_loader=shuffled,
                    eval_every=2, progress=False)
    assert len(history.evals) == 2
    assert calls.count(False) == 2 * 3  # two evaluations, one pass of 3 batches each
    assert calls.count(True) == 4  # the training forwards
    assert history.last_eval is None  # a shuffled loader has no row order to report predictions in

    in_order = torch.utils.data.DataLoader(batches[:3], batch_size=None, shuffle=False)
    calls.clear()
    history = train(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), eval_loader=in_order,
                    progress=False)
    assert calls.count(False) == 3 and history.last_eval["step"] == 4
    assert len(history.last_eval["predictions"]) == 3 * 8


def test_has_fixed_order():
    from ftcourse.train import has_fixed_order

    rows = list(range(6))
    loader = torch.utils.data.DataLoader
    assert has_fixed_order(synthetic_batches(2))  # a list of batches
    assert has_fixed_order(loader(rows, batch_size=2))
    assert has_fixed_order(loader(rows, batch_size=2, sampler=[5, 4, 3, 2, 1, 0]))
    assert not has_fixed_order(loader(rows, batch_size=2, shuffle=True))
    assert not has_fixed_order(loader(rows, batch_sampler=[[0, 1], [2, 3], [4, 5]]))  # order unknown


EVENTS = ("on_train_begin", "on_step_end", "on_evaluate", "on_train_end")


def _recording(cls, log, *args, **kwargs):
    """An instance of a subclass of ``cls`` that logs (class name, event) before each of its events."""
    namespace = {}
    for event in EVENTS:
        if hasattr(cls, event):
            def method(self, *a, _event=event):
                log.append((cls.__name__, _event))
                return getattr(super(type(self), self), _event)(*a)
            namespace[event] = method
    return type(f"Recording{cls.__name__}", (cls,), namespace)(*args, **kwargs)


def test_callbacks_run_in_their_order_whatever_the_list_order():
    """SWA must see each step before early stopping / best-checkpoint selection acts on it (and end
    first, so its average and score exist): EarlyStoppingCallback has the larger ``order``."""
    from ftcourse.early_stopping import EarlyStopping, EarlyStoppingCallback
    from ftcourse.swa import SWACallback
    from ftcourse.train import Callback

    assert Callback.order == 0 and SWACallback.order == 0 < EarlyStoppingCallback.order
    logs = []
    for reverse in (False, True):
        log = []
        swa = _recording(SWACallback, log, start=0.5)
        es = _recording(EarlyStoppingCallback, log, EarlyStopping(patience=None, verbose=False))
        _run(0, epochs=1, eval_loader=synthetic_batches(1), eval_every=3,
             callbacks=[swa, es][::-1] if reverse else [swa, es])
        logs.append(log)
    assert logs[0] == logs[1]
    assert logs[0][:2] == [("SWACallback", "on_train_begin"), ("EarlyStoppingCallback", "on_train_begin")]
    assert logs[0][-2:] == [("SWACallback", "on_train_end"), ("EarlyStoppingCallback", "on_train_end")]
    # stable: equal orders keep the list's order
    seen = []

    class A(Callback):
        def on_train_begin(self, state):
            seen.append("A")

    class B:  # any object with some of the methods; no order attribute means 0
        def on_train_begin(self, state):
            seen.append("B")

    class Late(Callback):
        order = -5

        def on_train_begin(self, state):
            seen.append("first")

    _run(0, max_steps=1, callbacks=[B(), A(), Late()])
    assert seen == ["first", "B", "A"]


@pytest.mark.parametrize("callbacks, match", [
    ("one", "callbacks must be a list"),
    (Callback(), "callbacks must be a list"),
    ({"a": Callback()}, "callbacks must be a list"),
    ([Callback], "an instance"),
    ([object()], "has none of the methods"),
])
def test_callbacks_must_be_a_list_of_callback_objects(callbacks, match):
    with pytest.raises(TypeError, match=match):
        _run(0, max_steps=1, callbacks=callbacks)


def test_callback_methods_and_order_are_checked():
    class NotCallable:
        on_step_end = 3

    class BadOrder(Callback):
        order = "first"

    with pytest.raises(TypeError, match="on_step_end must be a method"):
        _run(0, max_steps=1, callbacks=[NotCallable()])
    with pytest.raises(TypeError, match="order must be an int"):
        _run(0, max_steps=1, callbacks=[BadOrder()])


def test_scheduler_must_have_a_step_method():
    def schedule(step):
        return 1.0

    with pytest.raises(TypeError,
                       match=r"scheduler must be an object with a \.step\(\) method.*LambdaLR.*get_schedule"):
        _run(0, max_steps=1, scheduler=schedule)
    with pytest.raises(TypeError, match="scheduler must be"):
        _run(0, max_steps=1, scheduler="linear")
