"""Peak memory of a block of code, in MiB: CUDA's peak allocation, or a CPU process's peak resident set.

Copy alone.

CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (what PyTorch itself
allocated; the caching allocator may reserve more). CPU: the resident set size, sampled every
``interval_s`` on a background thread (Linux ``/proc/self/statm``). Elsewhere (macOS, Windows) the
fallback is ``resource.getrusage(...).ru_maxrss``, the *lifetime* peak of the process, which is
in bytes on macOS and in KiB on Linux and the BSDs.
"""
from __future__ import annotations

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
    """Peak memory of a ``with`` block, in MiB (``peak_mb``). CUDA: max allocated. CPU: peak RSS (sampled)."""

    def __init__(self, device: str | torch.device, interval_s: float = 0.005):
        self.device, self.interval_s = torch.device(device), interval_s
        self.peak_mb = float("nan")

    _rss_mb = staticmethod(rss_mb)  # kept for code written against the old name

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_mb = rss_mb()
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
            self.peak_mb = max(self.peak_mb, rss_mb())
        return False
