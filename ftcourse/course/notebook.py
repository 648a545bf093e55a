"""The first and last cells of every notebook: what runs where, and how long it took.

Course harness (not a technique module): ``notebook_setup()`` in the first cell chooses torch's thread
count from the cores actually free (``choose_threads``: the one place that decides it), prints it, the
device, the profile and the versions, and starts the clock; ``notebook_footer()`` in the last cell shows
the elapsed wall time, the profile, the machine, the versions and the runs made, so every executed
notebook says how long it took and where.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass

# tqdm.auto (imported by datasets and transformers) warns "IProgress not found" when ipywidgets is
# missing, with the path of the user's environment in the message. Its fallback, the plain text bar,
# is what the course uses anyway, so the warning says nothing a learner needs.
warnings.filterwarnings("ignore", message="IProgress not found")

_started: dict = {}
_imported_at, _process_time_at_import = time.perf_counter(), time.process_time()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description() -> str:
    """One line: the GPU if there is one, else the CPU model, torch's CPU capability (the instruction set its
    kernels use: results are bit-identical between runs at one capability and one thread count) and threads."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}); CPU {cpu_model()}"
    return (f"CPU {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads "
            f"({os.cpu_count()} logical CPUs), no GPU")


def versions() -> str:
    import datasets
    import torch
    import transformers

    from .. import __version__

    return (f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"datasets {datasets.__version__}, ftcourse {__version__}")


THREADS_ENV = "FTCOURSE_THREADS"
SAMPLE_S = 0.5
_torch_default_threads: list[int] = []  # torch's own count (physical cores, or OMP_NUM_THREADS), read once


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads to use here, and why: ``threads``; ``cores`` the CPUs this process may use;
    ``others`` the cores other processes keep busy (None when ``FTCOURSE_THREADS`` decided); ``how`` where
    ``others`` came from."""
    threads: int
    cores: int
    others: float | None
    how: str

    @property
    def busy(self) -> bool:
        """Other processes keep at least one of the cores busy, so fewer threads than cores were chosen."""
        return self.others is not None and self.threads < self.cores

    def line(self) -> str:
        if self.others is None:
            return f"threads: {self.threads} torch thread{'s' if self.threads > 1 else ''} ({THREADS_ENV}={self.threads})"
        omp = os.environ.get("OMP_NUM_THREADS")  # caps torch's own count, so the cores counted here too
        return (f"threads: {self.threads} torch thread{'s' if self.threads > 1 else ''} ({self.cores} core"
                f"{'s' if self.cores > 1 else ''} here{f' with OMP_NUM_THREADS={omp}' if omp else ''}, {self.others:.1f} "
                f"kept busy by other processes, {self.how}; {THREADS_ENV}=N overrides)")

    def warning(self) -> str | None:
        if not self.busy:
            return None
        return (f"warning: this machine is busy: other processes keep {self.others:.1f} of its {self.cores} cores busy, "
                f"so torch runs {self.threads} thread{'s' if self.threads > 1 else ''}, not {self.cores} (threads beyond "
                "the free cores wait on each other: beside one busy process on 2 cores, 2 threads trained 1.8x slower "
                "than 1, benchmarks/threads.json). Timings now are slower than the course's; stop the other work for "
                f"its speed, or set {THREADS_ENV}")


def available_cores() -> int:
    """The logical CPUs this process may run on (its affinity where the OS has one), at most torch's own default
    thread count (the physical cores, or ``OMP_NUM_THREADS``): more threads than that never helped."""
    cores = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    if not _torch_default_threads:
        import torch

        _torch_default_threads.append(torch.get_num_threads())
    return max(1, min(cores, _torch_default_threads[0]))


def _cpu_ticks(cpus=None) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` (all when None) since boot, from ``/proc/stat``; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3:4].isdigit()]
    except OSError:
        return None
    busy = total = 0
    for fields in lines:
        if cpus is not None and int(fields[0][3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return (busy, total) if total else None


def sampled_others(seconds: float = SAMPLE_S) -> float | None:
    """Cores that other processes keep busy right now: this process's CPUs over ``seconds`` (``/proc/stat``),
    minus this process's own CPU time in that window. None where ``/proc/stat`` is missing (macOS, Windows)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    first, own0 = _cpu_ticks(cpus), time.process_time()
    if first is None:
        return None
    time.sleep(seconds)
    second, own1 = _cpu_ticks(cpus), time.process_time()
    if second is None or second[1] <= first[1]:
        return None
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    window_s = (second[1] - first[1]) / n / os.sysconf("SC_CLK_TCK")  # wall seconds the ticks cover
    busy_cores = (second[0] - first[0]) / (second[1] - first[1]) * n
    return max(0.0, busy_cores - (own1 - own0) / max(window_s, 1e-9))


