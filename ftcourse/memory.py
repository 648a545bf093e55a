"""Peak memory of a block of code, in MiB: CUDA's peak allocation, or what a block added to a CPU process.

Copy alone.
Into one package folder: ``python -m ftcourse copy memory --into mypkg/``.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (what PyTorch itself
allocated, the tensors held from before the block included; the caching allocator may reserve more).
CPU: the *increase* of the resident set size over its size when the block starts, at its highest,
sampled every ``interval_s`` on a background thread (Linux ``/proc/self/statm``). Not the RSS
itself: that includes everything the process imported and kept before (torch, the datasets, earlier
runs' models), so a notebook table of per-run RSS grows in run order whatever each run needs.
Elsewhere (macOS, Windows) the fallback is ``resource.getrusage(...).ru_maxrss``, the *lifetime*
peak of the process (in bytes on macOS, in KiB on Linux and the BSDs): the block's figure is then how
far it raised that lifetime peak, 0 when an earlier block peaked higher.

Comparing configurations: even the increase depends on what ran before in the same process, because
memory freed by an earlier run stays in the process (the allocator keeps it for reuse) and a later
run reuses it without growing the RSS. For a comparison that does not depend on run order, measure
each configuration in a fresh process: :func:`measure_in_subprocess`.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import threading

import torch


def ru_maxrss_mb(ru_maxrss: int, platform: str | None = None) -> float:
    """``getrusage().ru_maxrss`` in MiB: bytes on macOS (``darwin``), KiB on Linux and the BSDs."""
    platform = sys.platform if platform is None else platform
    return ru_maxrss / 2**20 if platform == "darwin" else ru_maxrss / 1024


def rss_mb() -> float:
    """The resident set size of this process now, in MiB (lifetime peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource  # not Linux: lifetime peak, the best that is portable

        return ru_maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class PeakMemory:
    """Peak memory of a ``with`` block, in MiB (``peak_mb``; see the module docstring).

    CUDA: the allocator's peak during the block (``max_memory_allocated`` from a reset). CPU: the
    highest resident set size during the block (sampled) *minus* the size at its start, i.e. what the
    block added. ``start_mb``: the baseline, the allocated (CUDA) or resident (CPU) MiB at the start.
    """

    def __init__(self, device: str | torch.device, interval_s: float = 0.005):
        self.device, self.interval_s = torch.device(device), interval_s
        self.peak_mb = float("nan")
        self.start_mb = float("nan")

    _rss_mb = staticmethod(rss_mb)  # kept for code written against the old name

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self._peak_rss = max(self._peak_rss, rss_mb())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self._peak_rss = rss_mb()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak_rss, rss_mb()) - self.start_mb
        return False


_FN = "fn must be a callable or a 'module:function' path (e.g. 'mypackage.runs:one_run')"


def _check_fn(fn) -> None:
    if callable(fn):
        return
    if not isinstance(fn, str):
        raise TypeError(f"{_FN}, got {type(fn).__name__} {fn!r}")
    module, _, name = fn.partition(":")
    if not (module and name):
        raise ValueError(f"{_FN}, got {fn!r}")


def _measured_call(fn, args, kwargs, device):
    if isinstance(fn, str):
        module, _, name = fn.partition(":")
        fn = getattr(importlib.import_module(module), name)
    with PeakMemory(device) as memory:
        result = fn(*args, **kwargs)
    return result, memory.peak_mb


def measure_in_subprocess(fn, *args, device: str | torch.device = "cpu", **kwargs):
    """``(fn(*args, **kwargs), peak_mb)``, run under :class:`PeakMemory` in a fresh Python process.

    Each call starts its own process (``spawn``: a new interpreter, which imports torch again, a few
    seconds), so the figure depends on nothing run before: compare configurations this way. ``fn`` is
    a module-level function, or a ``"package.module:function"`` path; a function defined in a notebook
    or inside another function cannot be sent to another process: put it in a ``.py`` file. The
    arguments and the result are pickled across; an exception in ``fn`` is raised here.
    """
    _check_fn(fn)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measured_call, (fn, args, kwargs, str(device)))
