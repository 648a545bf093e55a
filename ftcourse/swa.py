"""Stochastic weight averaging (SWA) and its EMA variant, as a callback of ``ftcourse.train.train``.

Copy alone.
Into one package folder: ``python -m ftcourse copy swa --into mypkg/``.

Reference: Izmailov, Podoprikhin, Garipov, Vetrov, Wilson, "Averaging Weights Leads to Wider
Optima and Better Generalization" (UAI 2018, arXiv:1803.05407). Train with the normal schedule for
a fraction of the run (default 75%), then switch to a constant (or briefly annealed) SWA learning
rate and keep an equal average of the weights seen from then on:

.. math::  \\bar\\theta_n = \\frac{1}{n} \\sum_{i=1}^{n} \\theta_{s_i}

where ``s_i`` are the steps at which a snapshot is taken (every ``update_every`` optimizer steps
from the start step on). The EMA variant replaces the equal average by
``ema_0 = theta_{s_1}``, ``ema_i = decay * ema_{i-1} + (1 - decay) * theta_{s_i}``.

Everything is ``torch.optim.swa_utils``: ``AveragedModel`` keeps the average (``get_ema_multi_avg_fn``
for the EMA), ``SWALR`` drives the learning rate. This module only decides *when* (which steps)
and wires them into the loop.

``update_bn``: SWA averages weights, not BatchNorm running statistics, so torch's ``update_bn``
recomputes those with one pass over the training data. Transformers normalise with LayerNorm,
which has no running statistics, so there is nothing to recompute: torch's ``update_bn`` finds no
BatchNorm module and returns before reading a single batch. Where a model *does* have BatchNorm,
torch's ``update_bn`` calls ``model(batch)`` with the batch as one positional argument (or its
first element for a list/tuple), which fails for the dict batches of Hugging Face models
(``model(**batch)``). :func:`update_bn` here does the same pass for dict batches, and says (returns
False) when there is no BatchNorm to update; like torch's, it leaves the model in the train/eval
mode it found it in.

A :class:`SWACallback` is per run: ``on_train_begin`` starts it afresh, so one object reused for a
second ``train()`` call averages that run only.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn
from torch.optim.swa_utils import update_bn as torch_update_bn

ANNEAL_STRATEGIES = ("cos", "linear")


def has_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` holds a BatchNorm layer (the same test torch's ``update_bn`` uses)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class _AnyBatch(nn.Module):
    """Calls ``model(**batch)`` for dict-like batches (Hugging Face) and ``model(batch)`` otherwise, so
    that torch's ``update_bn``, which calls ``model(batch)``, can drive either kind of model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model(**batch) if isinstance(batch, Mapping) else self.model(batch)


def _inputs(loader, device: torch.device):
    for batch in loader:
        # Mapping, not dict: DataCollatorWithPadding yields BatchEncoding, a UserDict
        if isinstance(batch, Mapping):
            yield {k: v.to(device) for k, v in batch.items() if k != "labels"}
        else:  # torch's convention: a tensor, or a list/tuple whose first element is the input
            yield (batch[0] if isinstance(batch, (list, tuple)) else batch).to(device)


def update_bn(loader, model: nn.Module, device: torch.device | str | None = None) -> bool:
    """Recompute BatchNorm running statistics of ``model`` with one pass over ``loader``.

    ``torch.optim.swa_utils.update_bn`` underneath, made to accept the dict batches of
    ``ftcourse.data.make_loader`` too (``"labels"`` is dropped, the rest passed as keywords).
    Returns True if statistics were recomputed, False if ``model`` has no BatchNorm layer: then
    there is nothing to do (LayerNorm, used by every Transformer here, normalises each example by
    its own statistics and keeps no running averages), and the loader is not read.

    The pass runs in train mode (BatchNorm updates its statistics only then); afterwards every
    module is back in the mode it had (a model in eval mode stays in eval mode, dropout off), as
    with torch's ``update_bn``, also when the pass raises.
    """
    if not has_batchnorm(model):
        return False
    device = torch.device(device) if device is not None else next(model.parameters()).device
    # torch's update_bn restores the mode of the module it is given: here a fresh wrapper, always in
    # train mode; so keep and restore each module's own mode (a model may mix them, e.g. frozen BN),
    # and BatchNorm's momentum, which torch sets to None for the pass and restores only on success
    modes = {module: module.training for module in model.modules()}
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    try:
        torch_update_bn(_inputs(loader, device), _AnyBatch(model))
    finally:
        for module, training in modes.items():
            module.training = training
        for module, momentum in momenta.items():
            module.momentum = momentum
    return True