def load_others() -> float:
    """Cores other processes kept busy over the last minute: ``os.getloadavg()``'s 1-minute figure minus this
    process's part of it (its CPU seconds per second since this module was imported, weighted as the load average
    weighs the past: a process that has run for t seconds counts 1 - exp(-t/60) of its rate)."""
    load = os.getloadavg()[0]
    alive = max(time.perf_counter() - _imported_at, 1e-3)
    own = time.process_time() - _process_time_at_import
    return max(0.0, load - own / alive * (1 - math.exp(-alive / 60)))


def choose_threads(load: float | None = None, cores: int | None = None) -> ThreadChoice:
    """torch's thread count for this machine now: one a free core (the one place that decides it; bank builds and
    canary reruns keep their own rule, ``ftcourse.course.bank``).

    ``FTCOURSE_THREADS`` (an int >= 1) overrides everything. Else ``load`` is the number of cores other processes
    keep busy (measured when None: on Linux the last half second of this process's CPUs, less this process itself,
    because the 1-minute load average still counts a notebook that has just ended; elsewhere the 1-minute load
    average less this process), ``cores`` the CPUs to use (default :func:`available_cores`), and the count is
    ``cores - load`` rounded half down, between 1 and ``cores``: a core busy for more than half the time is not free."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} must be an int >= 1 (torch threads; unset it to use one thread a free "
                             f"core), got {value!r}")
        return ThreadChoice(int(value), cores or available_cores(), None, THREADS_ENV)
    cores = available_cores() if cores is None else cores
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    how = "given"
    if load is None:
        load, how = sampled_others(), "measured over the last 0.5 s"
        if load is None:
            load, how = load_others(), "1-minute load average"
    if not load >= 0:
        raise ValueError(f"load must be a number of busy cores >= 0, got {load!r}")
    return ThreadChoice(max(1, min(cores, math.floor(cores - load + 0.5))), cores, float(load), how)


def set_threads(choice: ThreadChoice | None = None, out=None) -> ThreadChoice:
    """Apply :func:`choose_threads` (or ``choice``) to torch, print the count and, when the machine is busy, a
    warning on stderr; return the choice."""
    import torch

    choice = choose_threads() if choice is None else choice
    torch.set_num_threads(choice.threads)
    print(choice.line(), file=out or sys.stdout)
    if choice.warning():
        print(choice.warning(), file=sys.stderr)
    return choice


RESTART_PACKAGES = ("torch", "transformers", "datasets", "numpy")


def restart_if_upgraded(packages=RESTART_PACKAGES) -> bool:
    """After ``%pip install`` on Colab: True (and a message saying to restart the runtime) when a
    package that this kernel had already imported is now installed in another version. Python keeps
    the module it imported; only a restart loads the new one."""
    from importlib import metadata

    stale = []
    for name in packages:
        module = sys.modules.get(name)
        loaded = getattr(module, "__version__", None)
        if module is None or loaded is None:
            continue  # not imported yet: the next import loads the installed version
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if str(loaded).split("+")[0] != installed.split("+")[0]:
            stale.append(f"{name} {loaded} is loaded, {installed} is installed")
    if stale:
        print("RESTART NEEDED: " + "; ".join(stale) + ". Runtime -> Restart session, then run this cell again.")
    return bool(stale)


def notebook_setup(profile_name: str | None = None):
    """Start the clock, choose and print torch's thread count (:func:`choose_threads`; a warning when other
    processes keep cores busy), print device, profile and versions; return ``(profile, device)``.

    On CUDA it also asks for deterministic kernels (``ftcourse.train.use_deterministic_algorithms``)
    before anything touches the GPU, so that two runs with the same seed give the same losses.
    """
    import torch

    from ..train import pick_device, use_deterministic_algorithms
    from .profiles import get_profile
    from .runner import forget_runs

    forget_runs()
    _started.update(time=time.perf_counter(), profile=None)
    profile = get_profile(profile_name)
    _started["profile"] = profile.name
    if torch.cuda.is_available():
        use_deterministic_algorithms(True)
    set_threads()
    device = pick_device()
    print(f"profile: {profile.name} (model {profile.model_id}, {profile.train_size} training examples, "
          f"{profile.epochs} epochs, batch {profile.batch_size}, seeds {list(profile.seeds)})")
    print(versions())
    return profile, device


def elapsed_s() -> float:
    """Seconds since ``notebook_setup()`` (NaN if it was not called)."""
    start = _started.get("time")
    return float("nan") if start is None else time.perf_counter() - start


def runs_summary(runs: list[dict]) -> str:
    """One line on the fine-tuning runs of this notebook: how many, of which sizes, where the time went."""
    from collections import Counter

    if not runs:
        return "fine-tuning runs: none"
    sizes = Counter((r["train_examples"], r["epochs"], r["evals_per_epoch"]) for r in runs)
    shapes = ", ".join(f"{n}x{e}x{v}: {c}" for (n, e, v), c in sizes.items())
    train_s = sum(r["train_time_s"] for r in runs)
    eval_s = sum(r["eval_time_s"] for r in runs)
    total_s = sum(r["total_s"] for r in runs)
    return (f"fine-tuning runs: {len(runs)} (train examples x epochs x evaluations an epoch: {shapes}); "
            f"{total_s / 60:.1f} min in all, {train_s / 60:.1f} training, {eval_s / 60:.1f} evaluating")


FOOTER_MIME = "application/vnd.ftcourse.footer+json"
RUN_RECORD_ENV = "FTCOURSE_RUN_RECORD"


def notebook_footer(notebook: str | None = None, **declaration_options) -> None:
    """Show the footer: elapsed time, profile, machine, versions and the fine-tuning runs made. It returns
    nothing, so that the last cell does not show the footer twice, and it never fails a learner's notebook.

    The footer is one output with two forms: the text a reader sees, and the same facts as JSON
    (``FOOTER_MIME``) for the tools that read executed notebooks (:func:`read_footer`). With
    ``FTCOURSE_RUN_RECORD=FILE`` (CI sets it), it also appends the notebook's runs to FILE, one JSON line:
    ``tests/test_declared_runs.py`` then checks them against the notebook's declaration
    (``ftcourse.course.declarations``, with ``declaration_options``, e.g. 04's ``fast``)."""
    import json

    from .runner import runs_made

    runs = runs_made()
    seconds = elapsed_s()
    minutes = f"{seconds / 60:.1f} min" if seconds == seconds else "unknown (notebook_setup() was not called)"
    profile = _started.get("profile") or "?"
    machine = machine_description()
    lines = [f"elapsed: {minutes} ({seconds:.0f} s) in the {profile} profile", runs_summary(runs),
             f"machine: {machine}", f"versions: {versions()}"]
    facts = {"notebook": notebook, "profile": profile, "seconds": round(seconds, 1) if seconds == seconds else None,
             "runs": len(runs), "machine": machine, "versions": versions()}
    record = os.environ.get(RUN_RECORD_ENV)
    if record and notebook:
        with open(record, "a", encoding="utf-8") as f:
            # numpy scalars (04's fast=run_training is a numpy bool) as plain values: the footer never fails a notebook
            f.write(json.dumps({"notebook": notebook, "profile": profile, "options": declaration_options, "runs": runs},
                               default=lambda value: value.item() if hasattr(value, "item") else str(value)) + "\n")
    text = "\n".join(lines)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display({"text/plain": text, FOOTER_MIME: facts}, raw=True)
    else:
        print(text)


def read_footer(path) -> dict:
    """The footer facts of an executed notebook (its last cell's ``FOOTER_MIME`` output): ``seconds``,
    ``profile``, ``runs``, ``machine``, ``versions``; {} if the notebook shows no footer."""
    import json
    from pathlib import Path

    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    for output in (cells[-1].get("outputs", []) if cells else []):
        facts = output.get("data", {}).get(FOOTER_MIME)
        if facts:
            return dict(facts)
    return {}
