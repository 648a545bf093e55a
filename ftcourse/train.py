"""The training loop, readable top to bottom.

Copy with: accumulation.py, amp.py, memory.py.
Into one package folder: ``python -m ftcourse copy train --into mypkg/``.

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
        every checkpoint_every steps: save a checkpoint       # resume_from= goes on from it, bit for bit

Data parallel (``train(..., accelerator=Accelerator())`` in every process; see :func:`train`), the same
loop with four changes: n is the window's global item count ÷ the number of processes (an all-reduce),
because DDP averages the processes' gradients; all but the window's last micro-batch run under
``accelerator.no_sync`` (one gradient all-reduce a step); the loss read is the processes' mean; and
after each step's callbacks the processes agree on stopping. Without an accelerator the loop is bit
for bit the one above.

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

import contextlib
import dataclasses
import functools
import math
import numbers
import os
import random
import shutil
import types
import warnings
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
             return_predictions: bool = False, accelerator=None) -> dict:
    """Mean loss and accuracy over ``loader``, in eval mode (dropout off); restores train mode.

    ``precision``: evaluate under the same autocast as training: a ``Precision`` or a mode, as
    :func:`train` takes (default: fp32). ``loader``: a ``DataLoader`` or an iterable of batches
    (TypeError for one batch, a dict, passed alone).
    ``return_predictions``: also return ``predictions`` (the argmax class), ``labels`` and ``logits``
    (float32) as numpy arrays in **dataset row order**, also when the loader yields the rows in
    another fixed order (length-sorted evaluation batches), so two runs can be compared example
    by example. Sequence classification only (one label per row).

    ``accelerator``: ``loader`` was prepared by this ``accelerate.Accelerator`` (each process holds
    one shard of it): every process scores its shard and ``gather_for_metrics`` brings every row to
    every process, in the loader's order and without the duplicates that ``even_batches`` adds to
    fill the last round; every process returns the same metrics (and predictions). A collective:
    call it on every process. Without an accelerator nothing here changes.
    """
    if accelerator is not None:
        return _evaluate_sharded(model, loader, device, precision, return_predictions, accelerator)
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


def _per_row(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's summed loss, labelled items and correct items, as a (rows, 3) float64 tensor (sequence
    or token-level logits, as :func:`ftcourse.accumulation.summed_loss`)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    rows = labels.shape[0]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="none").reshape(rows, -1).sum(1)
    items = (labels != IGNORE_INDEX).reshape(rows, -1).sum(1)
    correct = (logits.argmax(-1) == labels).reshape(rows, -1).sum(1)
    return torch.stack([loss.double(), items.double(), correct.double()], dim=1)


def _unsharded(loader):
    """The batch sampler and sampler that a prepared loader shards (accelerate keeps the original inside its
    ``BatchSamplerShard``): the order in which ``gather_for_metrics`` returns the rows."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    inner = getattr(batch_sampler, "batch_sampler", batch_sampler)
    return types.SimpleNamespace(batch_sampler=inner, sampler=getattr(inner, "sampler", None))


