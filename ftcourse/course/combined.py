"""Notebook 11's combined recipe as ``fine_tune`` keywords, and the choice between checkpoints and SWA.

Course harness (not a technique module).

The article "Advanced Techniques for Fine-tuning Transformers" (Towards Data Science) stacks five tricks on roberta-base: layer-wise lr decay (LLRD), warmup,
re-initialising the top layers, SWA, and frequent evaluation keeping the best checkpoint. Each is
one piece of this package; :func:`combined_fine_tune_kwargs` switches them on one by one, so that
a cumulative table (baseline, + LLRD, + warmup, ...) is a loop over calls::

    from ftcourse.course.runner import run_seeds
    from ftcourse.course.combined import combined_fine_tune_kwargs

    kwargs = combined_fine_tune_kwargs(llrd_decay=0.9, warmup_ratio=0.1, reinit_layers=1, swa_start=0.75,
                                     evals_per_epoch=4, early_stopping_patience=3)
    results, histories = run_seeds(profile, "full recipe", **kwargs)

The same run as a :class:`ftcourse.course.Recipe` (``llrd_decay``, ``warmup_ratio``, ``reinit_layers``,
``swa_start``, ``evals_per_epoch``, ``early_stopping_patience`` with ``select="best"``) gives the same
numbers through ``ftcourse.course.build_training`` (tests/test_recipes.py). With ``ftcourse.train.train`` directly, the same pieces are ``kwargs["prepare_model"](model)``,
``kwargs["param_groups"](model, lr, weight_decay)`` for the optimizer, a warmup schedule and
``kwargs["callbacks"](model, optimizer, total_steps)``.

Selection when both SWA and frequent evaluation are on (:class:`BestOfCallback`): the candidates
are every evaluated checkpoint of the live model and, at the end, the SWA average; the one with
the best validation accuracy is loaded into the model (the average only if strictly better).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from torch import nn

from ..early_stopping import EarlyStopping, EarlyStoppingCallback
from ..llrd import grouped_llrd_param_groups, llrd_param_groups
from ..param_groups import decay_param_groups
from ..reinit import reinit_top_layers
from ..swa import SWACallback


class BestOfCallback(EarlyStoppingCallback):
    """Early stopping on validation accuracy, then keep the best of {evaluated checkpoints, SWA average}.

    An :class:`ftcourse.early_stopping.EarlyStoppingCallback` (its bookkeeping: the best evaluation,
    patience, the exact snapshot, a fresh start in every run) that does not restore by itself:
    at the end it compares the best checkpoint's validation accuracy with the SWA average's and
    loads the better one (the average only if strictly better).

    ``patience``: evaluations without improvement before stopping (None: never stop, only select).
    ``swa``: the run's :class:`ftcourse.swa.SWACallback` (it runs first whatever the list's order: its ``order``
    is lower, so that its
    end-of-run validation score exists), or None. After training, ``chosen`` is ``"checkpoint"`` or
    ``"swa"`` and ``scores`` holds the candidates' validation accuracies.
    """

    def __init__(self, patience: int | None, swa: SWACallback | None = None):
        super().__init__(EarlyStopping(patience=patience, mode="max", verbose=False), metric="accuracy", restore=False)
        self.swa = swa
        self.chosen: str | None = None
        self.scores: dict[str, float] = {}

    def on_train_begin(self, state) -> None:
        super().on_train_begin(state)
        self.chosen, self.scores = None, {}

    def on_train_end(self, state) -> None:
        es = self.early_stopping
        if es.best_score is None:
            return  # no evaluation happened: keep the final weights
        self.scores = {"checkpoint": es.best_score}
        swa = self.swa
        if swa is not None and swa.averaged is not None and swa.metrics is not None:
            self.scores["swa"] = swa.metrics["val_accuracy"]
        if self.scores.get("swa", float("-inf")) > es.best_score:
            state.model.load_state_dict(swa.averaged.module.state_dict())
            self.chosen = "swa"
        else:
            es.restore_best(state.model)
            self.chosen = "checkpoint"


def _check_number(name: str, value, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def combined_fine_tune_kwargs(
    *,
    llrd_decay: float | None = None,
    group_lr_ratios: Sequence[float] | None = None,
    head_lr_ratio: float = 1.0,
    warmup_ratio: float = 0.0,
    reinit_layers: int = 0,
    swa_start: float | None = None,
    evals_per_epoch: int = 1,
    early_stopping_patience: int | None = None,
    select_best: bool = False,
    made: list | None = None,
) -> dict:
    """Keyword arguments for ``ftcourse.course.fine_tune`` / ``run_seeds`` with the chosen pieces on.

    ``llrd_decay``: LLRD, layer i of L at ``lr * decay ** (L - 1 - i)`` (``llrd_param_groups``).
    ``group_lr_ratios``: grouped LLRD instead, group g (bottom first) at ``lr * ratio_g``, the head at
    ``lr * head_lr_ratio`` (``grouped_llrd_param_groups``). Neither: one lr, no decay on biases/norms.
    ``warmup_ratio``: linear warmup over this fraction of the steps, then linear decay.
    ``reinit_layers``: re-initialise the top n encoder layers (and the pooler when n > 0).
    ``swa_start``: SWA over the run from this fraction on (``SWACallback``; each group keeps its lr).
    ``evals_per_epoch``: validation evaluations per epoch. ``early_stopping_patience`` (evaluations)
    or ``select_best``: keep the best evaluated checkpoint (or SWA average, see :class:`BestOfCallback`).
    ``made``: a list that receives each run's callbacks ``{"swa": ..., "best": ...}`` (to inspect them).

    Raises ValueError if both ``llrd_decay`` and ``group_lr_ratios`` are given.
    """
    if llrd_decay is not None and group_lr_ratios is not None:
        raise ValueError("give llrd_decay (LLRD) or group_lr_ratios (grouped LLRD), not both")
    if llrd_decay is not None:
        _check_number("llrd_decay", llrd_decay, 0, 1, low_open=True, high_open=False)
    if group_lr_ratios is not None:
        if isinstance(group_lr_ratios, (str, bytes)) or len(group_lr_ratios) == 0:
            raise ValueError(f"group_lr_ratios must be a non-empty sequence of numbers > 0, got {group_lr_ratios!r}")
        for i, ratio in enumerate(group_lr_ratios):
            _check_number(f"group_lr_ratios[{i}]", ratio, 0, math.inf, low_open=True, high_open=True)
    _check_number("head_lr_ratio", head_lr_ratio, 0, math.inf, low_open=True, high_open=True)
    _check_number("warmup_ratio", warmup_ratio, 0, 1, low_open=False, high_open=True)
    if swa_start is not None:
        _check_number("swa_start", swa_start, 0, 1, low_open=True, high_open=False)
    if isinstance(reinit_layers, bool) or not isinstance(reinit_layers, numbers.Integral) or reinit_layers < 0:
        raise ValueError(f"reinit_layers must be an int >= 0, got {reinit_layers!r}")
    reinit_layers = int(reinit_layers)
    for name, value in (("evals_per_epoch", evals_per_epoch), ("early_stopping_patience", early_stopping_patience)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be an int >= 1{' or None' if name != 'evals_per_epoch' else ''}, got {value!r}")
    choose = select_best or early_stopping_patience is not None

    def prepare_model(model: nn.Module) -> None:
        if reinit_layers:
            reinit_top_layers(model, reinit_layers, reinit_pooler=True)

    def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
        if llrd_decay is not None:
            return llrd_param_groups(model, lr, llrd_decay, weight_decay=weight_decay)
        if group_lr_ratios is not None:
            return grouped_llrd_param_groups(model, [lr * r for r in group_lr_ratios], weight_decay=weight_decay,
                                             head_lr=lr * head_lr_ratio)
        return decay_param_groups(model, weight_decay)

    def callbacks(model, optimizer, total_steps) -> list:
        pieces = {}
        if swa_start is not None:
            # SWA's own validation score is needed only to choose between it and the checkpoints
            pieces["swa"] = SWACallback(start=swa_start, swa_lr=None, replace_model=not choose, evaluate=choose)
        if choose:
            pieces["best"] = BestOfCallback(early_stopping_patience, pieces.get("swa"))
        if made is not None:
            made.append(pieces)
        return list(pieces.values())  # train() runs SWA first (callback order): its score exists when BestOfCallback decides

    return dict(prepare_model=prepare_model, param_groups=param_groups, warmup_ratio=warmup_ratio,
                callbacks=callbacks, evals_per_epoch=evals_per_epoch)
