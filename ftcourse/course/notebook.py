"""The first and last cells of every notebook: what runs where, and how long it took.

Course harness (not a technique module): ``notebook_setup()`` in the first cell prints the device,
the profile and the versions, and starts the clock; ``notebook_footer()`` in the last cell shows
the elapsed wall time, the profile, the machine, the versions and the runs made, so every executed
notebook says how long it took and where.
"""
from __future__ import annotations

import os
import platform
import sys
import time
import warnings

# tqdm.auto (imported by datasets and transformers) warns "IProgress not found" when ipywidgets is
# missing, with the path of the user's environment in the message. Its fallback, the plain text bar,
# is what the course uses anyway, so the warning says nothing a learner needs.
warnings.filterwarnings("ignore", message="IProgress not found")

_started: dict = {}


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
    """Start the clock, print device, profile and versions; return ``(profile, device)``.

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