@torch.no_grad()
def _evaluate_sharded(model, loader, device, precision, return_predictions, accelerator) -> dict:
    """:func:`evaluate` on a loader prepared by ``accelerator``: one ``gather_for_metrics`` per batch."""
    from accelerate.data_loader import DataLoaderShard

    if not isinstance(loader, DataLoaderShard):
        raise TypeError(f"evaluate(accelerator=...) needs a loader prepared by that accelerator "
                        f"(accelerator.prepare(loader)), got {type(loader).__name__}")
    model = accelerator.unwrap_model(model)  # no DDP wrapper: evaluation needs no gradient all-reduce
    device = device or next(model.parameters()).device
    if not isinstance(precision, Precision):
        precision = Precision(precision, device)
    was_training = model.training
    model.eval()
    kept = []  # per batch: every process's rows, duplicates dropped (a (rows, 3 [+ 1 + classes]) float64 tensor)
    for batch in loader:
        batch = move_batch(batch, device)
        labels = batch.pop("labels")
        with precision.autocast():
            logits = model(**batch).logits
        rows = _per_row(logits, labels)
        if return_predictions:  # sequence classification: one label and one row of logits per row
            rows = torch.cat([rows, labels[:, None].double(), logits.float().double()], dim=1)
        kept.append(accelerator.gather_for_metrics(rows))
    model.train(was_training)
    table = torch.cat(kept).cpu() if kept else torch.zeros(0, 3, dtype=torch.float64)
    n = int(table[:, 1].sum())
    if n == 0:
        raise ValueError("evaluate: the loader yielded no labelled item (an empty loader?): there is nothing to average")
    # The same rows in the same order on every process, summed the same way: the same metrics on every
    # process, so that decisions taken from them (early stopping, the best checkpoint) agree.
    metrics = {"loss": math.fsum(table[:, 0].tolist()) / n, "accuracy": int(table[:, 2].sum()) / n, "n": n}
    if return_predictions:
        logits_np = table[:, 4:].float().numpy()
        labels_np = table[:, 3].long().numpy()
        order = _row_order(_unsharded(loader), len(labels_np))
        if order is not None:
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
    # train(accelerator=...): the accelerator and, on several processes, this process's shard of the validation
    # loader (eval_loader stays the whole loader: evaluate(model, state.eval_loader) scores every row)
    accelerator: object | None = None
    sharded_eval_loader: object | None = None

    def evaluate(self, model: nn.Module | None = None, return_predictions: bool = False) -> dict:
        """Validation metrics of ``model`` (default: the model being trained). On several processes each
        scores its shard and gets the metrics of the whole set: call it on every process."""
        if self.sharded_eval_loader is not None:
            return evaluate(model or self.model, self.sharded_eval_loader, self.device, self.precision,
                            return_predictions, accelerator=self.accelerator)
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


# ---------------------------------------------------------------------------------------------
# What train() adds when asked: data parallelism (accelerate) and checkpoints to resume from
# ---------------------------------------------------------------------------------------------
_UNSUPPORTED_DISTRIBUTED = ("DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA")


class _WithoutPadding:
    """This process's shard of a prepared training loader, with the rows that ``even_batches`` repeats to
    fill the last round labelled ``IGNORE_INDEX``: they are computed but carry no loss and no gradient,
    so the last optimizer step's gradient is that of the real rows only, as on one process.

    accelerate's ``BatchSamplerShard`` (without ``split_batches``) gives process r the batches r, r + P,
    r + 2P, ... of the original batch sampler (batch size b): round j holds the rows ``[j·P·b, (j+1)·P·b)``
    of the epoch's order, process r the b of them from ``(j·P + r)·b`` on, and a round that runs past the
    end of the data is filled with rows from its start. So in process r's j-th batch the first
    ``n − (j·P + r)·b`` rows (clipped to [0, b]) are real. With ``split_batches`` a round is one original
    batch cut into P slices of b/P rows: the same rule with b/P. (tests/test_ddp.py checks the rule
    against accelerate's sampler.)
    """

    def __init__(self, loader, rows: int, rows_per_batch: int, world: int, rank: int):
        self.loader, self.rows, self.rows_per_batch, self.world, self.rank = loader, rows, rows_per_batch, world, rank

    def real_rows(self, j: int, batch_rows: int) -> int:
        """How many of the first rows of this process's ``j``-th batch (0-based, in an epoch) are real."""
        return max(0, min(batch_rows, self.rows - (j * self.world + self.rank) * self.rows_per_batch))

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for j, batch in enumerate(self.loader):
            labels = batch["labels"]
            real = self.real_rows(j, len(labels))
            if real < len(labels):
                labels = labels.clone()
                labels[real:] = IGNORE_INDEX
                batch = {**batch, "labels": labels}
            yield batch


