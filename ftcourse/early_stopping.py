"""Early stopping with restoration of the best weights.

Copy alone.
Into one package folder: ``python -m ftcourse copy early_stopping --into mypkg/``.

Reference: Prechelt, "Early Stopping -- But When?" (1998), the "stop after ``patience``
evaluations without progress" rule; the same rule as Keras/Lightning ``EarlyStopping`` and HF
``EarlyStoppingCallback``. ``step(metric, model)`` is called after every evaluation and returns
True when training should stop: after ``patience`` consecutive evaluations without improvement,
where improvement means ``metric > best + min_delta`` (mode "max") or ``metric < best - min_delta``
(mode "min"). A non-finite metric stops at once, with a warning. Unlike Lightning (which does not
restore) and like HF's ``load_best_model_at_end``, the weights of the best evaluation are kept (a
CPU copy, or a file) and ``restore_best(model)`` loads exactly them back. ``patience=None`` never
stops: best-checkpoint selection.

Both classes are per run: ``EarlyStopping.reset()`` forgets everything a run recorded (best score,
counters, the saved weights), and ``EarlyStoppingCallback.on_train_begin`` calls it, so one
callback reused in a second ``train()`` call judges (and restores) that run only.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings

import torch
from torch import nn

MONITORED = {"accuracy": "max", "loss": "min"}  # the metrics ftcourse.train.evaluate returns


class EarlyStopping:
    """Watch one validation metric; say when to stop; keep the best weights.

    ``patience``: evaluations (not epochs, not steps) without improvement before stopping; None
    never stops (best-checkpoint selection only). ``min_delta``: an absolute margin the metric
    must beat the best by. ``mode``: "max" (accuracy) or "min" (loss). ``checkpoint_path``: keep
    the best weights in this file instead of in memory (large models). ``verbose``: print the
    reason when patience runs out (a non-finite metric always warns).

    Attributes: ``best_score``, ``best_index`` (0-based evaluation), ``bad_evaluations``,
    ``n_evaluations``, ``stopped_reason`` (None while training may go on); :meth:`reset` clears
    them (and the saved weights) for a new run.

    ``patience`` is an int (numpy integers too, not bool) and ``min_delta`` a real number:
    ``TypeError`` for other types, ``ValueError`` for values out of range.
    """

    def __init__(self, patience: int | None, min_delta: float = 0.0, mode: str = "max",
                 checkpoint_path: str | os.PathLike | None = None, verbose: bool = True):
        if patience is not None:
            # bool is an int subclass: patience=True would silently mean 1
            if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
                raise TypeError(f"patience must be an int >= 1 (or None to never stop), "
                                f"got {type(patience).__name__} {patience!r}")
            if patience < 1:
                raise ValueError(f"patience must be an int >= 1 (or None to never stop), got {patience!r}")
            patience = int(patience)
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real):
            raise TypeError(f"min_delta must be a finite number >= 0, got {type(min_delta).__name__} {min_delta!r}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.checkpoint_path = checkpoint_path
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        """Forget the run: no best score or index, counters at 0, no stop reason, no saved weights.

        A file at ``checkpoint_path`` is left on disk but no longer used (``restore_best`` raises
        until an evaluation is recorded again, and the next improvement overwrites it).
        """
        self.best_score: float | None = None
        self.best_index: int | None = None
        self.bad_evaluations = 0
        self.n_evaluations = 0
        self.stopped_reason: str | None = None
        self._best_state: dict | None = None

    def is_improvement(self, metric: float) -> bool:
        if self.best_score is None:
            return True
        if self.mode == "max":
            return metric > self.best_score + self.min_delta
        return metric < self.best_score - self.min_delta

    def step(self, metric: float, model: nn.Module) -> bool:
        """Record one evaluation of ``model``; True when training should stop."""
        metric = float(metric)
        self.n_evaluations += 1
        if not math.isfinite(metric):
            # A diverged run: waiting `patience` more evaluations only burns compute.
            self.stopped_reason = f"the monitored metric is {metric} (not finite) at evaluation {self.n_evaluations - 1}"
            warnings.warn(f"EarlyStopping: stopping: {self.stopped_reason}", RuntimeWarning, stacklevel=2)
            return True
        if self.is_improvement(metric):
            self.best_score, self.best_index, self.bad_evaluations = metric, self.n_evaluations - 1, 0
            self._save(model)
            return False
        self.bad_evaluations += 1
        if self.patience is not None and self.bad_evaluations >= self.patience:
            self.stopped_reason = f"no improvement in {self.patience} evaluations (best {self.best_score:.4f})"
            if self.verbose:
                print(f"[ftcourse.early_stopping] stopping: {self.stopped_reason}.")
            return True
        return False

    def _save(self, model: nn.Module) -> None:
        # copy=True: a CPU model's state_dict shares storage with the live weights
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if self.checkpoint_path is not None:
            torch.save(state, self.checkpoint_path)
            self._best_state = None
        else:
            self._best_state = state

    def restore_best(self, model: nn.Module) -> nn.Module:
        """Load the weights of the best evaluation into ``model`` (exactly; returns the model)."""
        if self.best_score is None:
            raise RuntimeError("restore_best: no finite evaluation has been recorded yet")
        state = self._best_state if self._best_state is not None else torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model


class EarlyStoppingCallback:
    """Plugs an :class:`EarlyStopping` into ``ftcourse.train.train``: it watches ``metric``
    (``"accuracy"`` or ``"loss"`` of the validation set) at every evaluation, stops training when
    told to, and restores the best weights at the end (``restore=True``).

    Per run: ``on_train_begin`` resets the :class:`EarlyStopping`, so a reused callback never
    carries a best score (or weights) over from an earlier run.

    For selection built on top (e.g. the best of the checkpoints and an SWA average): pass
    ``restore=False``, then after training read :attr:`best_score` (the best checkpoint's
    validation metric; None if no finite evaluation) and call :meth:`restore_best` if it wins.

    ``order = 10``: ``ftcourse.train.train`` notifies callbacks in increasing ``order``, so this
    runs after SWA (order 0) at every event: the average has recorded the step, and at the end has
    its score, before this callback stops training or restores the best weights.
    """

    order = 10

    def __init__(self, early_stopping: EarlyStopping, metric: str = "accuracy", restore: bool = True):
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}")
        if not isinstance(restore, bool):
            raise TypeError(f"restore must be True or False, got {type(restore).__name__} {restore!r}")
        if metric not in MONITORED:
            raise ValueError(f"metric must be one of {', '.join(map(repr, MONITORED))}, got {metric!r}")
        if early_stopping.mode != MONITORED[metric]:
            # mode "max" on the loss would keep the worst checkpoint without any error
            raise ValueError(f"metric {metric!r} needs EarlyStopping(mode={MONITORED[metric]!r}), got mode={early_stopping.mode!r}")
        self.early_stopping, self.metric, self.restore = early_stopping, metric, restore

    @property
    def best_score(self) -> float | None:
        """The best validation ``metric`` of this run so far (None before any finite evaluation)."""
        return self.early_stopping.best_score

    def restore_best(self, model: nn.Module) -> nn.Module:
        """Load this run's best evaluated weights into ``model`` (see :meth:`EarlyStopping.restore_best`)."""
        return self.early_stopping.restore_best(model)

    def on_train_begin(self, state) -> None:
        self.early_stopping.reset()

    def on_evaluate(self, state, metrics: dict) -> None:
        if self.early_stopping.step(metrics[self.metric], state.model):
            state.should_stop = True

    def on_train_end(self, state) -> None:
        if self.restore and self.early_stopping.best_score is not None:
            self.early_stopping.restore_best(state.model)
