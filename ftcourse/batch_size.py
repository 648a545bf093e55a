"""Find the largest micro-batch that fits, then reach the effective batch you want by accumulation.

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

The batch size changes the optimisation (gradient noise, steps per epoch), so keep the *effective*
batch fixed and make up the difference with gradient accumulation: :func:`accumulation_for`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import math
from collections.abc import Callable

import torch

from .memory import PeakMemory, rss_mb

SUPPORTED_DEVICE_TYPES = ("cuda", "cpu")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


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
) -> int:
    """The largest batch size, among ``start``, ``start // 2``, ... (never below ``min_batch``), for
    which one training step ``try_batch(batch_size)`` fits in memory.

    ``try_batch(b)`` must run what training will run with micro-batch ``b``: forward, backward and
    an optimizer step (the optimizer state is allocated on the first step), with the longest
    sequences training will see (padding makes memory depend on length).

    CUDA: a trial fits when it does not raise ``torch.cuda.OutOfMemoryError``; with
    ``memory_budget_mb`` it must also keep peak allocated memory (``PeakMemory``) within it.
    CPU: ``memory_budget_mb`` is required; a trial fits when the memory it adds to the process
    (peak resident set size during the trial minus the size before it) is within the budget.

    Returns the batch size; raises ``RuntimeError`` when even ``min_batch`` does not fit.
    """
    if not callable(try_batch):
        raise TypeError(f"try_batch must be a callable taking a batch size, got {type(try_batch).__name__}")
    _positive_int("start", start)
    _positive_int("min_batch", min_batch)
    if min_batch > start:
        raise ValueError(f"min_batch must be <= start, got min_batch={min_batch}, start={start}")
    device = torch.device(device)
    if device.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(f"device must be one of {', '.join(map(repr, SUPPORTED_DEVICE_TYPES))}, got {str(device)!r}")
    if memory_budget_mb is not None and (isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float))
                                         or not math.isfinite(memory_budget_mb) or memory_budget_mb <= 0):
        raise ValueError(f"memory_budget_mb must be a finite number > 0 (MiB) or None, got {memory_budget_mb!r}")
    if device.type == "cpu" and memory_budget_mb is None:
        raise ValueError("memory_budget_mb is required on device 'cpu': a CPU never raises out-of-memory "
                         "(the OS swaps or kills the process), so the finder needs a budget in MiB to test against")

    def say(message: str) -> None:
        if verbose:
            print(f"[find_max_batch_size] {message}")

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
        before = rss_mb()
        with PeakMemory(device) as memory:
            try_batch(batch)
        peak = memory.peak_mb - before
    if budget is None:
        return True, f"peak {peak:.0f} MiB"
    return peak <= budget, f"peak {peak:.0f} MiB {'<=' if peak <= budget else '>'} budget {budget:.0f} MiB"


def accumulation_for(target_effective_batch: int, micro_batch: int, verbose: bool = True) -> int:
    """Accumulation steps k = ceil(target / micro_batch): the smallest k with micro_batch * k >= target.

    When ``micro_batch`` does not divide the target, no k gives it exactly; the effective batch is
    then ``micro_batch * k`` (a little larger), and this is printed rather than hidden.
    """
    _positive_int("target_effective_batch", target_effective_batch)
    _positive_int("micro_batch", micro_batch)
    steps = math.ceil(target_effective_batch / micro_batch)
    if verbose and micro_batch * steps != target_effective_batch:
        print(f"[accumulation_for] {micro_batch} does not divide {target_effective_batch}: "
              f"{steps} steps give an effective batch of {micro_batch * steps}, not {target_effective_batch}")
    return steps
