"""Find the largest micro-batch that fits, then reach the effective batch you want by accumulation.

Copy with: memory.py.
Into one package folder: ``python -m ftcourse copy batch_size --into mypkg/``.

Why not a formula. The seed article sets a "dynamic batch size" from a formula instead of a
measurement. No such closed form is meaningful: the memory of a training step is the weights,
their gradients and the optimizer state (with AdamW in fp32, 4x the weights before any data), plus
activations that grow with batch x length for the MLPs and with batch x length^2 for attention
(unless a fused kernel avoids it), plus what autocast keeps in both precisions, plus allocator
caching and fragmentation. None of these is known in advance for a given model, kernel, precision
and padding, so a formula is a guess with no error bar, and it says nothing about the effective
batch, which is what the optimisation sees. The batch that fits is found by trying it, as
Hugging Face Accelerate's ``find_executable_batch_size`` and PyTorch Lightning's
``BatchSizeFinder`` do; here by halving from ``start``.

On CUDA a trial that raises ``torch.cuda.OutOfMemoryError`` does not fit; the cache is emptied
before the next, smaller, trial. On a CPU nothing raises (the OS swaps, or kills the process), so
the caller gives a memory budget and a trial fits when the memory it adds, measured with
:class:`ftcourse.memory.PeakMemory`, stays within it.

Each trial really trains: ``try_batch`` steps the model and the optimizer (and allocates the
optimizer state). Pass them as ``model=`` and ``optimizer=`` and the finder puts them back as they
were (weights, buffers, optimizer state and lrs, train/eval mode; copies kept on the CPU, so they
cost no GPU memory during the trials), as ``lr_range_test`` does; otherwise the caller must.

The batch size changes the optimisation (gradient noise, steps per epoch), so keep the *effective*
batch fixed and make up the difference with gradient accumulation: :func:`accumulation_for`.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
import gc
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from .memory import PeakMemory

SUPPORTED_DEVICE_TYPES = ("cuda", "cpu")


def _positive_int(name: str, value) -> int:
    """``value`` as an int (ints and numpy integers, not bool): TypeError for other types, ValueError if < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _to_cpu(obj):
    """A copy of ``obj`` with every tensor copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = OrderedDict((k, _to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, read by load_state_dict
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _snapshot(model: nn.Module | None, optimizer: torch.optim.Optimizer | None) -> dict:
    """What ``_restore`` needs to put ``model`` and ``optimizer`` back exactly (on the CPU)."""
    saved = {}
    if model is not None:
        saved["model"] = _to_cpu(model.state_dict())
        saved["modes"] = {module: module.training for module in model.modules()}
    if optimizer is not None:
        saved["optimizer"] = _to_cpu(optimizer.state_dict())
        saved["lrs"] = [group["lr"] for group in optimizer.param_groups]
    return saved


def _restore(model: nn.Module | None, optimizer: torch.optim.Optimizer | None, saved: dict) -> None:
    if model is not None:
        for p in model.parameters():
            p.grad = None
        model.load_state_dict(saved["model"])  # copies into the live tensors, on their own device
        for module, training in saved["modes"].items():
            module.training = training
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        # load_state_dict casts the state back to each parameter's device; an optimizer that had no
        # state before the trials gets none back (the trials' state is dropped)
        optimizer.load_state_dict(saved["optimizer"])
        for group, lr in zip(optimizer.param_groups, saved["lrs"]):
            group["lr"] = lr  # a tensor lr keeps its type and device


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")  # runs ldconfig: look it up once
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


def _release_cpu_memory() -> None:
    """Hand freed heap memory back to the OS, so one trial's leftovers do not count in the next
    (glibc keeps freed small blocks; ``malloc_trim`` returns them). A no-op without glibc."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _release_cuda_memory() -> None:
    gc.collect()  # drop the tensors referenced by the failed trial's frames first
    torch.cuda.empty_cache()


