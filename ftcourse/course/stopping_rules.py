"""Where three early-stopping callbacks stop on the same sequence of validation scores (notebook 10 and its
solutions): Hugging Face's ``EarlyStoppingCallback`` driven as its ``Trainer`` drives it, and
``ftcourse.early_stopping.EarlyStopping`` (Lightning's rule). Greater is better (an accuracy).

Course harness: it needs transformers, which the technique module ``ftcourse.early_stopping`` does not.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np


def hf_first_stop(values, patience: int, threshold: float = 0.0) -> int | None:
    """The evaluation (0-based) at which HF's ``EarlyStoppingCallback`` stops training, None if it never does.

    The callback reads ``state.best_metric``, which the Trainer updates after the callbacks have seen an
    evaluation (``Trainer._determine_best_metric``: a plain comparison, no threshold); the loop does exactly that."""
    from transformers import TrainerControl, TrainerState
    from transformers.trainer_callback import EarlyStoppingCallback

    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args = SimpleNamespace(metric_for_best_model="accuracy", greater_is_better=True)
    state, control = TrainerState(), TrainerControl()
    for i, value in enumerate(values):
        callback.on_evaluate(args, state, control, metrics={"eval_accuracy": value})
        if control.should_training_stop:
            return i
        if state.best_metric is None or np.greater(value, state.best_metric):  # Trainer._determine_best_metric
            state.best_metric = value
    return None


def ftcourse_first_stop(values, patience: int, min_delta: float = 0.0, quiet: bool = False) -> int | None:
    """The evaluation (0-based) at which ``ftcourse.early_stopping.EarlyStopping`` stops, None if it never does.
    ``quiet``: silence its warning on a non-finite value (it stops there)."""
    import torch

    from ..early_stopping import EarlyStopping

    probe = torch.nn.Linear(1, 1)  # stands for the model whose weights it keeps: a replay needs only the indices
    stopper = EarlyStopping(patience=patience, min_delta=min_delta, mode="max", verbose=False)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return next((i for i, v in enumerate(values) if stopper.step(v, probe)), None)