def _prepare(accelerator, model, optimizer, train_loader, eval_loader):
    """``accelerator.prepare`` for :func:`train`: the model (DDP on several processes), the optimizer and
    both loaders (sharded, their batches left on the CPU: the loop counts items there and moves batches
    itself). Not the scheduler (see :func:`train`). Returns the wrapped model, the optimizer to step, the
    training batches (:class:`_WithoutPadding`) and this process's shard of the evaluation loader."""
    from accelerate.data_loader import DataLoaderShard
    from accelerate.optimizer import AcceleratedOptimizer

    kind = getattr(accelerator.distributed_type, "name", str(accelerator.distributed_type))
    if kind in _UNSUPPORTED_DISTRIBUTED:
        raise ValueError(f"train(accelerator=...) runs data parallel (DDP) or one process; got distributed_type {kind}")
    if accelerator.mixed_precision != "no":
        raise ValueError(f"train(accelerator=...) takes mixed precision from precision= (ftcourse.amp.Precision), "
                         f"not from the Accelerator: make it with mixed_precision='no' (got {accelerator.mixed_precision!r})")
    if not accelerator.even_batches:
        raise ValueError("train(accelerator=...) needs even_batches=True (accelerate's default): with False a process "
                         "whose shard ran out would wait forever in the other processes' all-reduce. The duplicate rows "
                         "even_batches adds are masked out of the loss (see train's docstring)")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) or isinstance(optimizer, AcceleratedOptimizer) or \
            any(isinstance(loader, DataLoaderShard) for loader in (train_loader, eval_loader)):
        raise TypeError("train(accelerator=...) prepares the model, the optimizer and the loaders itself: pass them "
                        "unprepared (accelerator.prepare twice would shard the data twice)")
    for name, loader in (("train_loader", train_loader), ("eval_loader", eval_loader)):
        if loader is not None and not isinstance(loader, torch.utils.data.DataLoader):
            raise TypeError(f"train(accelerator=...) needs {name} to be a torch DataLoader (accelerate shards its "
                            f"sampler between the processes), got {type(loader).__name__}")
    if train_loader.batch_size is None or isinstance(train_loader.dataset, torch.utils.data.IterableDataset):
        raise TypeError("train(accelerator=...) needs a train_loader with a batch_size over a map-style dataset "
                        "(the rows repeated to even the last round are found from them)")
    objects = [model, optimizer, train_loader] + ([eval_loader] if eval_loader is not None else [])
    # Only the model is placed: the optimizer has no state to move yet (placing it would also replace its
    # param_group dicts), and the loaders' batches stay on the CPU.
    prepared = accelerator.prepare(*objects, device_placement=[True] + [False] * (len(objects) - 1))
    world = accelerator.num_processes
    rows_per_batch = train_loader.batch_size // world if accelerator.split_batches else train_loader.batch_size
    batches = _WithoutPadding(prepared[2], len(train_loader.dataset), rows_per_batch, world, accelerator.process_index)
    return prepared[0], prepared[1], batches, (prepared[3] if eval_loader is not None else None)


_REGISTRIES = ("_models", "_optimizers", "_dataloaders", "_schedulers", "_custom_objects")


@contextlib.contextmanager
def _forget_at_exit(accelerator, sizes: dict):
    """When train() ends, drop what it prepared and registered from ``accelerator``'s lists: ``save_state``
    numbers models, optimizers and registered objects by their place in them, so a second ``train()`` with the
    same accelerator must find its own at the same places (a resumed run, in the same process)."""
    try:
        yield
    finally:
        for name, size in sizes.items():
            del getattr(accelerator, name)[size:]


def _registry_sizes(accelerator) -> dict:
    if accelerator is None:
        return {}
    return {name: len(getattr(accelerator, name)) for name in _REGISTRIES
            if isinstance(getattr(accelerator, name, None), list)}


