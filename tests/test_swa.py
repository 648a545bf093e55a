"""SWACallback against torch.optim.swa_utils' definitions (Izmailov et al. 2018): the equal average
of the snapshots, the EMA formula, SWALR's lr, and no effect before the start. float64 throughout."""
from __future__ import annotations

from collections import UserDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import synthetic_batches, tiny_classifier
from torch import nn
from torch.optim.swa_utils import SWALR
from torch.optim.swa_utils import update_bn as torch_update_bn

from ftcourse.swa import SWACallback, ema_decay_for_window, has_batchnorm, update_bn
from ftcourse.train import evaluate, set_seed, train

STEPS_PER_EPOCH, EPOCHS = 6, 2
TOTAL = STEPS_PER_EPOCH * EPOCHS
LR = 1e-2


@pytest.fixture(scope="module")
def plain_history():
    return _run()[1]


class Snapshots:
    """After the SWA callback: a copy of the parameters at each step it averaged."""

    def __init__(self, swa):
        self.swa, self.params = swa, []

    def on_step_end(self, state):
        if self.swa.update_steps and self.swa.update_steps[-1] == state.step:
            self.params.append([p.detach().clone() for p in state.model.parameters()])


def _run(callbacks=(), two_groups=False, dropout=0.1, eval_loader=None):
    set_seed(0)
    model = tiny_classifier("bert", num_layers=1, dropout=dropout).double()
    if two_groups:
        params = [{"params": list(model.bert.parameters()), "lr": LR / 4}, {"params": list(model.classifier.parameters())}]
    else:
        params = model.parameters()
    optimizer = torch.optim.AdamW(params, lr=LR)
    # linear decay to 0: the lr at the start differs from any swa_lr below
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / TOTAL)
    history = train(model, synthetic_batches(STEPS_PER_EPOCH, seed=1), optimizer, scheduler=scheduler, epochs=EPOCHS,
                    callbacks=list(callbacks), eval_loader=eval_loader, eval_every=4, progress=False)
    return model, history


def test_swa_average_is_the_mean_of_the_snapshots():
    swa = SWACallback(start=0.5, update_every=2, swa_lr=LR / 2)
    snaps = Snapshots(swa)
    _run([swa, snaps])
    assert swa.start_step == 6 and swa.update_steps == [6, 8, 10, 12]
    assert int(swa.averaged.n_averaged) == 4 == len(snaps.params)
    mean = [torch.stack(ps).mean(0) for ps in zip(*snaps.params)]
    torch.testing.assert_close(list(swa.averaged.module.parameters()), mean)
    assert not torch.equal(mean[0], snaps.params[-1][0])  # the average is not the last snapshot


def test_ema_matches_its_formula():
    decay = 0.7
    swa = SWACallback(start=0.25, ema_decay=decay)
    snaps = Snapshots(swa)
    _run([swa, snaps])
    assert swa.update_steps == list(range(3, TOTAL + 1)) and not swa.replace_scheduler
    ema = snaps.params[0]  # torch's EMA starts as a copy of the first snapshot
    for params in snaps.params[1:]:
        ema = [decay * e + (1 - decay) * p for e, p in zip(ema, params)]
    torch.testing.assert_close(list(swa.averaged.module.parameters()), ema)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_steps", [0, 3])
def test_lr_follows_swalr_after_the_start(strategy, anneal_steps, plain_history):
    plain = plain_history
    swa = SWACallback(start=0.5, swa_lr=LR / 10, anneal_steps=anneal_steps, anneal_strategy=strategy)
    _, history = _run([swa])
    start = swa.start_step
    # reference: SWALR on a dummy optimizer that starts from the lr the schedule gives step start+1
    dummy = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=plain.steps[start]["lr_0"])
    reference = SWALR(dummy, swa_lr=LR / 10, anneal_epochs=anneal_steps, anneal_strategy=strategy)
    expected = []
    for _ in range(TOTAL - start):
        expected.append(dummy.param_groups[0]["lr"])
        dummy.step()
        reference.step()
    got = [row["lr_0"] for row in history.steps[start:]]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    assert got[-1] == pytest.approx(LR / 10)