def ema_decay_for_window(steps: int) -> float:
    """The EMA decay whose weights have the same centre of mass as an equal average of ``steps``
    snapshots: ``decay = 1 - 2 / (steps + 1)`` (the usual span/decay relation of EMAs)."""
    steps = _int_at_least("steps", steps, 1)
    return 1.0 - 2.0 / (steps + 1)


def _int_at_least(name: str, value, minimum: int) -> int:
    """``value`` as an int (ints, numpy integers; not bool): TypeError for other types, ValueError below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class SWACallback:
    """SWA (or EMA) of the weights over the last part of training, for ``ftcourse.train.train``.

    ``start``: fraction of the run in (0, 1]; averaging starts at the first optimizer step ``s``
    with ``s >= start * total_steps`` (so ``start=1`` averages only the final weights).
    ``swa_lr``: the SWA learning rate; None keeps each group's lr at the start (so LLRD ratios
    survive); a float sets every group to it (torch's behaviour); a sequence gives one per group.
    ``anneal_steps``: optimizer steps over which SWALR moves each group's lr from its value at the
    start to ``swa_lr`` (SWALR's ``anneal_epochs`` counts ``scheduler.step()`` calls, and the loop
    makes one per optimizer step, so here the unit is optimizer steps, not epochs).
    ``anneal_strategy``: "cos" or "linear" (SWALR's). ``update_every``: optimizer steps between
    snapshots. ``ema_decay``: None for SWA's equal average; a decay in (0, 1) for an EMA.
    ``replace_scheduler``: replace ``state.scheduler`` with SWALR at the start; default True for
    SWA and False for EMA (an EMA usually rides on the normal schedule). Only one callback of a run
    may replace the scheduler. ``use_buffers``: also average floating-point buffers (BatchNorm
    statistics; torch recommends it for EMAs); integer buffers (position ids, BatchNorm's batch
    counter) are always copied from the live model, since torch's EMA would round them.
    ``replace_model``: at the end, copy the averaged weights into the trained model, so what
    follows (``fine_tune``'s test evaluation) uses them. ``bn_loader``: a loader for
    :func:`update_bn`, needed only if the model has BatchNorm and ``use_buffers`` is False.
    ``evaluate``: evaluate the averaged model on the run's validation loader at the end (False
    skips it, e.g. for averagers whose validation score nobody reads).

    After training: ``averaged`` (the ``AveragedModel``; ``averaged.module`` is the model),
    ``start_step``, ``update_steps`` (the steps snapshotted), ``metrics`` (validation loss and
    accuracy of the averaged model, if the run had an eval loader), ``lrs`` (the SWA lrs). These
    are per run: :meth:`reset` (called by ``on_train_begin``) clears them, so reusing the object in
    another ``train()`` call gives what a fresh one would.

    ``order = 0``: ``ftcourse.train.train`` notifies callbacks in increasing ``order``; early
    stopping and best-checkpoint selection (order 10) run after this one, whatever the list's order.
    """

    order = 0

    def __init__(self, start: float = 0.75, swa_lr: float | Sequence[float] | None = None, anneal_steps: int = 0,
                 anneal_strategy: str = "cos", update_every: int = 1, ema_decay: float | None = None,
                 replace_scheduler: bool | None = None, use_buffers: bool = False, replace_model: bool = False,
                 bn_loader=None, evaluate: bool = True):
        if not _is_real(start):
            raise TypeError(f"start must be a fraction of training in (0, 1], got {type(start).__name__} {start!r}")
        if not 0 < start <= 1:
            raise ValueError(f"start must be a fraction of training in (0, 1], got {start!r}")
        if swa_lr is not None:
            allowed = "swa_lr must be None, a float >= 0 or a sequence of them (one per group)"
            if isinstance(swa_lr, str) or not (_is_real(swa_lr) or isinstance(swa_lr, Sequence)):
                raise TypeError(f"{allowed}, got {type(swa_lr).__name__} {swa_lr!r}")
            lrs = list(swa_lr) if isinstance(swa_lr, Sequence) else [swa_lr]
            if not all(_is_real(v) for v in lrs):
                raise TypeError(f"{allowed}, got {swa_lr!r}")
            if not lrs or not all(math.isfinite(v) and v >= 0 for v in lrs):
                raise ValueError(f"{allowed}, got {swa_lr!r}")
        anneal_steps = _int_at_least("anneal_steps", anneal_steps, 0)
        if anneal_strategy not in ANNEAL_STRATEGIES:
            raise ValueError(f"anneal_strategy must be one of {', '.join(map(repr, ANNEAL_STRATEGIES))}, "
                             f"got {anneal_strategy!r}")
        update_every = _int_at_least("update_every", update_every, 1)
        if ema_decay is not None:
            if not _is_real(ema_decay):
                raise TypeError(f"ema_decay must be None (SWA) or a float in (0, 1) (EMA), got "
                                f"{type(ema_decay).__name__} {ema_decay!r}")
            if not 0 < ema_decay < 1:
                raise ValueError(f"ema_decay must be None (SWA) or a float in (0, 1) (EMA), got {ema_decay!r}")
            ema_decay = float(ema_decay)
        if replace_scheduler not in (None, True, False):
            raise ValueError(f"replace_scheduler must be None, True or False, got {replace_scheduler!r}")
        self.start, self.swa_lr, self.anneal_steps = float(start), swa_lr, anneal_steps
        self.anneal_strategy, self.update_every, self.ema_decay = anneal_strategy, update_every, ema_decay
        self.replace_scheduler = (ema_decay is None) if replace_scheduler is None else replace_scheduler
        self.use_buffers, self.replace_model, self.bn_loader = use_buffers, replace_model, bn_loader
        self.evaluate = evaluate
        self.reset()

    def reset(self) -> None:
        """Forget the last run: no averaged model, no snapshot steps, metrics or SWA lrs."""
        self.averaged: AveragedModel | None = None
        self.start_step: int | None = None
        self.update_steps: list[int] = []
        self.metrics: dict | None = None
        self.lrs: list[float] | None = None

    def start_step_for(self, total_steps: int) -> int:
        # the tolerance keeps 0.7 * 10 = 7.000000000000001 at step 7, not 8
        return max(1, math.ceil(self.start * total_steps - 1e-9))

    def on_train_begin(self, state) -> None:
        # Checks that need the model or the optimizer fail here, not after the whole run.
        n_groups = len(state.optimizer.param_groups)
        if isinstance(self.swa_lr, Sequence) and len(self.swa_lr) != n_groups:
            raise ValueError(f"swa_lr has {len(self.swa_lr)} values but the optimizer has {n_groups} parameter groups")
        if has_batchnorm(state.model) and not self.use_buffers and self.bn_loader is None:
            raise ValueError("SWACallback: the model has BatchNorm, so the averaged model needs fresh running "
                             "statistics: pass bn_loader (the training loader) or use_buffers=True")
        self.reset()
        self.start_step = self.start_step_for(state.total_steps)

    def _begin_averaging(self, state) -> None:
        multi_avg_fn = None if self.ema_decay is None else get_ema_multi_avg_fn(self.ema_decay)
        self.averaged = AveragedModel(state.model, multi_avg_fn=multi_avg_fn, use_buffers=self.use_buffers)
        if not self.replace_scheduler:
            return
        if isinstance(state.scheduler, SWALR):
            raise RuntimeError("SWACallback: another callback already replaced the scheduler with SWALR; "
                               "give the other averagers replace_scheduler=False")
        groups = state.optimizer.param_groups
        if self.swa_lr is None:
            lrs = [float(g["lr"]) for g in groups]
        else:
            lrs = list(self.swa_lr) if isinstance(self.swa_lr, Sequence) else [self.swa_lr] * len(groups)
        self.lrs = lrs
        state.scheduler = SWALR(state.optimizer, swa_lr=lrs, anneal_epochs=self.anneal_steps,
                                anneal_strategy=self.anneal_strategy)

    def on_step_end(self, state) -> None:
        if state.step < self.start_step or (state.step - self.start_step) % self.update_every:
            return
        if self.averaged is None:
            self._begin_averaging(state)
        self.averaged.update_parameters(state.model)
        if self.use_buffers:
            self._copy_integer_buffers(state.model)
        self.update_steps.append(state.step)

    @torch.no_grad()
    def _copy_integer_buffers(self, model: nn.Module) -> None:
        for averaged, live in zip(self.averaged.module.buffers(), model.buffers()):
            if not (averaged.is_floating_point() or averaged.is_complex()):
                averaged.copy_(live)

    def on_train_end(self, state) -> None:
        if self.averaged is None:
            warnings.warn(f"SWACallback: training ended at step {state.step}, before averaging started at step "
                          f"{self.start_step}: there is no averaged model", RuntimeWarning, stacklevel=2)
            return
        if has_batchnorm(state.model) and not self.use_buffers:
            update_bn(self.bn_loader, self.averaged.module, state.device)
        if self.evaluate and state.eval_loader is not None:
            metrics = state.evaluate(self.averaged.module)
            self.metrics = {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}
        if self.replace_model:
            state.model.load_state_dict(self.averaged.module.state_dict())
