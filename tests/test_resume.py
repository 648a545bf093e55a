"""Checkpoints and resume (one process): a run interrupted after k optimizer steps (a callback sets
should_stop) and resumed from its checkpoint ends with the weights of a run never interrupted, bit for bit
on CPU: model, optimizer, schedule, GradScaler, every random state (dropout draws from torch's) and the data
position (the epoch's order drawn again, the windows already trained on passed over) all come back.
(Two processes, through accelerate's save_state/load_state: tests/test_ddp.py.)"""
from __future__ import annotations

import pytest
import torch
from conftest import synthetic_batches, tiny_bert, tiny_classifier

from ftcourse.amp import Precision
from ftcourse.course import baseline_recipe
from ftcourse.course.runner import fine_tune
from ftcourse.schedules import get_schedule
from ftcourse.train import Callback, latest_checkpoint, set_seed, train


class Interrupt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            state.should_stop = True


@pytest.mark.parametrize("k", [4, 6])  # 6 steps an epoch: inside the first epoch, and at its end
def test_fine_tune_interrupted_and_resumed_ends_bit_identical(tiny_setup, tmp_path, k):
    recipe = baseline_recipe(tiny_setup).replace(warmup_ratio=0.2)  # dropout 0.1, shuffled, length-grouped batches
    whole = fine_tune(recipe, model_factory=tiny_bert, progress=False, keep_model=True)
    stopped = fine_tune(recipe, model_factory=tiny_bert, progress=False, checkpoint_dir=tmp_path, checkpoint_every=k,
                        callbacks=lambda model, optimizer, total: [Interrupt(k)])
    assert stopped.row["steps"] == k < whole.row["steps"] == 12
    assert latest_checkpoint(tmp_path) == tmp_path / f"step_{k}"
    resumed = fine_tune(recipe, model_factory=tiny_bert, progress=False, keep_model=True,
                        resume_from=latest_checkpoint(tmp_path))
    for (name, want), got in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(got, want), name
    assert [s["loss"] for s in resumed.history.steps] == [s["loss"] for s in whole.history.steps]
    assert [s["lr_0"] for s in resumed.history.steps] == [s["lr_0"] for s in whole.history.steps]
    assert resumed.history.evals == whole.history.evals  # the evaluations before the checkpoint come back with it
    assert (resumed.row["test_predictions"] == whole.row["test_predictions"]).all()


def _run(tmp_path=None, *, stop_at=None, resume_from=None, every=None):
    """A direct train() run with what fine_tune does not exercise: a GradScaler (on CPU, in fp32), accumulation
    with a short last window, and a shuffled loader without a generator of its own (its order comes from
    torch's global random state, which dropout also draws from)."""
    set_seed(0)
    model = tiny_classifier("bert", num_layers=2, dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = get_schedule("cosine", optimizer, num_warmup_steps=2, num_training_steps=9)
    rows = [{k: b[k][i] for k in b} for b in synthetic_batches(5, batch_size=4, seed=1) for i in range(4)]
    train_loader = torch.utils.data.DataLoader(rows, batch_size=4, shuffle=True)  # 5 batches: windows 2, 2, 1
    precision = Precision(None, "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2))
    history = train(model, train_loader, optimizer, scheduler=scheduler, epochs=3, accumulation_steps=2,
                    precision=precision, eval_loader=synthetic_batches(2, seed=5), progress=False,
                    callbacks=[Interrupt(stop_at)] if stop_at else [], checkpoint_dir=tmp_path if every else None,
                    checkpoint_every=every, resume_from=resume_from)
    return model, history, precision


# 3 steps an epoch, evaluated at each epoch's end: inside the second epoch, and at its end (its evaluation,
# after the checkpoint, is the resumed run's)
@pytest.mark.parametrize("k", [4, 6])
def test_train_resumes_scaler_schedule_and_a_loader_without_a_generator_bit_identical(tmp_path, k):
    model, history, precision = _run()
    _, stopped, _ = _run(tmp_path, stop_at=k, every=k)
    assert len(stopped.steps) == k and stopped.stopped_early
    resumed_model, resumed, resumed_precision = _run(resume_from=tmp_path / f"step_{k}")
    for (name, want), got in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(got, want), name
    assert [s["loss"] for s in resumed.steps] == [s["loss"] for s in history.steps]
    assert [s["loss_scale"] for s in resumed.steps] == [s["loss_scale"] for s in history.steps]
    assert resumed_precision.scaler.get_scale() == precision.scaler.get_scale() > 2.0 ** 8  # it grew, and came back
    assert resumed.evals == history.evals and not resumed.stopped_early


def test_resuming_with_another_plan_is_refused(tmp_path):
    _run(tmp_path, stop_at=2, every=2)
    set_seed(0)
    model = tiny_classifier("bert", num_layers=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="resume with the data, batch size and schedule"):
        train(model, synthetic_batches(4, batch_size=4), optimizer, epochs=3, accumulation_steps=2, progress=False,
              resume_from=tmp_path / "step_2")


def test_fine_tune_refuses_checkpoints_of_recipes_whose_callbacks_keep_state(tiny_setup, tmp_path):
    recipe = baseline_recipe(tiny_setup).replace(early_stopping_patience=2)
    with pytest.raises(ValueError, match="not yet the state of the recipe's callbacks"):
        fine_tune(recipe, model_factory=tiny_bert, progress=False, checkpoint_dir=tmp_path, checkpoint_every=2)