def test_swa_lr_none_keeps_each_groups_lr_at_the_start():
    swa = SWACallback(start=0.5)
    _, history = _run([swa], two_groups=True)
    start = swa.start_step
    for group in (0, 1):
        after = [row[f"lr_{group}"] for row in history.steps[start:]]
        assert after == [after[0]] * len(after)
    assert after[0] / history.steps[start][f"lr_0"] == pytest.approx(4)  # the groups' ratio survives
    assert swa.lrs == [history.steps[start]["lr_0"], history.steps[start]["lr_1"]]


def test_nothing_changes_before_the_start(plain_history):
    seen = []

    class Probe:
        def on_step_end(self, state):
            seen.append((state.step, swa.averaged is None, type(state.scheduler).__name__))

    swa = SWACallback(start=0.75, swa_lr=LR / 3)
    plain = plain_history
    _, history = _run([swa, Probe()])
    start = swa.start_step
    assert start == 9
    assert all(none and name == "LambdaLR" for step, none, name in seen if step < start)
    assert all(not none and name == "SWALR" for step, none, name in seen if step >= start)
    keys = ("loss", "lr_0", "grad_norm")
    assert [[r[k] for k in keys] for r in history.steps[:start]] == [[r[k] for k in keys] for r in plain.steps[:start]]
    # step start+1 still starts from identical weights, but already uses the SWA lr (anneal_steps=0)
    assert history.steps[start]["loss"] == plain.steps[start]["loss"]
    assert history.steps[start]["lr_0"] == pytest.approx(LR / 3) != plain.steps[start]["lr_0"]


def test_metrics_of_the_averaged_model_and_replace_model():
    val = synthetic_batches(2, seed=2)
    swa = SWACallback(start=0.5, replace_model=True)
    model, _ = _run([swa], eval_loader=val)
    expected = evaluate(swa.averaged.module, val)
    assert swa.metrics == {"val_loss": expected["loss"], "val_accuracy": expected["accuracy"]}
    torch.testing.assert_close(model.state_dict(), swa.averaged.module.state_dict(), rtol=0, atol=0)


def test_evaluate_false_skips_the_validation_pass():
    swa = SWACallback(start=0.5, evaluate=False)
    _run([swa], eval_loader=synthetic_batches(2, seed=2))
    assert swa.metrics is None and swa.averaged is not None


def test_without_replace_model_the_trained_model_keeps_its_final_weights():
    swa = SWACallback(start=0.5)
    snaps = Snapshots(swa)
    model, _ = _run([swa, snaps])
    torch.testing.assert_close(list(model.parameters()), snaps.params[-1], rtol=0, atol=0)


def test_start_one_averages_only_the_final_weights_and_rounding():
    assert SWACallback(start=0.7).start_step_for(10) == 7
    assert SWACallback(start=0.01).start_step_for(10) == 1
    swa = SWACallback(start=1.0)
    model, _ = _run([swa])
    assert swa.update_steps == [TOTAL]
    torch.testing.assert_close(list(swa.averaged.module.parameters()), list(model.parameters()), rtol=0, atol=0)


def test_ema_with_use_buffers_keeps_integer_buffers_exact():
    # torch's EMA also decays integer buffers (rounding BERT's position_ids); ours copies them
    swa = SWACallback(start=0.25, ema_decay=0.9, use_buffers=True)
    model, _ = _run([swa])
    for (name, averaged), live in zip(swa.averaged.module.named_buffers(), model.buffers()):
        assert torch.equal(averaged, live), name


def test_training_that_ends_before_the_start_warns():
    class StopAt3:
        def on_step_end(self, state):
            state.should_stop = state.step >= 3

    swa = SWACallback(start=0.5)
    with pytest.warns(RuntimeWarning, match="before averaging started"):
        _run([swa, StopAt3()])
    assert swa.averaged is None