def _generators(*loaders) -> list:
    """The ``torch.Generator`` s the loaders draw their order from (a loader's own, its sampler's, its batch
    sampler's sampler's), each once, in a fixed order."""
    found = []
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


def _random_states(generators) -> dict:
    """Every random state a run draws from: Python's, NumPy's, torch's (CPU, and CUDA once initialised), the loaders'."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": cuda,
            "generators": [g.get_state() for g in generators]}


def _set_random_states(states: dict, generators) -> None:
    if len(states["generators"]) != len(generators):
        raise ValueError(f"resume_from: the checkpoint holds {len(states['generators'])} loader generator(s), these "
                         f"loaders have {len(generators)}: resume with the loaders of the interrupted run")
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None:
        torch.cuda.set_rng_state_all(states["cuda"])
    for generator, state in zip(generators, states["generators"]):
        generator.set_state(state)


CHECKPOINT_PREFIX = "step_"


def latest_checkpoint(checkpoint_dir) -> Path | None:
    """The checkpoint of the most optimizer steps in ``checkpoint_dir`` (the ``step_<n>`` folders that
    ``train(checkpoint_dir=..., checkpoint_every=...)`` writes), or None if there is none."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(found)[1] if found else None


def _load_checkpoint(folder: Path, accelerator, model, optimizer, checkpoint, generators, device) -> dict:
    """Put a checkpoint's model, optimizer and random states (the loaders' generators too) in place; return
    the loop's part (:class:`_LoopState`)."""
    plain = (folder / "train_state.pt").is_file()  # written by train() without an accelerator
    if accelerator is None:
        if not plain:
            raise ValueError(f"resume_from: {folder} is not a checkpoint of train() without an accelerator "
                             f"(no train_state.pt)")
        model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
        saved = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=False)
        _set_random_states({**saved["random_states"], "generators": saved["generators"]}, generators)
        return saved
    if plain:
        raise ValueError(f"resume_from: {folder} was saved without an accelerator; resume it without one")
    accelerator.load_state(folder)  # the model, the optimizer, this process's random states, the loop's part
    saved = checkpoint.loaded
    _set_random_states({**_random_states([]), "generators": saved["generators"]}, generators)
    return saved


