"""PeakMemory on CPU reports what the block added to the process's resident set (not the whole RSS, which
grows with everything run before), and measure_in_subprocess measures a call in a fresh process."""
from __future__ import annotations

import time

import pytest
import torch

from ftcourse.memory import PeakMemory, measure_in_subprocess, rss_mb

MIB = 2**20


def allocate_and_hold(mib: int, hold_s: float = 0.05) -> int:
    """Allocate ``mib`` MiB of touched float32 (resident), hold it for a moment; returns the MiB."""
    block = torch.ones(mib * MIB // 4)
    time.sleep(hold_s)  # long enough for the sampler to see it
    del block
    return mib


def test_cpu_peak_is_the_increase_over_the_start_not_the_whole_rss():
    ballast = torch.ones(32 * MIB // 4)  # memory held from before the block: must not count
    with PeakMemory("cpu") as memory:
        allocate_and_hold(64)
    whole = rss_mb()
    assert 56 <= memory.peak_mb <= 64 + 24, memory.peak_mb
    assert memory.peak_mb < whole - 32  # was the whole RSS (torch, transformers, ballast...)
    assert memory.start_mb == pytest.approx(whole, abs=48)
    # a second block measures its own increase again, not the first's too
    with PeakMemory("cpu") as again:
        allocate_and_hold(16)
    assert 12 <= again.peak_mb <= 16 + 24, again.peak_mb
    del ballast


def test_nothing_allocated_is_about_zero():
    with PeakMemory("cpu") as memory:
        pass
    assert 0 <= memory.peak_mb < 8


def test_measure_in_subprocess_returns_the_result_and_that_process_peak():
    result, peak_mb = measure_in_subprocess(allocate_and_hold, 48)
    assert result == 48
    assert 40 <= peak_mb <= 48 + 24, peak_mb
    # a "module:function" path works too (functions defined in a notebook cannot be sent to a process)
    result, peak_mb = measure_in_subprocess("ftcourse.memory:ru_maxrss_mb", 2048, platform="linux")
    assert result == 2.0 and 0 <= peak_mb < 8


@pytest.mark.parametrize("bad", [42, "no_colon", "ftcourse.memory:"])
def test_measure_in_subprocess_names_what_it_needs(bad):
    with pytest.raises((TypeError, ValueError), match="fn must be a callable or a 'module:function' path"):
        measure_in_subprocess(bad)