def test_only_one_callback_may_replace_the_scheduler():
    with pytest.raises(RuntimeError, match="already replaced the scheduler"):
        _run([SWACallback(start=0.5), SWACallback(start=0.5)])
    _run([SWACallback(start=0.5), SWACallback(start=0.5, replace_scheduler=False), SWACallback(start=0.5, ema_decay=0.9)])


def test_swa_lr_list_must_match_the_groups():
    with pytest.raises(ValueError, match="parameter groups"):
        _run([SWACallback(start=0.5, swa_lr=[1e-3, 1e-3, 1e-3])], two_groups=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start=0), "start"), (dict(start=1.5), "start"), (dict(start=-0.2), "start"),
        (dict(start=float("nan")), "start"),
        (dict(anneal_strategy="exp"), "anneal_strategy must be one of 'cos', 'linear'"),
        (dict(anneal_steps=-1), "anneal_steps must be an int >= 0"),
        (dict(update_every=0), "update_every must be an int >= 1"), (dict(swa_lr=-1e-3), "swa_lr"),
        (dict(swa_lr=[]), "swa_lr"), (dict(swa_lr=float("inf")), "swa_lr"),
        (dict(ema_decay=1.0), "ema_decay"), (dict(ema_decay=0.0), "ema_decay"),
        (dict(replace_scheduler="yes"), "replace_scheduler"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SWACallback(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(start=True), r"start must be a fraction of training in \(0, 1\]"), (dict(start="0.5"), "start"),
        (dict(anneal_steps=2.5), "anneal_steps must be an int >= 0"), (dict(anneal_steps=True), "anneal_steps"),
        (dict(update_every=2.0), "update_every must be an int >= 1"), (dict(update_every=False), "update_every"),
        (dict(swa_lr="1e-3"), "swa_lr must be None, a float >= 0 or a sequence"), (dict(swa_lr=[1e-3, "x"]), "swa_lr"),
        (dict(swa_lr=True), "swa_lr"), (dict(ema_decay="0.9"), r"ema_decay must be None \(SWA\) or a float"),
    ],
)
def test_arguments_of_the_wrong_type_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        SWACallback(**kwargs)


def test_numpy_numbers_are_accepted():
    swa = SWACallback(start=np.float64(0.5), anneal_steps=np.int64(2), update_every=np.int32(2),
                      swa_lr=np.float32(1e-3), ema_decay=None)
    assert type(swa.anneal_steps) is int and type(swa.update_every) is int and swa.start == 0.5
    assert SWACallback(ema_decay=np.float64(0.9)).ema_decay == 0.9


def test_ema_decay_for_window():
    assert ema_decay_for_window(1) == 0.0 and ema_decay_for_window(19) == pytest.approx(0.9)
    assert ema_decay_for_window(np.int64(19)) == ema_decay_for_window(19)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        ema_decay_for_window(0)
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="steps must be an int >= 1"):
            ema_decay_for_window(bad)


def test_a_reused_callback_starts_afresh_and_matches_a_fresh_one():
    val = synthetic_batches(2, seed=2)
    reused = SWACallback(start=0.5, update_every=2)
    # run 1 differs in every per-run field: two groups (two SWA lrs), an eval loader (metrics)
    _run([reused], two_groups=True, eval_loader=val)
    assert reused.metrics is not None and len(reused.lrs) == 2
    _run([reused])
    fresh = SWACallback(start=0.5, update_every=2)
    _run([fresh])
    assert reused.update_steps == fresh.update_steps == [6, 8, 10, 12]
    assert int(reused.averaged.n_averaged) == int(fresh.averaged.n_averaged) == 4
    assert reused.metrics is None and reused.lrs == fresh.lrs and reused.start_step == fresh.start_step
    torch.testing.assert_close(reused.averaged.module.state_dict(), fresh.averaged.module.state_dict(), rtol=0, atol=0)
    reused.reset()
    assert reused.averaged is None and reused.update_steps == [] and reused.start_step is None
    assert reused.metrics is None and reused.lrs is None


