"""The first and last cells of every notebook: what runs where, and how long it took.

Course harness (not a technique module): ``notebook_setup()`` in the first cell prints the device,
the profile and the versions, and starts the clock; ``notebook_footer()`` in the last cell prints
the elapsed wall time, the profile, the machine and the versions, so every executed notebook says
how long it took and where.
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
    """One line: the GPU if there is one, else the CPU model and torch's thread count."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}); CPU {cpu_model()}"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads ({os.cpu_count()} logical CPUs), no GPU"


def versions() -> str:
    import datasets
    import torch
    import transformers

    from . import __version__

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

    from .profiles import get_profile
    from .train import pick_device, use_deterministic_algorithms

    from .experiment import RUN_LOG

    RUN_LOG.clear()
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


def runs_summary(run_log: list[dict]) -> str:
    """One line on the fine-tuning runs of this notebook: how many, of which sizes, where the time went."""
    from collections import Counter

    if not run_log:
        return "fine-tuning runs: none"
    sizes = Counter((r["train_examples"], r["epochs"], r["evals_per_epoch"]) for r in run_log)
    shapes = ", ".join(f"{n}x{e}x{v}: {c}" for (n, e, v), c in sizes.items())
    train_s = sum(r["train_time_s"] for r in run_log)
    eval_s = sum(r["eval_time_s"] for r in run_log)
    total_s = sum(r["total_s"] for r in run_log)
    return (f"fine-tuning runs: {len(run_log)} (train examples x epochs x evaluations an epoch: {shapes}); "
            f"{total_s / 60:.1f} min in all, {train_s / 60:.1f} training, {eval_s / 60:.1f} evaluating")


def notebook_footer(notebook: str | None = None, **plan_options) -> None:
    """Print the timing footer: elapsed time, profile, machine, versions, and the fine-tuning runs
    made (it returns nothing, so that the last cell does not show the footer twice). With ``notebook`` ("07_llrd"),
    the runs are checked against the notebook's plan (``ftcourse.plan.plan(notebook, profile, **plan_options)``):
    an AssertionError if they differ, so the plan cannot drift."""
    from .experiment import RUN_LOG

    seconds = elapsed_s()
    minutes = f"{seconds / 60:.1f} min" if seconds == seconds else "unknown (notebook_setup() was not called)"
    lines = [f"elapsed: {minutes} ({seconds:.0f} s) in the {_started.get('profile') or '?'} profile",
             runs_summary(RUN_LOG)]
    if notebook is not None and _started.get("profile"):
        from .plan import check_runs
        from .profiles import get_profile

        lines.append(check_runs(notebook, get_profile(_started["profile"]), RUN_LOG, **plan_options))
    lines += [f"machine: {machine_description()}", f"versions: {versions()}"]
    print("\n".join(lines))


def read_footer(path) -> dict:
    """The timing footer of an executed notebook (its last cell's printed output): elapsed ``seconds`` and
    ``minutes``, ``profile``, fine-tuning ``runs``, ``run_counts`` (runs by (train examples, epochs, evaluations
    an epoch), as ``ftcourse.plan.Plan.counts``) and ``machine``; {} if the notebook has no footer output."""
    import json
    import re
    from pathlib import Path

    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    outputs = cells[-1].get("outputs", []) if cells else []
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    found = re.search(r"elapsed: ([0-9.]+) min \(([0-9]+) s\) in the (\w+) profile", text)
    if not found:
        return {}
    runs = re.search(r"fine-tuning runs: ([0-9]+)(.*)", text)
    machine = re.search(r"machine: (.*)", text)
    counts = {(int(n), int(e), int(v)): int(c) for n, e, v, c in re.findall(r"(\d+)x(\d+)x(\d+): (\d+)", runs.group(2))} if runs else {}
    return {"minutes": found.group(1), "seconds": int(found.group(2)), "profile": found.group(3),
            "runs": int(runs.group(1)) if runs else 0, "run_counts": counts,
            "machine": machine.group(1).strip() if machine else "?"}
