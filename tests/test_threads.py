"""torch's thread count: one thread a free core, chosen in one place (``choose_threads``), under a simulated load."""
from __future__ import annotations

import os
import time

import pytest
import torch

from ftcourse.course import notebook as ftnb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_SAMPLED_OTHERS = ftnb.sampled_others


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` logical CPUs whose 1-minute load average is ``load`` (no /proc/stat sample), with no
    FTCOURSE_THREADS (CI sets it) and this process idle since the module was imported."""
    monkeypatch.delenv(ftnb.THREADS_ENV, raising=False)
    monkeypatch.setattr(ftnb, "sampled_others", lambda seconds=ftnb.SAMPLE_S: None)
    monkeypatch.setattr(ftnb, "_torch_default_threads", [64])
    # the suite has kept this process busy since ftcourse was imported: restart its own-share clock, or the load
    # it subtracts as "this process" depends on which tests ran before (CI failed on exactly that)
    monkeypatch.setattr(ftnb, "_imported_at", time.perf_counter())
    monkeypatch.setattr(ftnb, "_process_time_at_import", time.process_time())

    def simulate(cores: int, load: float):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))

    return simulate


@pytest.mark.parametrize("cores, load, threads, busy", [
    (2, 0.1, 2, False),   # quiet: both cores
    (2, 0.5, 2, False),   # half a core busy still counts as free
    (2, 1.0, 1, True),    # one busy process: one thread, never two spinning against it
    (2, 5.0, 1, True),    # overloaded: at least one thread
    (8, 2.2, 6, True),
    (1, 0.0, 1, False),
])
def test_one_thread_a_free_core(machine, cores, load, threads, busy):
    machine(cores, load)
    choice = ftnb.choose_threads()
    assert (choice.threads, choice.cores, choice.busy) == (threads, cores, busy)
    assert choice.others == pytest.approx(load, abs=0.05)  # less this process's own (small) share
    assert (choice.warning() is not None) == busy
    assert choice.line().startswith(f"threads: {threads} torch thread")


def test_the_busy_warning_says_why_and_how_to_override(machine):
    machine(2, 1.0)
    warning = ftnb.choose_threads().warning()
    assert warning.startswith("warning: this machine is busy: other processes keep 1.0 of its 2 cores busy")
    assert "torch runs 1 thread, not 2" in warning and "FTCOURSE_THREADS" in warning


def test_this_process_is_not_counted_as_the_load(machine, monkeypatch):
    # the load average counts this process too: after ten minutes of it using one core, a load of 1.0 is itself
    machine(2, 1.0)

    monkeypatch.setattr(ftnb, "_imported_at", time.perf_counter() - 600)
    monkeypatch.setattr(ftnb, "_process_time_at_import", time.process_time() - 600)
    choice = ftnb.choose_threads()
    assert choice.others < 0.1 and choice.threads == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # ... and one other process besides
    assert ftnb.choose_threads().threads == 1


def test_a_notebook_that_just_ended_does_not_count_as_busy(machine, monkeypatch):
    # Linux: the 1-minute load average still shows the last notebook's two threads; the sample of the CPUs now wins
    machine(2, 2.0)
    ticks = iter([(1000, 2000), (1010, 2200)])  # 10 of 200 ticks busy on 2 CPUs: 0.1 core
    monkeypatch.setattr(ftnb, "_cpu_ticks", lambda cpus=None: next(ticks))
    monkeypatch.setattr(ftnb, "sampled_others", lambda seconds=ftnb.SAMPLE_S: REAL_SAMPLED_OTHERS(0.0))
    choice = ftnb.choose_threads()
    assert choice.threads == 2 and choice.others == pytest.approx(0.1, abs=0.05)
    assert choice.how == "measured over the last 0.5 s"


def test_explicit_load_and_cores(monkeypatch):
    monkeypatch.delenv(ftnb.THREADS_ENV, raising=False)
    assert ftnb.choose_threads(load=0.0, cores=4).threads == 4
    assert ftnb.choose_threads(load=1.6, cores=4).threads == 2
    with pytest.raises(ValueError, match="cores must be an int >= 1"):
        ftnb.choose_threads(load=0.0, cores=0)
    with pytest.raises(ValueError, match="load must be a number of busy cores >= 0"):
        ftnb.choose_threads(load=float("nan"), cores=2)


def test_ftcourse_threads_overrides_the_load(machine, monkeypatch):
    machine(2, 1.0)
    monkeypatch.setenv(ftnb.THREADS_ENV, "2")
    choice = ftnb.choose_threads()
    assert choice.threads == 2 and choice.others is None and not choice.busy and choice.warning() is None
    assert choice.line() == "threads: 2 torch threads (FTCOURSE_THREADS=2)"


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_setting_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ftnb.THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"FTCOURSE_THREADS must be an int >= 1 .*got {value!r}"):
        ftnb.choose_threads()


def test_notebook_setup_sets_and_prints_the_count(monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    monkeypatch.setenv(ftnb.THREADS_ENV, "1")
    try:
        ftnb.notebook_setup()
        assert torch.get_num_threads() == 1
        assert "threads: 1 torch thread (FTCOURSE_THREADS=1)" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_ci_runs_at_two_threads():
    with open(os.path.join(ROOT, "scripts", "test.sh")) as f:
        assert 'export FTCOURSE_THREADS="${FTCOURSE_THREADS:-2}"' in f.read()


def test_torchs_own_count_caps_the_cores(machine, monkeypatch):
    # torch's default (the physical cores, or OMP_NUM_THREADS) is an upper bound: more threads never helped
    machine(2, 0.0)
    monkeypatch.setattr(ftnb, "_torch_default_threads", [1])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = ftnb.choose_threads()
    assert (choice.threads, choice.cores, choice.busy) == (1, 1, False)
    assert "1 core here with OMP_NUM_THREADS=1" in choice.line()
