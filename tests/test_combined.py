"""ftcourse.course.combined: notebook 11's pieces as fine_tune keywords, and the best-of selection between checkpoints and SWA."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import synthetic_batches, tiny_classifier
from torch import nn

from ftcourse.llrd import block_lrs
from ftcourse.param_groups import decay_param_groups
from ftcourse.course.combined import BestOfCallback, combined_fine_tune_kwargs
from ftcourse.schedules import get_schedule
from ftcourse.swa import SWACallback
from ftcourse.train import evaluate, train


def test_param_groups_follow_the_chosen_variant():
    model = tiny_classifier("bert", num_layers=4)
    plain = combined_fine_tune_kwargs()["param_groups"](model, 1e-3, 0.01)
    assert [len(g["params"]) for g in plain] == [len(g["params"]) for g in decay_param_groups(model, 0.01)]
    llrd = block_lrs(combined_fine_tune_kwargs(llrd_decay=0.5)["param_groups"](model, 1e-3, 0.01))
    assert llrd == pytest.approx({"embeddings": 1e-3 / 16, "layer_0": 1e-3 / 8, "layer_1": 1e-3 / 4,
                                  "layer_2": 1e-3 / 2, "layer_3": 1e-3, "head": 1e-3})
    grouped = block_lrs(combined_fine_tune_kwargs(group_lr_ratios=(0.25, 1.0), head_lr_ratio=2.0)["param_groups"](model, 1e-3, 0.0))
    assert grouped == pytest.approx({"embeddings": 2.5e-4, "layer_0": 2.5e-4, "layer_1": 2.5e-4,
                                     "layer_2": 1e-3, "layer_3": 1e-3, "head": 2e-3})
    with pytest.raises(ValueError, match="not both"):
        combined_fine_tune_kwargs(llrd_decay=0.9, group_lr_ratios=(1.0,))
    with pytest.raises(ValueError, match="reinit_layers"):
        combined_fine_tune_kwargs(reinit_layers=-1)


def test_prepare_model_reinitialises_only_when_asked():
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    combined_fine_tune_kwargs()["prepare_model"](model)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    combined_fine_tune_kwargs(reinit_layers=1)["prepare_model"](model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any(n.startswith("bert.encoder.layer.2.") for n in changed) and any(n.startswith("bert.pooler.") for n in changed)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1.", "bert.embeddings.")) for n in changed)


def test_fine_tune_kwargs_and_callbacks():
    made = []
    kwargs = combined_fine_tune_kwargs(warmup_ratio=0.1, evals_per_epoch=4, swa_start=0.75, early_stopping_patience=2, made=made)
    assert set(kwargs) == {"prepare_model", "param_groups", "warmup_ratio", "callbacks", "evals_per_epoch"}
    assert kwargs["warmup_ratio"] == 0.1 and kwargs["evals_per_epoch"] == 4
    model = tiny_classifier()
    callbacks = kwargs["callbacks"](model, None, 100)
    swa, best = callbacks
    assert isinstance(swa, SWACallback) and isinstance(best, BestOfCallback) and best.swa is swa
    assert swa.evaluate and not swa.replace_model  # the choice is BestOfCallback's
    assert made == [{"swa": swa, "best": best}]
    # SWA alone: the average replaces the final weights, no validation pass for it.
    (only_swa,) = combined_fine_tune_kwargs(swa_start=0.75)["callbacks"](model, None, 100)
    assert only_swa.replace_model and not only_swa.evaluate
    assert combined_fine_tune_kwargs()["callbacks"](model, None, 100) == []


def _state(model):
    return SimpleNamespace(model=model, should_stop=False)


def test_best_of_prefers_strictly_better_swa_else_the_best_checkpoint():
    model = nn.Linear(2, 1)
    for swa_score, expected in ((0.9, "swa"), (0.8, "checkpoint"), (0.7, "checkpoint")):
        best = BestOfCallback(patience=2, swa=None)
        state = _state(model)
        weights = {}
        for i, acc in enumerate([0.6, 0.8, 0.75]):
            with torch.no_grad():
                model.weight.fill_(i)
            weights[acc] = model.weight.detach().clone()
            best.on_evaluate(state, {"accuracy": acc})
        assert not state.should_stop
        averaged = nn.Linear(2, 1)
        with torch.no_grad():
            averaged.weight.fill_(42.0)
        best.swa = SimpleNamespace(averaged=SimpleNamespace(module=averaged), metrics={"val_accuracy": swa_score})
        best.on_train_end(state)
        assert best.chosen == expected and best.scores == {"checkpoint": 0.8, "swa": swa_score}
        want = averaged.weight if expected == "swa" else weights[0.8]
        assert torch.equal(model.weight, want)
    # patience counts evaluations without improvement
    best, state = BestOfCallback(patience=2), _state(model)
    for acc in (0.5, 0.4, 0.45):
        best.on_evaluate(state, {"accuracy": acc})
    assert state.should_stop


def test_recipe_end_to_end_in_the_course_loop():
    """All pieces on, in ftcourse.train: the kept weights score max(candidates) on validation."""
    torch.manual_seed(0)
    made = []
    kwargs = combined_fine_tune_kwargs(llrd_decay=0.8, warmup_ratio=0.2, reinit_layers=1, swa_start=0.5,
                                     select_best=True, made=made)
    model = tiny_classifier("bert", num_layers=2)
    kwargs["prepare_model"](model)
    optimizer = torch.optim.AdamW(kwargs["param_groups"](model, 1e-2, 0.01), lr=1e-2)
    batches, val = synthetic_batches(10, seed=0), synthetic_batches(4, seed=1)
    scheduler = get_schedule("linear", optimizer, 2, 20)
    history = train(model, batches, optimizer, scheduler=scheduler, epochs=2, eval_loader=val, eval_every=2,
                    callbacks=kwargs["callbacks"](model, optimizer, 20), progress=False, device="cpu")
    pieces = made[0]
    assert len(history.evals) == 10 and pieces["swa"].averaged is not None
    assert pieces["best"].chosen in ("checkpoint", "swa")
    assert evaluate(model, val)["accuracy"] == max(pieces["best"].scores.values())
