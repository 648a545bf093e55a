"""The training loop, readable top to bottom.

Copy with: accumulation.py, amp.py, memory.py.

One optimizer step is::

    for window in accumulation_windows(train_loader, k):     # k = 1: one batch a step
        n = items in the window                               # counted on the CPU batches
        for batch in window:
            with precision.autocast():
                loss = summed_loss(model(batch), labels) / n  # the window's mean loss
            precision.backward(loss)
        precision.unscale_(optimizer)                        # true gradient units before clipping
        grad_norm = clip_grad_norm_(params, max_grad_norm)    # one clip per optimizer step
        read loss and grad_norm in one transfer               # the step's one GPU sync; stop if not finite
        if precision.step(optimizer):                        # False: GradScaler skipped (inf/nan)
            step += 1; scheduler.step()                       # only steps taken count and move the lr
        optimizer.zero_grad(set_to_none=True)
        every eval_every steps: evaluate on validation

Design: the loop itself has no flag per technique. Each technique is one small piece that
composes with the others:

* what is optimised, and how: build the optimizer (any parameter groups: LLRD, frozen layers
  left out) and the scheduler yourself and pass them in;
* gradient accumulation: ``accumulation_steps`` (``ftcourse.accumulation``: exact window means);
* mixed precision: a ``Precision`` (``ftcourse.amp``: autocast, GradScaler, skipped steps);
* everything that reacts to training progress (SWA, early stopping and best-checkpoint selection,
  gradual unfreezing) is a ``Callback`` with ``on_train_begin``, ``on_step_end``,
  ``on_evaluate`` and ``on_train_end``; it sees a ``TrainState`` and may replace
  ``state.scheduler`` or set ``state.should_stop``. Callbacks run in increasing ``order``
  (SWA 0 before early stopping 10, whatever the list's order; see ``train``).

The result is a ``History``: per optimizer step (taken, or skipped by a GradScaler) the loss,
every group's lr, the gradient norm, time and tokens/s; per evaluation the validation loss and
accuracy; and peak memory (on CPU, the increase over the process's memory at the start of the run:
``ftcourse.memory``).
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import random
import warnings
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # plain text bar: no ipywidgets needed in Jupyter or nbval

from .accumulation import IGNORE_INDEX, accumulation_windows, count_items, optimizer_steps_per_epoch, summed_loss
from .amp import Precision
from .memory import PeakMemory


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device): the same seed gives bit-identical CPU runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


CUBLAS_WORKSPACE = ":4096:8"
DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")  # the two settings cuBLAS documents as deterministic


def use_deterministic_algorithms(enabled: bool = True) -> None:
    """Ask for run-to-run identical results on CUDA (CPU runs already are, for a fixed thread count).

    CUDA does not promise bit-identical reruns: cuBLAS picks reduction orders per workspace, and
    some kernels (atomics in backward passes) add in a random order. This turns on
    ``torch.use_deterministic_algorithms`` (with ``warn_only=True``: an op with no deterministic
    kernel warns instead of stopping the course), turns off cuDNN autotuning, and sets
    ``CUBLAS_WORKSPACE_CONFIG``, which cuBLAS reads only when CUDA initialises: call this before
    anything touches the GPU (``notebook_setup`` does). Deterministic kernels can be slower.

    Limits, so that no notebook claims more than this buys: with ``warn_only=True`` a kernel that
    has a deterministic variant only under the strict mode keeps its fast one; the memory-efficient
    attention backward (SDPA, which BERT and RoBERTa use in transformers 5) then adds with atomics
    once a sequence spans more than a few key blocks (longer than about 128-192 tokens), and reruns
    can differ in the last bits. ``tests/test_cuda.py`` measures it on a GPU; the notebooks compare
    CUDA reruns with a tolerance and CPU reruns exactly.
    """
    if enabled:
        if torch.cuda.is_available() and torch.cuda.is_initialized() and \
                os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in DETERMINISTIC_CUBLAS_WORKSPACES:
            warnings.warn("use_deterministic_algorithms: CUDA is already initialised, so CUBLAS_WORKSPACE_CONFIG "
                          "comes too late for cuBLAS; call it first (restart the kernel)", RuntimeWarning, stacklevel=2)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled


def pick_device(device: str | torch.device | None = None, verbose: bool = True) -> torch.device:
    """``device`` if given, else ``FTCOURSE_DEVICE`` (``cpu``, ``cuda`` or ``mps``) if set, else cuda, else cpu.

    MPS (Apple GPUs) is used only when asked for (``FTCOURSE_DEVICE=mps``): the course and its tests run on
    CPU and CUDA only (bit-identical CPU reruns, CUDA's deterministic kernels, ``PeakMemory``), so a Mac runs
    on its CPU, where the course's numbers were measured, unless told otherwise."""
    if device is None:
        wanted = os.environ.get("FTCOURSE_DEVICE", "").strip()
        if wanted:
            if wanted not in ("cpu", "cuda", "mps"):
                raise ValueError(f"FTCOURSE_DEVICE must be one of cpu, cuda, mps (or unset: cuda if available, "
                                 f"else cpu), got {wanted!r}")
            available = {"cpu": True, "cuda": torch.cuda.is_available(),
                         "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
            if not available[wanted]:
                raise ValueError(f"FTCOURSE_DEVICE={wanted}, but torch finds no {wanted} device here: "
                                 "unset FTCOURSE_DEVICE or set it to cpu")
            device = wanted
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if verbose:
        extra = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""
        mps_unused = (device.type == "cpu" and not os.environ.get("FTCOURSE_DEVICE")
                      and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
        print(f"device: {device}{extra}" + ("; an Apple GPU (mps) is there but untested with the course: "
                                            "FTCOURSE_DEVICE=mps uses it" if mps_unused else ""))
    return device


def move_batch(batch, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def count_tokens(batch) -> int:
    """Tokens a batch computes on: the attention mask's ones (padding excluded), else every input id.

    The loop calls it on the batch as the loader yields it, on the CPU, before moving it to the
    device: counted on a GPU, ``int(mask.sum())`` would wait for the GPU (a host sync) every micro-batch.
    """
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()


def _to_host(values: list[torch.Tensor]) -> list[float]:
    """0-dim tensors as Python floats, in one device-to-host transfer (one sync on a GPU).

    Each value is exactly its ``.item()``: they are stacked in their common dtype (float32 -> float64
    is exact), so reading them together changes no bit of what is logged.
    """
    dtype = functools.reduce(torch.promote_types, (v.dtype for v in values))
    return torch.stack([v.to(dtype) for v in values]).tolist()


_FIXED_ORDER_SAMPLERS = (torch.utils.data.SequentialSampler, list, tuple, range, np.ndarray)


def has_fixed_order(loader) -> bool:
    """True when every pass over ``loader`` yields its rows in the same, known order.

    So: a plain list of batches (no ``sampler``), a ``DataLoader`` with ``shuffle=False``
    (``SequentialSampler``) or with a sequence of row indices as its sampler
    (``make_loader(group_by_length=True, shuffle=False)``: longest first). Not: a random sampler
    (``shuffle=True``), any other sampler, or a custom ``batch_sampler``, whose order this cannot
    know. Decided from the loader alone, without a pass over it.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is not None and type(batch_sampler) is not torch.utils.data.BatchSampler:
        return False
    sampler = getattr(loader, "sampler", None)
    return sampler is None or isinstance(sampler, _FIXED_ORDER_SAMPLERS)


def _check_loader(name: str, loader, needs_len: bool = True) -> None:
    """TypeError unless ``loader`` is an iterable of batches (a ``DataLoader``, a list of dict batches);
    with ``needs_len``, one with a length (train plans its steps from it, and passes over it again)."""
    if isinstance(loader, Mapping):  # a dict, or transformers' BatchEncoding: iterating gives its keys
        raise TypeError(f"{name} must be a DataLoader or a list of batches, got a {type(loader).__name__}: "
                        f"one batch? pass [batch]")
    if isinstance(loader, (str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError(f"{name} must be a DataLoader or a list of batches (dicts of tensors), "
                        f"got {type(loader).__name__}")
    if needs_len and not hasattr(loader, "__len__"):
        raise TypeError(f"{name} has no length (a {type(loader).__name__}): pass a DataLoader or a list of "
                        f"batches; train plans its steps from len({name}), and a generator is used up by one pass")


def _row_order(loader, n: int) -> np.ndarray | None:
    """Dataset row of each item in the order ``loader`` yields them (None: the order is the rows').

    A ``DataLoader`` with ``shuffle=False`` (``SequentialSampler``) yields rows in order; one whose
    sampler is a fixed sequence of indices (``make_loader(group_by_length=True, shuffle=False)``:
    longest first) yields them in that order. A random sampler has no fixed order to undo
    (:func:`has_fixed_order`).
    """
    sampler = getattr(loader, "sampler", None)
    if not has_fixed_order(loader):
        batch_sampler = getattr(loader, "batch_sampler", None)
        custom = batch_sampler is not None and type(batch_sampler) is not torch.utils.data.BatchSampler
        what = f"batch sampler {type(batch_sampler).__name__}" if custom else type(sampler).__name__
        raise ValueError(f"return_predictions needs a loader in a fixed order (shuffle=False, or a list of row "
                         f"indices as its sampler); got a {what}, whose order may change from pass to pass")
    if sampler is None or isinstance(sampler, torch.utils.data.SequentialSampler):
        return None
    order = np.asarray(sampler, dtype=np.int64)
    if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"the loader's sampler is not a permutation of its {n} rows: predictions have no row order")
    return order


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | None = None, precision: Precision | None = None,
             return_predictions: bool = False) -> dict:
    """Mean loss and accuracy over ``loader``, in eval mode (dropout off); restores train mode.

    ``precision``: evaluate under the same autocast as training: a ``Precision`` or a mode, as
    :func:`train` takes (default: fp32). ``loader``: a ``DataLoader`` or an iterable of batches
    (TypeError for one batch, a dict, passed alone).
    ``return_predictions``: also return ``predictions`` (the argmax class), ``labels`` and ``logits``
    (float32) as numpy arrays in **dataset row order**, also when the loader yields the rows in
    another fixed order (length-sorted evaluation batches), so two runs can be compared example
    by example. Sequence classification only (one label per row).
    """
    _check_loader("loader", loader, needs_len=False)
    device = device or next(model.parameters()).device
    if not isinstance(precision, Precision):  # a mode ("bf16", ...) or None, as train() takes
        precision = Precision(precision, device)
    was_training = model.training
    model.eval()
    # Per batch, the sums stay on the device: one transfer at the end, not a GPU sync per batch.
    loss_sums, corrects, kept_logits, kept_labels, n = [], [], [], [], 0
    for batch in loader:
        n += count_items(batch["labels"])  # on the CPU batch, before it moves
        if return_predictions:
            kept_labels.append(batch["labels"])
        batch = move_batch(batch, device)
        labels = batch.pop("labels")
        with precision.autocast():
            logits = model(**batch).logits
        loss_sums.append(summed_loss(logits, labels))
        corrects.append((logits.argmax(-1) == labels).sum())
        if return_predictions:
            kept_logits.append(logits.float())
    model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no labelled item (an empty loader?): there is nothing to average")
    loss_sum = sum(_to_host(loss_sums))  # in batch order, as a sum of each batch's .item()
    correct = int(torch.stack(corrects).sum())
    metrics = {"loss": loss_sum / n, "accuracy": correct / n, "n": n}
    if return_predictions:
        logits_np = torch.cat(kept_logits).cpu().numpy()
        labels_np = torch.cat(kept_labels).cpu().numpy()
        order = _row_order(loader, len(labels_np))
        if order is not None:  # item k of the pass is row order[k]: put it back there
            unsorted_logits, unsorted_labels = np.empty_like(logits_np), np.empty_like(labels_np)
            unsorted_logits[order], unsorted_labels[order] = logits_np, labels_np
            logits_np, labels_np = unsorted_logits, unsorted_labels
        metrics.update(predictions=logits_np.argmax(-1), labels=labels_np, logits=logits_np)
    return metrics


CALLBACK_EVENTS = ("on_train_begin", "on_step_end", "on_evaluate", "on_train_end")


class Callback:
    """The pieces that react to training progress. Subclass and override what you need; the loop
    also accepts any object with some of these methods (so a helper need not import this module).

    ``order`` (an int, default 0): the loop notifies callbacks in increasing ``order``, and in list
    order among equal ones (fastai's convention). Objects without the attribute count as 0. See
    :func:`train` for the orders of the course's callbacks.
    """

    order: int = 0

    def on_train_begin(self, state: "TrainState") -> None: ...

    def on_step_end(self, state: "TrainState") -> None: ...

    def on_evaluate(self, state: "TrainState", metrics: dict) -> None: ...

    def on_train_end(self, state: "TrainState") -> None: ...


def _check_callbacks(callbacks) -> list:
    """``callbacks`` sorted by their ``order`` (stable), after checking that it is a list (or tuple) of
    callback objects: TypeError for a single callback, a class instead of an instance, an object
    with none of the events, an event attribute that is not callable, or an ``order`` that is not an int."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callback objects (callbacks=[cb], not callbacks=cb), "
                        f"got {type(callbacks).__name__} {callbacks!r}")
    for i, cb in enumerate(callbacks):
        if isinstance(cb, type):
            raise TypeError(f"callbacks[{i}] is the class {cb.__name__}: pass an instance, {cb.__name__}(...)")
        events = [event for event in CALLBACK_EVENTS if getattr(cb, event, None) is not None]
        if not events:
            raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) has none of the methods "
                            f"{', '.join(CALLBACK_EVENTS)}: it would never be called")
        for event in events:
            if not callable(getattr(cb, event)):
                raise TypeError(f"callbacks[{i}].{event} must be a method, got {type(getattr(cb, event)).__name__}")
        order = getattr(cb, "order", 0)
        if isinstance(order, bool) or not isinstance(order, numbers.Integral):
            raise TypeError(f"callbacks[{i}].order must be an int (callbacks run in increasing order), "
                            f"got {type(order).__name__} {order!r}")
    return sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))  # sorted() is stable


def _notify(callbacks, event: str, *args) -> None:
    for cb in callbacks:
        method = getattr(cb, event, None)
        if method is not None:
            method(*args)


@dataclass
class History:
    # One row per window: an optimizer step taken ("stepped": True), or one the GradScaler skipped
    # ("stepped": False, its "step" number retried by the next window).
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # one row per evaluation
    # CUDA: the allocator's peak during the run (the model included); CPU: how much the run added to
    # the process's resident set at its highest (ftcourse.memory.PeakMemory; compare configurations
    # in fresh processes, ftcourse.memory.measure_in_subprocess, since freed memory is reused)
    peak_memory_mb: float = float("nan")
    train_time_s: float = 0.0  # forward, backward and optimizer steps only
    eval_time_s: float = 0.0  # the loop's validation passes
    callback_time_s: float = 0.0  # callbacks' own work (snapshots, SWA's final evaluation, ...)
    skipped_steps: int = 0  # optimizer steps skipped by the GradScaler (inf/nan gradients)
    stopped_early: bool = False  # a callback stopped training before its planned last step
    diverged: bool = False  # training stopped at a non-finite loss or gradient (see train())
    diverged_step: int | None = None
    last_eval: dict | None = None  # step, predictions and labels (row order) of the last evaluation

    @property
    def samples_per_s(self) -> float:
        """Training examples per second of training time (evaluation and callbacks excluded)."""
        items = sum(row["items"] for row in self.steps)
        return items / self.train_time_s if self.train_time_s > 0 else float("nan")

    def steps_frame(self):
        import pandas as pd

        return pd.DataFrame(self.steps)

    def evals_frame(self):
        import pandas as pd

        return pd.DataFrame(self.evals)


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    device: torch.device
    precision: Precision
    history: History
    total_steps: int
    eval_loader: object | None = None
    step: int = 0  # optimizer steps taken so far (steps the GradScaler skipped are not counted)
    epoch: int = 0
    should_stop: bool = False

    def evaluate(self, model: nn.Module | None = None, return_predictions: bool = False) -> dict:
        """Validation metrics of ``model`` (default: the model being trained)."""
        return evaluate(model or self.model, self.eval_loader, self.device, self.precision, return_predictions)


MAX_CONSECUTIVE_SKIPS = 20


def _positive_int(name: str, value, allowed: str = "an int >= 1") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _no_labelled_item(step: int, epoch: int, first: int, n_batches: int) -> ValueError:
    where = f"micro-batch {first + 1}" if n_batches == 1 else f"micro-batches {first + 1}-{first + n_batches}"
    return ValueError(
        f"train: the accumulation window of optimizer step {step} (epoch {epoch}, {where} of the epoch) has no "
        f"labelled item: every label is {IGNORE_INDEX} (ignored), so its mean loss is 0/0 and there is nothing "
        f"to train on. Remove such examples from the data (a collator or a truncation that masks every label?)")


def evaluation_steps(steps_per_epoch: int, epochs: int, evals_per_epoch: int) -> list[int]:
    """The optimizer steps after which to evaluate: ``evals_per_epoch`` evenly spaced points in each
    epoch, the last at the epoch's end (step ``e·S + ceil(j·S/E)`` for j = 1..E); at most one per step."""
    points = set()
    for epoch in range(epochs):
        for j in range(1, evals_per_epoch + 1):
            points.add(epoch * steps_per_epoch + math.ceil(j * steps_per_epoch / evals_per_epoch))
    return sorted(points)


def train(
    model: nn.Module,
    train_loader,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler=None,
    epochs: int = 1,
    max_steps: int | None = None,
    eval_loader=None,
    eval_every: int | None = None,
    evals_per_epoch: int | None = None,
    max_grad_norm: float | None = 1.0,
    accumulation_steps: int = 1,
    precision: Precision | str | None = None,
    callbacks: list[Callback] | None = (),
    device: torch.device | str | None = None,
    progress=True,
) -> History:
    """Fine-tune ``model`` and return its :class:`History` (see the module docstring for the loop).

    Evaluation: ``evals_per_epoch=E`` evaluates at E evenly spaced points of every epoch (the last
    at its end); ``eval_every=n`` every n optimizer steps and after the last one; neither: at the
    end of every epoch. ``max_grad_norm=None`` measures the gradient norm without clipping.

    ``scheduler``: an object with a ``.step()`` method, called once per optimizer step taken (a
    ``LambdaLR``: ``ftcourse.schedules.get_schedule``, ``transformers.get_scheduler``), or None.

    ``callbacks``: a list of callback objects (:class:`Callback`), notified in increasing ``order``
    (stable: equal orders keep the list's order), so the list's order does not decide what a
    correct run needs. The course's orders: ``GradualUnfreezing`` and ``SWACallback`` 0 (the
    default), ``EarlyStoppingCallback`` (and ``ftcourse.recipe.BestOfCallback``) 10: SWA records a
    step and ends (its average and its validation score) before early stopping or best-checkpoint
    selection acts, which may restore other weights or compare them with SWA's.

    An accumulation window (a batch, with ``accumulation_steps=1``) in which every label is
    ``IGNORE_INDEX`` (-100) has no item to average over: ``train`` raises a ValueError naming the
    step, epoch and micro-batches, rather than skipping it, because such data is a bug upstream that
    a skip would hide (it used to surface as a NaN loss, reported as divergence).

    Skipped steps (fp16): a step the GradScaler skips (inf/nan gradients) leaves the weights as they
    were, so it is not taken: it gets a ``History.steps`` row (``stepped: False``) but does not advance
    ``state.step``, the scheduler, the evaluation points or ``on_step_end`` (SWA, unfreezing), and
    does not count toward the planned ``total_steps`` (``max_steps``, or every window of every
    epoch): the loop goes on until that many steps are taken, or until the data ends. At the end of
    the last epoch it stops even if skips left planned steps untaken (each skip leaves one): the
    schedule then ends short of its end (a linear decay above 0), and ``History.skipped_steps`` says
    how many. Give ``max_steps`` below the data's windows to leave room for retries.

    Divergence: training stops at the first step whose loss is not finite, or (without a
    GradScaler) whose gradient norm is not finite; that step is not applied, so the model keeps its
    last finite weights. With fp16 and a GradScaler, a skipped step (inf/nan gradients) is the
    scaler's normal calibration; only ``MAX_CONSECUTIVE_SKIPS`` (20) skips in a row, which take the
    loss scale from its 2^16 start below 2^-4, count as divergence. Either way ``History.diverged``
    is set and a ``RuntimeWarning`` names the step.
    """
    epochs = _positive_int("epochs", epochs)
    accumulation_steps = _positive_int("accumulation_steps", accumulation_steps)
    if max_steps is not None:
        max_steps = _positive_int("max_steps", max_steps, "an int >= 1 or None")
    if eval_every is not None:
        eval_every = _positive_int("eval_every", eval_every, "an int >= 1 or None")
    if evals_per_epoch is not None:
        evals_per_epoch = _positive_int("evals_per_epoch", evals_per_epoch, "an int >= 1 or None")
        if eval_every is not None:
            raise ValueError("give eval_every or evals_per_epoch, not both")
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real)
                                      or not math.isfinite(max_grad_norm) or max_grad_norm <= 0):
        raise ValueError(f"max_grad_norm must be a finite number > 0, or None to measure the norm without "
                         f"clipping; got {max_grad_norm!r}")
    if isinstance(optimizer, type):
        raise TypeError(f"optimizer is the class {optimizer.__name__}: pass an instance, e.g. "
                        f"{optimizer.__name__}(model.parameters(), lr=...)")
    if not (hasattr(optimizer, "param_groups") and callable(getattr(optimizer, "step", None))
            and callable(getattr(optimizer, "zero_grad", None))):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (e.g. torch.optim.AdamW(model.parameters(), "
                        f"lr=2e-5)), got {type(optimizer).__name__}")
    _check_loader("train_loader", train_loader)
    if eval_loader is not None:
        _check_loader("eval_loader", eval_loader)
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(
            f"scheduler must be an object with a .step() method, called once per optimizer step, or None; got "
            f"{type(scheduler).__name__} {scheduler!r}. A function of the step goes inside "
            f"torch.optim.lr_scheduler.LambdaLR(optimizer, fn); ftcourse.schedules.get_schedule(name, optimizer, "
            f"num_warmup_steps, num_training_steps) and transformers.get_scheduler(...) return one")
    callbacks = _check_callbacks(callbacks)
    if len(train_loader) == 0:
        raise ValueError("train_loader is empty: there is nothing to train on")
    if eval_loader is not None and len(eval_loader) == 0:
        raise ValueError("eval_loader is empty: pass None to train without evaluation")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if not isinstance(precision, Precision):
        precision = Precision(precision, device)
    skipped_before = precision.skipped_steps  # a Precision reused across runs keeps counting
    model.to(device)
    steps_per_epoch = optimizer_steps_per_epoch(len(train_loader), accumulation_steps)
    total_steps = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    if evals_per_epoch is not None:
        eval_points = set(evaluation_steps(steps_per_epoch, epochs, evals_per_epoch)) | {total_steps}
    elif eval_every is not None:
        eval_points = set(range(eval_every, total_steps + 1, eval_every)) | {total_steps}
    else:
        eval_points = None  # the end of every epoch
    history = History()
    state = TrainState(model, optimizer, scheduler, device, precision, history, total_steps, eval_loader)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clock = {"eval": 0.0, "callbacks": 0.0}

    def notify(event: str, *args) -> None:
        t = time.perf_counter()
        _notify(callbacks, event, *args)
        clock["callbacks"] += time.perf_counter() - t

    # Predictions ride along for free when the eval loader has a fixed order (decided here, before any
    # pass: a shuffled loader is evaluated once, without them).
    keep_predictions = eval_loader is not None and has_fixed_order(eval_loader)

    def run_evaluation():
        if eval_loader is None:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the last step's kernels belong to the training time
        t = time.perf_counter()
        metrics = state.evaluate(return_predictions=keep_predictions)
        if keep_predictions:
            history.last_eval = {"step": state.step, "predictions": metrics.pop("predictions"),
                                 "labels": metrics.pop("labels")}
            metrics.pop("logits")
        clock["eval"] += time.perf_counter() - t
        history.evals.append({"step": state.step, "epoch": state.epoch, **{f"val_{k}": v for k, v in metrics.items() if k != "n"}})
        notify("on_evaluate", state, metrics)

    def diverge(step: int, why: str) -> None:
        history.diverged, history.diverged_step = True, step
        state.should_stop = True
        warnings.warn(f"train: diverged at optimizer step {step}: {why}; training stopped there "
                      "(the model keeps the weights before that step)", RuntimeWarning, stacklevel=3)

    start = time.perf_counter()
    notify("on_train_begin", state)
    # progress: True draws a per-step bar (leave=False); a bar object (run_seeds' bar over runs, in a
    # notebook) gets the step counter as its postfix instead: one line, which Jupyter can redraw.
    parent = progress if hasattr(progress, "set_postfix_str") else None
    bar = tqdm(total=total_steps, disable=parent is not None or not progress, desc="train", leave=False, mininterval=1.0)
    last_postfix = 0.0
    model.train()
    # Gradients left over from before the call (a gradient inspected in a notebook cell, an earlier
    # run) would otherwise be added to the first window's gradient.
    optimizer.zero_grad(set_to_none=True)
    consecutive_skips = 0
    with PeakMemory(device) as memory:
        for epoch in range(epochs):
            if state.should_stop:  # also a stop asked for in on_train_begin: zero steps
                break
            state.epoch = epoch
            for w, window in enumerate(accumulation_windows(train_loader, accumulation_steps)):
                t0 = time.perf_counter()
                step = state.step + 1  # the optimizer step this window is for (a skipped one is retried)
                # Counted on the CPU batches, before they move to the device: no GPU sync.
                n_items = sum(count_items(batch["labels"]) for batch in window)
                if n_items == 0:
                    raise _no_labelled_item(step, epoch, w * accumulation_steps, len(window))
                n_tokens = sum(count_tokens(batch) for batch in window)
                losses = []  # each micro-batch's loss, left on the device until the step's one read
                for batch in window:
                    batch = move_batch(batch, device)
                    labels = batch.pop("labels")
                    with precision.autocast():
                        logits = model(**batch).logits
                    # Sum over the micro-batch, divide by the items of the whole window: exact.
                    loss = summed_loss(logits, labels) / n_items
                    precision.backward(loss)
                    losses.append(loss.detach())
                precision.unscale_(optimizer)
                # Clipping also returns the norm; max_grad_norm=None only measures it.
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
                # The one host-device sync of the step (nanoGPT points out its own the same way): the
                # losses and the gradient norm come to the CPU in one transfer, before the optimizer
                # step, which must not be applied when they are not finite. (With a GradScaler,
                # Precision.step reads the scale too: see ftcourse.amp.)
                *loss_values, grad_norm = _to_host([*losses, grad_norm])
                window_loss = sum(loss_values)  # in micro-batch order, as a sum of each loss.item()
                lrs = [group["lr"] for group in optimizer.param_groups]  # the lrs this step uses
                row = {"step": step, "epoch": epoch, "items": n_items, "loss": window_loss, "grad_norm": grad_norm,
                       **{f"lr_{i}": lr for i, lr in enumerate(lrs)}}
                if not math.isfinite(window_loss) or (precision.scaler is None and not math.isfinite(grad_norm)):
                    optimizer.zero_grad(set_to_none=True)
                    history.steps.append({**row, "time_s": time.perf_counter() - t0, "tokens_per_s": float("nan"),
                                          "stepped": False})
                    diverge(step, f"loss {window_loss}, gradient norm {grad_norm}")
                    break
                stepped = precision.step(optimizer)
                optimizer.zero_grad(set_to_none=True)
                # No synchronize here (it would be a second sync): on a GPU the optimizer step's kernels
                # may still run and then count in the next step's time; a run's total is unchanged.
                dt = time.perf_counter() - t0
                history.steps.append({**row, "time_s": dt, "tokens_per_s": n_tokens / dt, "stepped": stepped,
                                      **({"loss_scale": precision.last_scale} if precision.scaler is not None else {})})
                if not stepped:
                    # The GradScaler skipped it (inf/nan gradients): the weights did not change, so the
                    # step is not taken. It is recorded, but the schedule, state.step, the callbacks and
                    # the evaluation points wait for the next window, which tries this step again.
                    consecutive_skips += 1
                    if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                        diverge(step, f"{consecutive_skips} consecutive steps skipped by the GradScaler "
                                      f"(loss scale now {precision.last_scale})")
                        break
                    continue
                consecutive_skips = 0
                state.step = step
                if state.scheduler is not None:
                    state.scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{window_loss:.3f}", refresh=False)
                if parent is not None and (time.perf_counter() - last_postfix > 1.0 or state.step == total_steps):
                    parent.set_postfix_str(f"step {state.step}/{total_steps}, loss {window_loss:.3f}")
                    last_postfix = time.perf_counter()
                notify("on_step_end", state)
                if eval_points is not None and state.step in eval_points:
                    run_evaluation()
                if state.should_stop or state.step >= total_steps:
                    break
            if eval_points is None and not state.should_stop:
                run_evaluation()
            if state.should_stop or state.step >= total_steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the last step's kernels belong to the training time
    bar.close()
    history.peak_memory_mb = memory.peak_mb
    history.skipped_steps = precision.skipped_steps - skipped_before
    # A stop requested at the last evaluation saves nothing: that run trained to the end.
    history.stopped_early = state.should_stop and state.step < total_steps and not history.diverged
    notify("on_train_end", state)
    history.eval_time_s, history.callback_time_s = clock["eval"], clock["callbacks"]
    history.train_time_s = time.perf_counter() - start - clock["eval"] - clock["callbacks"]
    return history