class TinyBN(nn.Module):
    """A model with BatchNorm that takes Hugging Face style keyword batches."""

    def __init__(self):
        super().__init__()
        self.emb, self.bn, self.out = nn.Embedding(100, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)

    def features(self, input_ids):
        return self.emb(input_ids).mean(1)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.out(self.bn(self.features(input_ids))))


class Unreadable:
    def __iter__(self):
        raise AssertionError("the loader must not be read")


def test_update_bn_is_a_no_op_without_batchnorm():
    model = tiny_classifier("bert").double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not has_batchnorm(model)
    assert update_bn(Unreadable(), model) is False
    torch_update_bn(Unreadable(), model)  # torch's returns before reading: no error, no effect
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)


def test_update_bn_with_dict_batches_matches_torch_on_tensor_batches():
    torch.manual_seed(0)
    batches = synthetic_batches(4)
    ours, theirs = TinyBN(), TinyBN()
    theirs.load_state_dict(ours.state_dict())
    assert has_batchnorm(ours)
    with pytest.raises(TypeError):  # torch's update_bn passes the dict as one positional argument
        torch_update_bn(batches, TinyBN())
    # DataCollatorWithPadding yields BatchEncoding, a UserDict rather than a dict
    assert update_bn([UserDict(b) for b in batches], ours) is True
    torch_update_bn([ours.features(b["input_ids"]).detach() for b in batches], theirs.bn)
    torch.testing.assert_close(ours.bn.running_mean, theirs.bn.running_mean)
    torch.testing.assert_close(ours.bn.running_var, theirs.bn.running_var)
    assert ours.training


class TinyBNDropout(TinyBN):
    """TinyBN with dropout, so a model left in train mode changes its outputs."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.out(self.drop(self.bn(self.features(input_ids)))))


def test_update_bn_leaves_a_model_in_eval_mode_in_eval_mode():
    torch.manual_seed(0)
    batches = synthetic_batches(4)
    model = TinyBNDropout().eval()
    stale = model.bn.running_mean.clone()
    assert update_bn(batches, model) is True
    assert not torch.equal(model.bn.running_mean, stale)  # the statistics were recomputed
    assert not model.training and not any(m.training for m in model.modules())
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)  # dropout off
    # as torch's own update_bn does for a model it can call
    seq = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).eval()
    torch_update_bn([torch.randn(8, 4) for _ in range(3)], seq)
    assert not seq.training


def test_update_bn_keeps_each_modules_own_mode_and_a_train_mode_model_in_train_mode():
    batches = synthetic_batches(4)
    model = TinyBNDropout().train()
    model.drop.eval()  # a mixed model: only the dropout is off
    update_bn(batches, model)
    assert model.training and model.bn.training and not model.drop.training


def test_update_bn_restores_mode_and_momentum_when_the_pass_fails():
    model = TinyBNDropout().eval()

    def broken():
        yield synthetic_batches(1)[0]
        raise RuntimeError("the loader broke")

    with pytest.raises(RuntimeError, match="the loader broke"):
        update_bn(broken(), model)
    assert not any(m.training for m in model.modules()) and model.bn.momentum == 0.1


def test_batchnorm_model_needs_bn_loader_or_buffers():
    def run(swa):
        set_seed(0)
        model = TinyBN()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train(model, synthetic_batches(4), opt, epochs=2, callbacks=[swa], progress=False)
        return model

    steps = []

    class Count:
        def on_step_end(self, state):
            steps.append(state.step)

    with pytest.raises(ValueError, match="bn_loader"):  # at the start, not after the run
        set_seed(0)
        model = TinyBN()
        train(model, synthetic_batches(4), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[SWACallback(start=0.5), Count()], progress=False)
    assert steps == []
    swa = SWACallback(start=0.5, bn_loader=synthetic_batches(4))
    run(swa)
    stale = TinyBN().bn.running_mean
    assert not torch.equal(swa.averaged.module.bn.running_mean, stale)