def find_max_batch_size(
    try_batch: Callable[[int], None],
    start: int,
    device: str | torch.device,
    memory_budget_mb: float | None = None,
    min_batch: int = 1,
    verbose: bool = True,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> int:
    """The largest batch size, among ``start``, ``start // 2``, ... (never below ``min_batch``), for
    which one training step ``try_batch(batch_size)`` fits in memory.

    ``try_batch(b)`` must run what training will run with micro-batch ``b``: forward, backward and
    an optimizer step (the optimizer state is allocated on the first step), with the longest
    sequences training will see (padding makes memory depend on length).

    ``model``, ``optimizer``: the model and optimizer ``try_batch`` steps. Their state (weights and
    buffers; optimizer state and every group's lr; each module's train/eval mode) is copied to the
    CPU before the first trial and put back, exactly, after the search, also when it raises; their
    gradients are cleared (None). Without them, ``try_batch`` leaves its trained weights and the
    optimizer state of the last trial behind, and restoring is the caller's job (a printed note
    says so when ``verbose``). A scheduler ``try_batch`` steps, the RNG and the data iterator are
    not restored: do not step a scheduler in ``try_batch``.

    CUDA: a trial fits when it does not raise ``torch.cuda.OutOfMemoryError``; with
    ``memory_budget_mb`` it must also keep peak allocated memory (``PeakMemory``) within it.
    CPU: ``memory_budget_mb`` is required; a trial fits when the memory it adds to the process
    (peak resident set size during the trial minus the size before it) is within the budget.

    Returns the batch size; raises ``RuntimeError`` when even ``min_batch`` does not fit.
    ``start`` and ``min_batch`` are ints (numpy integers too, not bool): ``TypeError`` otherwise,
    ``ValueError`` below 1.
    """
    if not callable(try_batch):
        raise TypeError(f"try_batch must be a callable taking a batch size, got {type(try_batch).__name__}")
    start = _positive_int("start", start)
    min_batch = _positive_int("min_batch", min_batch)
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if min_batch > start:
        raise ValueError(f"min_batch must be <= start, got min_batch={min_batch}, start={start}")
    device = torch.device(device)
    if device.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(f"device must be one of {', '.join(map(repr, SUPPORTED_DEVICE_TYPES))}, got {str(device)!r}")
    if memory_budget_mb is not None:
        if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, numbers.Real):
            raise TypeError(f"memory_budget_mb must be a finite number > 0 (MiB) or None, "
                            f"got {type(memory_budget_mb).__name__} {memory_budget_mb!r}")
        if not math.isfinite(memory_budget_mb) or memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be a finite number > 0 (MiB) or None, got {memory_budget_mb!r}")
        memory_budget_mb = float(memory_budget_mb)
    if device.type == "cpu" and memory_budget_mb is None:
        raise ValueError("memory_budget_mb is required on device 'cpu': a CPU never raises out-of-memory "
                         "(the OS swaps or kills the process), so the finder needs a budget in MiB to test against")

    def say(message: str) -> None:
        if verbose:
            print(f"[ftcourse.batch_size] {message}")

    missing = [name for name, given in (("model", model), ("optimizer", optimizer)) if given is None]
    if missing:
        say(f"note: no {' and no '.join(f'{name}=' for name in missing)} given: the trials train, and the "
            f"search will not restore what they change (pass {'it' if len(missing) == 1 else 'them'}, "
            "or restore by hand)")
    saved = _snapshot(model, optimizer)
    try:
        batch = start
        while True:
            fits, why = _trial(try_batch, batch, device, memory_budget_mb)
            say(f"batch {batch}: {'fits' if fits else 'does not fit'} ({why})")
            if fits:
                return batch
            if batch == min_batch:
                raise RuntimeError(f"even min_batch={min_batch} does not fit on {device} ({why}); "
                                   "use a shorter max_length, a smaller model, or mixed precision")
            batch = max(batch // 2, min_batch)
    finally:
        _restore(model, optimizer, saved)
        if saved and device.type == "cuda":
            _release_cuda_memory()  # the trials' optimizer state and gradients, now dropped


def _trial(try_batch, batch: int, device: torch.device, budget: float | None) -> tuple[bool, str]:
    if device.type == "cuda":
        _release_cuda_memory()
        out_of_memory = False
        try:
            with PeakMemory(device) as memory:
                try_batch(batch)
        except torch.cuda.OutOfMemoryError:
            # Leave the except block before freeing: the traceback holds the trial's tensors.
            out_of_memory = True
        if out_of_memory:
            _release_cuda_memory()
            return False, "CUDA out of memory"
        peak = memory.peak_mb
    else:
        _release_cpu_memory()
        with PeakMemory(device) as memory:  # on CPU: what the trial adds to the process's RSS
            try_batch(batch)
        peak = memory.peak_mb
    if budget is None:
        return True, f"peak {peak:.0f} MiB"
    return peak <= budget, f"peak {peak:.0f} MiB {'<=' if peak <= budget else '>'} budget {budget:.0f} MiB"


def accumulation_for(target_effective_batch: int, micro_batch: int, verbose: bool = True) -> int:
    """Accumulation steps k = ceil(target / micro_batch): the smallest k with micro_batch * k >= target.

    When ``micro_batch`` does not divide the target, no k gives it exactly; the effective batch is
    then ``micro_batch * k`` (a little larger), and this is printed rather than hidden.
    """
    target_effective_batch = _positive_int("target_effective_batch", target_effective_batch)
    micro_batch = _positive_int("micro_batch", micro_batch)
    steps = math.ceil(target_effective_batch / micro_batch)
    if verbose and micro_batch * steps != target_effective_batch:
        print(f"[ftcourse.batch_size] accumulation_for: {micro_batch} does not divide {target_effective_batch}: "
              f"{steps} steps give an effective batch of {micro_batch * steps}, not {target_effective_batch}")
    return steps