class _LoopState:
    """The loop's own part of a checkpoint (position, schedule, scaler, history, loader generators), beside the
    files of the model, the optimizer and the random states. With an accelerator it is registered for
    checkpointing, so that ``save_state``/``load_state`` carry it (the main process writes it)."""

    def __init__(self, capture):
        self.capture, self.loaded = capture, None

    def state_dict(self) -> dict:
        return self.capture()

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


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
    accelerator=None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike | None = None,
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

    **Data parallel** (``accelerator``: an ``accelerate.Accelerator``; none: nothing below applies and
    the loop is the one process loop above, bit for bit). Start one process per device
    (``torchrun --nproc-per-node N script.py``; on CPU with gloo; ``accelerate launch --cpu`` starts only
    one) and call ``train`` in every process with the same arguments. Pass the model, the optimizer and
    the loaders **unprepared**: ``train`` calls ``accelerator.prepare`` on them itself (and drops them from
    the accelerator's lists when it returns), so the loop knows the original loaders (their rows, order
    and generators) and a caller cannot prepare twice. ``train_loader`` is a ``DataLoader`` with the
    per-process batch (``ftcourse.course.fine_tune(recipe, accelerator=...)`` builds it: global batch ÷
    (processes × accumulation steps)); its sampler is sharded (process r gets batches r, r + P, ...), so P
    processes × batch b see, step for step, the rows that one process × batch P·b sees. The model
    (``state.model``, what callbacks see) stays the unwrapped one; only the forward pass goes through DDP.

    * Accumulation: the window's non-final micro-batches run under ``accelerator.no_sync`` (no all-reduce);
      DDP all-reduces in the backward of its last one. The loop does not call ``accelerator.backward``,
      which divides the loss by the Accelerator's ``gradient_accumulation_steps`` again: the window
      normalisation is the loop's own, whatever that setting (the Accelerator's ``accumulate`` is unused).
    * Normalisation across processes: DDP averages the processes' gradients (÷ P). Each process divides
      its summed loss by the window's **global** item count ÷ P (one all-reduce of a number per window, left
      on the device), so that the average is the gradient of the global window's mean loss, as on one
      process, also when the processes hold different numbers of items (padding, a short last batch).
    * ``even_batches`` (required, accelerate's default): the last round is filled up with rows from the
      start of the epoch so that every process gets a batch. Left in the loss, they would count twice in
      the last step's gradient; the loop labels them ``IGNORE_INDEX`` instead (no loss, no gradient, not
      counted), so the last step's gradient is that of the real rows, as on one process. (``even_batches=
      False`` would leave a process without a batch waiting forever in the others' all-reduce.)
    * Schedule: the scheduler is **not** prepared: a prepared one steps P times per call (accelerate assumes a
      schedule planned in per-process batches); this one is planned in optimizer steps of the global batch
      and steps once per step taken on every process, exactly as on one process.
    * Clipping: ``accelerator.clip_grad_norm_`` on the all-reduced gradients (the same norm everywhere).
    * Logged loss and items: the global window's (an all-reduce before the step's one read).
    * Evaluation: each process scores its shard of ``eval_loader`` and ``gather_for_metrics`` returns every
      row, in order and without even_batches' duplicates: every process gets the same metrics and
      predictions (row order), so early stopping and checkpoint choices agree; and after the callbacks of
      every step the processes agree on ``should_stop`` (an all-reduce), so that all stop at the same step.
    * Only the main process draws progress and warns; checkpoints are written through ``save_state``.
    * Mixed precision comes from ``precision`` (make the Accelerator with ``mixed_precision="no"``).

    **Checkpoints** (``checkpoint_dir`` and ``checkpoint_every=N``): after every N-th optimizer step (after
    that step's callbacks and evaluation) the run is saved to ``checkpoint_dir/step_<n>``: the model, the
    optimizer, the scheduler, the GradScaler, every random state (Python, NumPy, torch CPU and CUDA, the
    loaders' generators) and the data position (epoch, windows done, and the random states at the start of
    that epoch), with the history so far. ``resume_from=<that folder>`` (``latest_checkpoint(dir)``) goes on
    from there: the epoch's data order is drawn again from the saved states, the windows already trained
    on are passed over, and the random states of the checkpoint take over: on CPU the resumed run ends
    with the same weights, bit for bit, as one never interrupted (give the same model, loaders,
    optimizer, scheduler and callbacks, freshly built). With an accelerator, ``accelerator.save_state``
    and ``load_state`` write and read them (each process its random states). A callback's own state is
    saved only if it has ``state_dict``/``load_state_dict``; others are taken to hold none.
    Checkpoint time counts in ``History.callback_time_s``.
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
    if type(scheduler).__module__.startswith("accelerate"):
        raise TypeError("scheduler: pass it unprepared: a prepared scheduler steps once per process at every "
                        "call, train steps the schedule once per optimizer step itself")
    callbacks = _check_callbacks(callbacks)
    if (checkpoint_dir is None) != (checkpoint_every is None):
        raise ValueError("give checkpoint_dir and checkpoint_every together (or neither)")
    if checkpoint_every is not None:
        checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
    if resume_from is not None and not Path(resume_from).is_dir():
        raise ValueError(f"resume_from: no checkpoint folder at {resume_from}")
    if len(train_loader) == 0:
        raise ValueError("train_loader is empty: there is nothing to train on")
    if eval_loader is not None and len(eval_loader) == 0:
        raise ValueError("eval_loader is empty: pass None to train without evaluation")
    if accelerator is not None:
        if device is not None and torch.device(device) != accelerator.device:
            raise ValueError(f"device {device} is not the accelerator's ({accelerator.device}): leave device out")
        device = accelerator.device
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if not isinstance(precision, Precision):
        precision = Precision(precision, device)
    skipped_before = precision.skipped_steps  # a Precision reused across runs keeps counting
    model.to(device)
    # Predictions ride along for free when the eval loader has a fixed order (decided here, before any
    # pass: a shuffled loader is evaluated once, without them).
    keep_predictions = eval_loader is not None and has_fixed_order(eval_loader)
    generators = _generators(train_loader, eval_loader)  # checkpoints save them (prepare keeps the same objects)
    train_generators = _generators(train_loader)

    # Data parallel: prepare the model (DDP), the optimizer and the loaders here (see the docstring). The
    # loop steps `step_optimizer` and runs the forward pass through `ddp_model`; everything else (callbacks,
    # evaluation, checkpoints) sees the plain `model` and `optimizer`. One process: both are the same.
    ddp_model, step_optimizer, batches, sharded_eval_loader, world = model, optimizer, train_loader, None, 1
    registered = _registry_sizes(accelerator)
    if accelerator is not None:
        ddp_model, step_optimizer, batches, sharded_eval_loader = _prepare(accelerator, model, optimizer,
                                                                           train_loader, eval_loader)
        world = accelerator.num_processes
        accelerator.sync_gradients = True  # the prepared optimizer steps only when this is set (accumulate() unused)
    main_process = accelerator is None or accelerator.is_main_process

    steps_per_epoch = optimizer_steps_per_epoch(len(batches), accumulation_steps)
    total_steps = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    if evals_per_epoch is not None:
        eval_points = set(evaluation_steps(steps_per_epoch, epochs, evals_per_epoch)) | {total_steps}
    elif eval_every is not None:
        eval_points = set(range(eval_every, total_steps + 1, eval_every)) | {total_steps}
    else:
        eval_points = None  # the end of every epoch
    history = History()
    state = TrainState(model, optimizer, scheduler, device, precision, history, total_steps, eval_loader,
                       accelerator=accelerator, sharded_eval_loader=sharded_eval_loader if world > 1 else None)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clock = {"eval": 0.0, "callbacks": 0.0, "before": {"train": 0.0, "eval": 0.0, "callbacks": 0.0}}
    # Where a checkpoint is: (epoch, windows of it done) and the random states at the start of that epoch.
    position = {"epoch": 0, "windows_done": 0, "epoch_start": None}
    consecutive_skips = 0

    def notify(event: str, *args) -> None:
        t = time.perf_counter()
        _notify(callbacks, event, *args)
        clock["callbacks"] += time.perf_counter() - t

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
        if main_process:
            warnings.warn(f"train: diverged at optimizer step {step}: {why}; training stopped there "
                          "(the model keeps the weights before that step)", RuntimeWarning, stacklevel=3)

    def agree_to_stop() -> None:
        # Several processes: a stop any process's callbacks asked for stops them all, at the same step
        # (otherwise the others would wait for it in the next all-reduce). One number, read on the host.
        if world > 1:
            state.should_stop = bool(accelerator.reduce(torch.tensor(float(state.should_stop), device=device), "max"))

    def loop_state() -> dict:
        """What a checkpoint holds besides the model's, the optimizer's and the random states' files."""
        elapsed = time.perf_counter() - start
        return {"format": 1, "step": state.step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                "epoch": position["epoch"], "windows_done": position["windows_done"],
                "epoch_start": position["epoch_start"], "generators": [g.get_state() for g in generators],
                "consecutive_skips": consecutive_skips, "skipped_steps": precision.skipped_steps - skipped_before,
                "scheduler": state.scheduler.state_dict() if hasattr(state.scheduler, "state_dict") else None,
                "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
                "last_scale": precision.last_scale, "history": dataclasses.asdict(history),
                "callbacks": [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else None for cb in callbacks],
                "elapsed": {"train": clock["before"]["train"] + elapsed - clock["eval"] - clock["callbacks"],
                            "eval": clock["before"]["eval"] + clock["eval"],
                            "callbacks": clock["before"]["callbacks"] + clock["callbacks"]}}

    checkpoint = _LoopState(loop_state)
    if accelerator is not None and (checkpoint_every is not None or resume_from is not None):
        accelerator.register_for_checkpointing(checkpoint)

    def save_checkpoint() -> None:
        t = time.perf_counter()
        folder = Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}{state.step}"
        partial = folder.with_name(folder.name + ".partial")  # renamed when complete: a crash leaves no half checkpoint
        if accelerator is None:
            partial.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), partial / "model.pt")
            torch.save(optimizer.state_dict(), partial / "optimizer.pt")
            torch.save({**loop_state(), "random_states": _random_states([])}, partial / "train_state.pt")
        else:
            # Every process: the main one writes the model, the optimizer and the loop state; each its random states.
            accelerator.save_state(partial)
            accelerator.wait_for_everyone()
        if main_process:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        clock["callbacks"] += time.perf_counter() - t

    start = time.perf_counter()
    resume_rng = None  # the checkpoint's random states, which take over once its windows are passed over
    if resume_from is not None:
        saved = _load_checkpoint(Path(resume_from), accelerator, model, optimizer, checkpoint, generators, device)
        if (saved["total_steps"], saved["steps_per_epoch"]) != (total_steps, steps_per_epoch):
            raise ValueError(f"resume_from: the checkpoint's run had {saved['total_steps']} steps of "
                             f"{saved['steps_per_epoch']} per epoch, this one {total_steps} of {steps_per_epoch}: "
                             f"resume with the data, batch size and schedule of the interrupted run")
        resume_rng = _random_states(generators)
        state.step, consecutive_skips = saved["step"], saved["consecutive_skips"]
        position.update(epoch=saved["epoch"], windows_done=saved["windows_done"], epoch_start=saved["epoch_start"])
        skipped_before -= saved["skipped_steps"]
        precision.last_scale = saved["last_scale"]
        if saved["scaler"] is not None:
            precision.scaler.load_state_dict(saved["scaler"])
        if saved["scheduler"] is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
        for name, value in saved["history"].items():
            setattr(history, name, value)
        clock["before"] = saved["elapsed"]
    notify("on_train_begin", state)
    if resume_from is not None:
        for cb, cb_state in zip(callbacks, saved["callbacks"]):
            if cb_state is not None:
                cb.load_state_dict(cb_state)
    agree_to_stop()
    # progress: True draws a per-step bar (leave=False); a bar object (run_seeds' bar over runs, in a
    # notebook) gets the step counter as its postfix instead: one line, which Jupyter can redraw.
    parent = progress if hasattr(progress, "set_postfix_str") and main_process else None
    bar = tqdm(total=total_steps, initial=state.step, disable=parent is not None or not progress or not main_process,
               desc="train", leave=False, mininterval=1.0)
    last_postfix = 0.0
    ddp_model.train()
    # Gradients left over from before the call (a gradient inspected in a notebook cell, an earlier
    # run) would otherwise be added to the first window's gradient.
    optimizer.zero_grad(set_to_none=True)
    with PeakMemory(device) as memory, _forget_at_exit(accelerator, registered):
        for epoch in range(position["epoch"], epochs):
            if state.should_stop:  # also a stop asked for in on_train_begin: zero steps
                break
            state.epoch = epoch
            skip = position["windows_done"] if resume_rng is not None and epoch == position["epoch"] else 0
            if skip:  # resuming inside this epoch: draw its data order again from the states at its start
                torch.set_rng_state(position["epoch_start"]["torch"])
                for generator, saved_state in zip(train_generators, position["epoch_start"]["generators"]):
                    generator.set_state(saved_state)
            elif checkpoint_every is not None:
                position["epoch_start"] = {"torch": torch.get_rng_state(),
                                           "generators": [g.get_state() for g in train_generators]}
            for w, window in enumerate(accumulation_windows(batches, accumulation_steps)):
                if w < skip:  # trained on before the checkpoint
                    if w == skip - 1:  # the checkpoint's place in the data: its random states take over
                        _set_random_states(resume_rng, generators)
                        if state.step >= total_steps:
                            break
                    continue
                t0 = time.perf_counter()
                step = state.step + 1  # the optimizer step this window is for (a skipped one is retried)
                # Counted on the CPU batches, before they move to the device: no GPU sync.
                n_items = sum(count_items(batch["labels"]) for batch in window)
                if n_items == 0 and world == 1:  # (several processes: the global count, checked after the read)
                    raise _no_labelled_item(step, epoch, w * accumulation_steps, len(window))
                n_tokens = sum(count_tokens(batch) for batch in window)
                per_process_items = n_items
                if accelerator is not None:
                    # DDP averages the processes' gradients (÷ world): dividing by the window's global item
                    # count ÷ world makes that average the global window mean. An all-reduce, no host read.
                    n_items = accelerator.reduce(torch.tensor(n_items, dtype=torch.float32, device=device), "sum")
                    per_process_items = n_items / world
                losses = []  # each micro-batch's loss, left on the device until the step's one read
                for i, batch in enumerate(window):
                    # DDP all-reduces the gradients in the backward of the window's last micro-batch only.
                    last = i == len(window) - 1
                    with contextlib.nullcontext() if accelerator is None or last else accelerator.no_sync(ddp_model):
                        batch = move_batch(batch, device)
                        labels = batch.pop("labels")
                        with precision.autocast():
                            logits = ddp_model(**batch).logits
                        # Sum over the micro-batch, divide by the items of the whole window: exact.
                        loss = summed_loss(logits, labels) / per_process_items
                        precision.backward(loss)  # not accelerator.backward: it would divide by its accumulation steps
                    losses.append(loss.detach())
                precision.unscale_(step_optimizer)
                # Clipping also returns the norm; max_grad_norm=None only measures it.
                clip = torch.nn.utils.clip_grad_norm_ if accelerator is None else accelerator.clip_grad_norm_
                grad_norm = clip(params, max_grad_norm or float("inf"))
                reads = [*losses, grad_norm]
                if accelerator is not None:  # the global window's loss (the processes' mean) and item count
                    reads = [*accelerator.reduce(torch.stack(losses), "mean").unbind(), grad_norm, n_items]
                # The one host-device sync of the step (nanoGPT points out its own the same way): the
                # losses and the gradient norm come to the CPU in one transfer, before the optimizer
                # step, which must not be applied when they are not finite. (With a GradScaler,
                # Precision.step reads the scale too: see ftcourse.amp. Several processes add the
                # stop agreement below.)
                values = _to_host(reads)
                if accelerator is not None:
                    n_items = int(values.pop())
                    if n_items == 0:
                        raise _no_labelled_item(step, epoch, w * accumulation_steps, len(window))
                *loss_values, grad_norm = values
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
                stepped = precision.step(step_optimizer)
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
                if checkpoint_every is not None and state.step % checkpoint_every == 0:
                    position.update(epoch=epoch, windows_done=w + 1)
                    save_checkpoint()
                agree_to_stop()
                if state.should_stop or state.step >= total_steps:
                    break
            if eval_points is None and not state.should_stop:
                run_evaluation()
                agree_to_stop()
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
    history.eval_time_s = clock["before"]["eval"] + clock["eval"]
    history.callback_time_s = clock["before"]["callbacks"] + clock["callbacks"]
    history.train_time_s = clock["before"]["train"] + time.perf_counter() - start - clock["eval"] - clock["callbacks"]
    return history
