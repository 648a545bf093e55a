"""The seed bank: every declared run computed once, at the size its question needs, stored with the course.

Course harness (not a technique module).

A learner's live budget (minutes on a laptop) is too small for the regime where most techniques act,
so the large experiments are computed once (``python -m ftcourse bank build NOTEBOOK``), stored under
``bank/`` and committed, and every notebook re-checks a slice of them live (its canaries). The
format of a stored run is documented field by field in ``bank/README.md``; in short, one JSON file a
run, ``bank/runs/<key>.json``, written once and never rewritten:

* identity: ``key`` (the recipe's), ``recipe`` (every field), ``seed``, ``label``, ``notebook``;
* ``metrics``: validation and test accuracy and loss, ``diverged``, ``collapsed``, ``failed``
  (:data:`FAILED_DEFINITION`, decided before any run);
* ``evaluations``: at every evaluation the step, validation loss and accuracy, and the validation
  **and test** predictions (bit-packed), so that early stopping, evaluation frequency and checkpoint
  selection replay offline: evaluating does not perturb training (every loader has its own generator);
* ``outputs``: named model outputs where a run has several (``final``; ``swa``; the declared extras
  such as ``no_attention_mask``), each with its validation and test predictions;
* ``steps``: at every optimizer step the training loss, the gradient norm and the schedule's lr
  multiplier (per-group base lrs only where the groups differ);
* ``timing``: measured during a build, possibly beside another process: not a speed claim;
* ``provenance``: commit, package versions, CPU model, ``torch.backends.cpu.get_cpu_capability()``,
  thread count, device, date, and the recipe's ``SEMANTICS_VERSION``.

Identical recipes are one run (one key) in any notebook. A stored run that no notebook declares (its
recipe changed, or ``SEMANTICS_VERSION`` was bumped) is **stale**: it is listed by ``bank status`` and
never used. A notebook gets its runs with one call, :func:`declared_runs`: what the bank holds, plus
what is missing, run live after saying how long that takes.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BANK_ENV = "FTCOURSE_BANK_DIR"
BANK_PROFILE = "cpu"  # the profile whose declarations the bank holds (no gpu bank yet)
FAILED_DEFINITION = ("diverged, or test accuracy at or below the test set's majority-class share "
                     "(Mosbach et al. 2021's definition of a failed run)")
TIMING_NOTE = "measured during a bank build, possibly beside another process: not a speed measurement"


def bank_dir(directory=None) -> Path:
    """Where the bank lives: ``directory``, else ``FTCOURSE_BANK_DIR``, else ``bank/`` of the repository."""
    return Path(directory or os.environ.get(BANK_ENV) or ROOT / "bank")


# ---------------------------------------------------------------------------------------------
# Packing: predictions as bits (binary) or bytes, traces as float32/float64, all base64
# ---------------------------------------------------------------------------------------------
def pack_predictions(predictions) -> dict:
    """Class predictions, compactly: 1 bit each for two classes, else 1 byte each."""
    p = np.asarray(predictions)
    if p.ndim != 1 or (p.size and (p.min() < 0 or p.max() > 255)):
        raise ValueError(f"predictions must be a 1-D array of class indices 0..255, got shape {p.shape}")
    if p.size == 0 or p.max() <= 1:
        return {"n": int(p.size), "bits": base64.b64encode(np.packbits(p.astype(np.uint8)).tobytes()).decode()}
    return {"n": int(p.size), "bytes": base64.b64encode(p.astype(np.uint8).tobytes()).decode()}


def unpack_predictions(packed: dict) -> np.ndarray:
    n = packed["n"]
    if "bits" in packed:
        return np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8))[:n].astype(np.int64)
    return np.frombuffer(base64.b64decode(packed["bytes"]), dtype=np.uint8)[:n].astype(np.int64)


def pack_floats(values, dtype: str = "float32") -> dict:
    return {"dtype": dtype, "data": base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()}


def unpack_floats(packed: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed["data"]), dtype=packed["dtype"]).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# A record: what fine_tune(record=True) returns, plus identity and provenance
# ---------------------------------------------------------------------------------------------
def provenance(threads: int | None = None) -> dict:
    """Where and with what a run was made: enough to say whether a rerun must be bit-identical."""
    import datasets
    import torch
    import transformers

    from .. import __version__
    from .notebook import cpu_model
    from .recipes import SEMANTICS_VERSION

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--", "ftcourse")),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "datasets": datasets.__version__,
                         "numpy": np.__version__, "ftcourse": __version__},
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": threads or torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "semantics_version": SEMANTICS_VERSION}


def make_record(result, notebook: str, label: str) -> dict:
    """The stored form of a ``fine_tune(..., record=True)`` result."""
    from .recipes import SEMANTICS_VERSION

    recipe, row, rec = result.recipe, result.row, result.record
    return {"key": recipe.key(), "recipe": recipe.to_dict(), "seed": recipe.seed, "label": label, "notebook": notebook,
            "semantics_version": SEMANTICS_VERSION,
            "metrics": {k: _plain(row[k]) for k in ("val_accuracy", "val_loss", "test_accuracy", "test_loss",
                                                    "best_val_accuracy", "steps", "stopped_early", "diverged",
                                                    "collapsed", "failed")},
            "failed_definition": FAILED_DEFINITION,
            **rec,
            "timing": {k: round(float(row[k]), 3) for k in ("train_time_s", "eval_time_s", "callback_time_s",
                                                            "final_eval_time_s")} | {"note": TIMING_NOTE},
            "provenance": provenance()}


def _plain(value):
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def save_record(record: dict, directory=None) -> Path:
    """Write one run, atomically (a temporary file renamed into place): a build killed mid-write leaves
    nothing half-written, and an existing record is never rewritten."""
    runs = bank_dir(directory) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{record['key']}.json"
    if path.exists():
        raise FileExistsError(f"{path} exists: a stored run is never rewritten")
    tmp = runs / f".{record['key']}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def load_records(directory=None) -> dict[str, dict]:
    """Every stored run, by key (temporary files of an interrupted build are ignored)."""
    runs = bank_dir(directory) / "runs"
    if not runs.is_dir():
        return {}
    records = {}
    for path in sorted(runs.glob("r*.json")):
        record = json.loads(path.read_text())
        if record.get("key") != path.stem:
            raise ValueError(f"{path}: its key {record.get('key')!r} is not its file name")
        records[path.stem] = record
    return records


# ---------------------------------------------------------------------------------------------
# What a notebook's bank holds: stored, missing, stale
# ---------------------------------------------------------------------------------------------
def bankable(run) -> bool:
    """A declared run the bank can hold: its recipe is the whole run (no code of the notebook's own) and
    no field of it is chosen while the notebook runs."""
    return not run.custom and run.choice is None


def banked_runs(notebook: str) -> list:
    """The declared runs of ``notebook`` the bank holds: its arms' bankable runs and its two canaries."""
    from .declarations import DeclaredRun

    d = declaration_of(notebook)
    runs = [r for r in d.runs() if bankable(r)]
    keys = {r.recipe.key() for r in runs}
    for i, c in enumerate(d.canaries):
        if c.key() not in keys:
            runs.append(DeclaredRun(f"canary {i + 1}", c, None, "", False))
            keys.add(c.key())
    return runs


def declared_keys() -> set[str]:
    from .declarations import DECLARATIONS

    return {r.recipe.key() for n in DECLARATIONS for r in banked_runs(n)}


def complete_notebooks(directory=None) -> dict:
    """The notebooks whose banks are marked complete (``bank/complete.json``): a test then fails when one of
    their declared runs is missing or stale. A bank still being built is simply not listed."""
    path = bank_dir(directory) / "complete.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def mark_complete(notebook: str, directory=None) -> None:
    stem = _stem(notebook)
    missing = [r for r in banked_runs(stem) if r.recipe.key() not in load_records(directory)]
    if missing:
        raise ValueError(f"{stem}: {len(missing)} declared runs are not stored yet; build them first")
    path = bank_dir(directory) / "complete.json"
    done = complete_notebooks(directory)
    done[stem] = {"profile": BANK_PROFILE, "runs": len(banked_runs(stem)),
                  "marked": datetime.date.today().isoformat()}
    path.write_text(json.dumps(dict(sorted(done.items())), indent=1) + "\n")


def _stem(notebook: str) -> str:
    from .declarations import DECLARATIONS, declaration
    from .profiles import get_profile

    if notebook[:2] not in DECLARATIONS:
        raise ValueError(f"no notebook {notebook!r}: one of {', '.join(sorted(DECLARATIONS))} (or its name, e.g. 01_baseline)")
    return declaration(notebook, get_profile(BANK_PROFILE)).notebook


def status(directory=None):
    """Per notebook: declared (bankable) runs, stored, missing, whether marked complete, and the minutes the
    missing ones need on the reference machine; and the stale runs (stored, declared by no notebook)."""
    import pandas as pd

    from .declarations import DECLARATIONS

    records = load_records(directory)
    complete = complete_notebooks(directory)
    rows = []
    for number in sorted(DECLARATIONS):
        stem = _stem(number)
        runs = banked_runs(number)
        outputs_of = {a.label: a.outputs for a in declaration_of(stem).arms}
        missing = [r for r in runs if r.recipe.key() not in records]
        rows.append({"notebook": stem, "declared": len(runs), "stored": len(runs) - len(missing),
                     "missing": len(missing), "complete": stem in complete,
                     "minutes to complete": sum(build_seconds(r, outputs_of.get(r.label, ()), 2) for r in missing) / 2 / 60})
    stale = sorted(set(records) - declared_keys())
    return pd.DataFrame(rows).set_index("notebook"), stale


def build_seconds(run, outputs=(), processes: int = 1) -> float:
    """Seconds one recorded run takes in a build process of one thread on the 2-core reference machine: its
    training examples, and its evaluations with the test set scored at each one (what a record keeps), plus the
    final passes and named outputs. ``processes``: 1-thread processes sharing the two cores."""
    from .declarations import REFERENCE_EVAL_PER_S, REFERENCE_RUN_OVERHEAD_S, REFERENCE_TRAIN_PER_S, eval_sizes

    # one thread trains at about half the 2-thread rate; two 1-thread processes together ~1.1x one 2-thread one
    share = 0.5 if processes == 1 else 0.55
    r = run.recipe
    steps = r.total_steps()
    val_n, test_n = eval_sizes(r)
    passes = min(r.epochs * r.evals_per_epoch, steps) + 1 + len(outputs) + (r.swa_start is not None)
    return (steps * r.batch_size / (REFERENCE_TRAIN_PER_S * share) + passes * (val_n + test_n) / (REFERENCE_EVAL_PER_S * share)
            + REFERENCE_RUN_OVERHEAD_S)


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def _build_one(recipe_dict: dict, notebook: str, label: str, outputs: tuple, directory: str) -> dict:
    """One run: run the recipe, store its record, return a summary (in a worker process of one torch thread, or
    here with ``jobs=1``)."""
    from . import runner
    from .recipes import Recipe

    recipe = Recipe.from_dict(recipe_dict)
    result = runner.fine_tune(recipe, record=True, outputs=tuple(outputs), progress=False, label=label)
    record = make_record(result, notebook, label)
    save_record(record, directory)
    return {"key": record["key"], "label": label, "seed": recipe.seed, "test_accuracy": record["metrics"]["test_accuracy"],
            "seconds": sum(v for k, v in record["timing"].items() if k != "note")}


def _worker_init():
    import torch

    torch.set_num_threads(1)


def build_runs(work: list[tuple], jobs: int = 1, directory=None) -> int:
    """Build ``work`` (``(recipe, notebook, label, outputs)`` tuples) that the bank does not hold yet, ``jobs``
    processes of one torch thread each (``jobs=1``: here, at one thread). Each finished run is written at once,
    atomically: a killed build loses only the runs in progress, and a rerun skips what is stored. Returns the
    number of runs built."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing

    import torch
    from tqdm import tqdm

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    stored = load_records(directory)
    todo = [w for w in work if w[0].key() not in stored]
    todo = list({w[0].key(): w for w in todo}.values())  # identical recipes are one run
    if not todo:
        return 0
    args = [(r.to_dict(), notebook, label, tuple(outputs), str(bank_dir(directory))) for r, notebook, label, outputs in todo]
    bar = tqdm(total=len(args), desc="bank", unit="run", file=sys.stdout)

    def done(summary):
        bar.update(1)
        bar.write(f"{summary['label']} seed {summary['seed']}: test accuracy {summary['test_accuracy']:.4f} "
                  f"({summary['seconds']:.0f} s) -> runs/{summary['key']}.json")

    built = 0
    try:
        if jobs == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for a in args:
                    done(_build_one(*a))
                    built += 1
            finally:
                torch.set_num_threads(threads)
        else:
            context = multiprocessing.get_context("spawn")  # fresh interpreters: no thread pool inherited from here
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init) as pool:
                for future in as_completed([pool.submit(_build_one, *a) for a in args]):
                    done(future.result())
                    built += 1
    finally:
        bar.close()
    return built


def build(notebook: str, jobs: int | None = None, directory=None, limit: int | None = None) -> int:
    """Run the declared runs of ``notebook`` (its bankable arms and its canaries) that the bank does not hold,
    ``jobs`` processes of one torch thread each (default: one per core; on 2 cores two 1-thread processes beat one
    2-thread process, and 2 x 2 threads run ten times slower: never oversubscribe). Prints how many runs and the
    estimated time first, then one progress bar over the runs. ``limit``: build at most this many."""
    from .declarations import declaration

    stem = _stem(notebook)
    jobs = jobs or os.cpu_count() or 1
    records = load_records(directory)
    d = declaration(stem, _bank_profile())
    outputs_of = {a.label: a.outputs for a in d.arms}
    todo = [r for r in banked_runs(stem) if r.recipe.key() not in records]
    live_only = [r for r in d.runs() if not bankable(r)]
    if limit is not None:
        todo = todo[:limit]
    if todo and provenance()["dirty"]:
        print("note: ftcourse/ has uncommitted changes; the records will say so (provenance.dirty): commit first "
              "for a clean provenance")
    seconds = sum(build_seconds(r, outputs_of.get(r.label, ()), min(jobs, 2)) for r in todo) / min(jobs, max(1, len(todo)))
    print(f"{stem}: {len(todo)} runs to build ({len(records)} runs stored in the bank), {jobs} process(es) x 1 thread, "
          f"about {seconds / 60:.0f} min on the 2-core reference machine"
          + (f"; {len(live_only)} declared runs are live-only (code of the notebook's own, or a choice made while "
             "it runs)" if live_only else ""))
    return build_runs([(r.recipe, stem, r.label, outputs_of.get(r.label, ())) for r in todo], jobs=jobs,
                      directory=directory)


# ---------------------------------------------------------------------------------------------
# Verifying: stored runs rerun
# ---------------------------------------------------------------------------------------------
@dataclass
class Verification:
    key: str
    label: str
    check: str  # "bit-identical" or "within the arm's seed range ± 0.01"
    passed: bool
    detail: str = ""


def same_machine(record: dict) -> bool:
    """Whether a rerun here must be bit-identical to ``record``: same CPU model and torch CPU capability (and no
    GPU); the rerun uses the recorded thread count."""
    import torch

    from .notebook import cpu_model

    p = record["provenance"]
    return (not torch.cuda.is_available() and p["device"] == "cpu" and p["cpu_model"] == cpu_model()
            and p["cpu_capability"] == torch.backends.cpu.get_cpu_capability())


def compare_records(stored: dict, rerun: dict) -> str:
    """"" when two records of one recipe are bit-identical (every loss, gradient norm and prediction), else what differs."""
    for name in ("loss", "grad_norm", "lr_scale"):
        if not np.array_equal(unpack_floats(stored["steps"][name]), unpack_floats(rerun["steps"][name])):
            return f"the {name} trace differs"
    if len(stored["evaluations"]) != len(rerun["evaluations"]):
        return "a different number of evaluations"
    for a, b in zip(stored["evaluations"], rerun["evaluations"]):
        for split in ("val_predictions", "test_predictions"):
            if not np.array_equal(unpack_predictions(a[split]), unpack_predictions(b[split])):
                return f"{split} differ at step {a['step']}"
    for name, output in stored["outputs"].items():
        other = rerun["outputs"].get(name)
        if other is None or not np.array_equal(unpack_predictions(output["test_predictions"]),
                                               unpack_predictions(other["test_predictions"])):
            return f"the {name!r} output's test predictions differ"
    return ""


def verify(notebook: str, runs: int | None = None, directory=None) -> list[Verification]:
    """Rerun stored runs of ``notebook`` (default: its two canaries; ``runs=K``: its first K declared runs) and check
    each (:func:`verify_records`)."""
    return verify_notebooks([notebook], runs, directory)


def verify_notebooks(notebooks, runs: int | None = None, directory=None, jobs: int = 1) -> list[Verification]:
    """:func:`verify` for several notebooks, each stored run rerun once however many of them declare it: notebooks
    share canaries (02, 06, 07 and 09 rerun one of the baseline's), and CI gives the reruns 10 minutes in all
    (``jobs``: see :func:`verify_records`)."""
    keys = []
    for notebook in notebooks:
        stem = _stem(notebook)
        keys += ([c.key() for c in declaration_of(stem).canaries] if runs is None
                 else [r.recipe.key() for r in banked_runs(stem)][:runs])
    return verify_records(list(dict.fromkeys(keys)), directory, jobs=jobs)


def declaration_of(stem: str):
    from .declarations import declaration

    return declaration(stem, _bank_profile())


def verify_records(keys: list[str], directory=None, jobs: int = 1) -> list[Verification]:
    """Rerun the stored runs ``keys`` and check each: **bit-identical** (every loss, gradient norm and prediction)
    when the CPU model and capability match the record (rerun at the recorded thread count), otherwise its test
    accuracy **within the arm's stored seed range ± 0.01**. ``jobs``: processes of one torch thread each, as a
    build runs them (the bank's records are 1-thread runs, so two 1-thread reruns on 2 cores check them in half
    the time); 1: here, one run after another. Results in the order of ``keys``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    records = load_records(directory)
    missing = [k for k in keys if k not in records]
    if missing:
        raise ValueError(f"not in the bank: {', '.join(missing)} (python -m ftcourse bank build NOTEBOOK)")
    if jobs == 1 or len(keys) < 2:
        return [_verify_one(key, directory) for key in keys]
    with _verification_pool(min(jobs, len(keys))) as pool:
        return list(pool.map(_verify_one, keys, [directory] * len(keys)))


def _verification_pool(jobs: int):
    """Fresh interpreters of one torch thread each (the build's workers)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)


def _verify_one(key: str, directory=None) -> Verification:
    import torch

    from . import runner
    from .recipes import Recipe

    records = load_records(directory)
    stored = records[key]
    exact = same_machine(stored)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(stored["provenance"]["threads"] if exact else threads_before)
        extras = tuple(name for name in stored["outputs"] if name not in ("final", "swa"))
        result = runner.fine_tune(Recipe.from_dict(stored["recipe"]), record=True, outputs=extras, progress=False)
    finally:
        torch.set_num_threads(threads_before)
    rerun = make_record(result, stored["notebook"], stored["label"])
    if exact:
        why = compare_records(stored, rerun)
        return Verification(key, stored["label"], "bit-identical", not why, why)
    # the arm: every stored run of the same recipe but its seed (a notebook's two canaries are one arm)
    same_arm = [r["metrics"]["test_accuracy"] for r in records.values()
                if _without_seed(r["recipe"]) == _without_seed(stored["recipe"])]
    low, high = min(same_arm) - 0.01, max(same_arm) + 0.01
    acc = rerun["metrics"]["test_accuracy"]
    return Verification(key, stored["label"], "within the arm's seed range ± 0.01", low <= acc <= high,
                        f"test accuracy {acc:.4f}, range [{low:.4f}, {high:.4f}]")


def evaluations_at(record: dict, evals_per_epoch: int | None = None) -> list[dict]:
    """A stored run's evaluations, or (``evals_per_epoch=k``) those a run evaluated k times an epoch would have made:
    k must divide the recipe's ``evals_per_epoch``, whose evaluation steps then include every one of k's
    (:func:`ftcourse.train.evaluation_steps`). Evaluating never changes training, so the subset is what that run saw."""
    from ..train import evaluation_steps

    evaluations = record["evaluations"]
    if evals_per_epoch is None:
        return evaluations
    recipe = record["recipe"]
    stored = recipe["evals_per_epoch"]
    if not (isinstance(evals_per_epoch, int) and evals_per_epoch >= 1 and stored % evals_per_epoch == 0):
        allowed = [k for k in range(1, stored + 1) if stored % k == 0]
        raise ValueError(f"evals_per_epoch must divide the run's {stored} evaluations an epoch, one of {allowed}; "
                         f"got {evals_per_epoch!r}")
    if recipe.get("max_steps") is not None:
        raise ValueError(f"run {record.get('key', '?')} sets max_steps: its epochs are not whole, nothing to subsample")
    from .recipes import Recipe

    keep = set(evaluation_steps(Recipe.from_dict(recipe).steps_per_epoch(), recipe["epochs"], evals_per_epoch))
    return [e for e in evaluations if e["step"] in keep]


def replay_selection(record: dict, patience: int | None = None, average: bool = False,
                     evals_per_epoch: int | None = None) -> dict:
    """Early stopping (``patience`` evaluations; None: never stop) and best-checkpoint selection replayed from a
    stored run's evaluations, with the package's own :class:`~ftcourse.early_stopping.EarlyStopping`: the
    evaluation it keeps, its ``step``, ``val_accuracy``, ``test_accuracy`` and ``test_predictions``, and
    ``stopped_at_step``, the step a live run with ``select="best"`` and this patience would have stopped at. A live
    run gives the same test predictions: evaluating did not perturb its training, and the restore is exact.

    ``average=True``: the run's weight average (a recipe with ``swa_start`` and ``select="final"``: its final weights,
    scored at the end) competes with the kept checkpoint, and wins only if strictly better on validation, as
    ``select="best"`` with SWA does (:class:`ftcourse.course.combined.BestOfCallback`); ``chosen`` says which won
    ("checkpoint" or "average").

    ``evals_per_epoch=k``: replay a run evaluated only k times an epoch (:func:`evaluations_at`); ``patience`` then
    counts those evaluations."""
    from torch import nn

    from ..early_stopping import EarlyStopping

    tracker, probe = EarlyStopping(patience=patience, mode="max", verbose=False), nn.Linear(1, 1)
    evaluations = evaluations_at(record, evals_per_epoch)
    if not evaluations:
        raise ValueError(f"run {record.get('key', '?')} stores no evaluations: nothing to select from")
    stopped_at = evaluations[-1]["step"]
    for e in evaluations:
        if tracker.step(e["val_accuracy"], probe):
            stopped_at = e["step"]
            break
    chosen = evaluations[tracker.best_index]
    kept = {"chosen": "checkpoint", "index": tracker.best_index, "step": chosen["step"],
            "val_accuracy": chosen["val_accuracy"], "test_accuracy": chosen["test_accuracy"],
            "test_predictions": unpack_predictions(chosen["test_predictions"]), "stopped_at_step": stopped_at}
    if average:
        recipe = record["recipe"]
        if recipe.get("swa_start") is None or recipe.get("select", "final") != "final":
            raise ValueError("average=True needs a run that averages its weights and keeps the average (swa_start set, "
                             f"select='final'); run {record.get('key', '?')} has swa_start={recipe.get('swa_start')!r}, "
                             f"select={recipe.get('select')!r}")
        metrics = record["metrics"]
        if metrics["val_accuracy"] > chosen["val_accuracy"]:
            kept.update(chosen="average", index=None, step=metrics["steps"], val_accuracy=metrics["val_accuracy"],
                        test_accuracy=metrics["test_accuracy"], test_predictions=record_predictions(record, "final"))
    return kept


def record_predictions(record: dict, output: str = "final", split: str = "test") -> np.ndarray:
    """The predictions a stored run's named output (``final``, ``swa``, ...) made on ``split`` ("val" or "test")."""
    return unpack_predictions(record["outputs"][output][f"{split}_predictions"])


def _without_seed(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "seed"}


# ---------------------------------------------------------------------------------------------
# In a notebook: one call gives the declared runs
# ---------------------------------------------------------------------------------------------
# MiniLM starts SST-2 on a plateau near ln 2 (a 50/50 guess) and predicts the majority class; a run "leaves" it at
# the first step where the mean training loss of the last PLATEAU_WINDOW steps falls below PLATEAU_LOSS. A run that
# measures a technique is at least PLATEAU_MARGIN times that long (tests/test_bank.py holds the stored runs to it).
PLATEAU_LOSS = 0.60
PLATEAU_WINDOW = 10
PLATEAU_MARGIN = 3


def plateau_exit(losses, threshold: float = PLATEAU_LOSS, window: int = PLATEAU_WINDOW) -> int | None:
    """The first optimizer step (counted from 1) at which the mean of the last ``window`` training losses is below
    ``threshold``: where a run leaves the majority-class plateau. None if it never does."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"losses must be one loss per step (1-D), got shape {losses.shape}")
    if len(losses) < window:
        return None
    means = np.convolve(losses, np.ones(window) / window, mode="valid")  # means[j]: steps j+1 .. j+window
    below = np.flatnonzero(means < threshold)
    return int(below[0]) + window if len(below) else None


@dataclass
class StoredRun:
    """A run as a notebook reads it, from the bank or just run live: ``row`` (as ``fine_tune``'s, with the
    per-example arrays), ``record`` (the stored form), and where it came from."""
    row: dict
    record: dict
    source: str  # "bank" or "live"

    def evaluations(self):
        """Per evaluation: step, validation loss and accuracy, and the predictions (arrays), as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([{**{k: v for k, v in e.items() if not k.endswith("_predictions")},
                              "val_predictions": unpack_predictions(e["val_predictions"]),
                              "test_predictions": unpack_predictions(e["test_predictions"])}
                             for e in self.record["evaluations"]])

    def steps(self):
        """Per optimizer step: the training loss, gradient norm and lr multiplier, as a DataFrame."""
        import pandas as pd

        s = self.record["steps"]
        frame = pd.DataFrame({name: unpack_floats(s[name]) for name in ("loss", "grad_norm", "lr_scale")})
        frame.insert(0, "step", np.arange(1, len(frame) + 1))
        return frame

    # the names of ftcourse.train.History's frames, so that a stored run plots like a live one
    def steps_frame(self):
        return self.steps()

    def evals_frame(self):
        return self.evaluations()

    def plateau_exit(self) -> int | None:
        """The step where this run left the majority-class plateau (:func:`plateau_exit`), None if it never did."""
        return plateau_exit(self.steps().loss)

    def output(self, name: str, split: str = "test") -> np.ndarray:
        """The predictions of a named output (``final``, ``swa``, ``no_attention_mask``, ...) on ``split``."""
        return unpack_predictions(self.record["outputs"][name][f"{split}_predictions"])


def row_of(record: dict, labels: dict) -> dict:
    """A ``fine_tune``-style row from a record (labels: the validation and test labels in row order)."""
    final = record["outputs"]["final"]
    val, test = unpack_predictions(final["val_predictions"]), unpack_predictions(final["test_predictions"])
    return {"seed": record["seed"], **record["metrics"], **{k: v for k, v in record["timing"].items() if k != "note"},
            "val_predictions": val, "test_predictions": test,
            "val_correct": val == labels["validation"], "test_correct": test == labels["test"]}


def _labels(recipe) -> dict:
    from . import data as ftdata

    splits = ftdata.tokenized_splits(recipe.model_id, recipe.max_length, recipe.train_size, recipe.data_seed,
                                     val_size=recipe.val_size, test_size=recipe.test_size)
    return {name: np.asarray(splits[name]["labels"]) for name in ("validation", "test")}


@dataclass
class DeclaredRuns:
    """What :func:`declared_runs` returns: the runs (``results``, one row per run as ``run_seeds`` gives, with a
    ``label`` and a ``source`` column), each run's :class:`StoredRun` by (label, seed), and the provenance line."""
    results: object
    runs: dict = field(default_factory=dict)
    provenance: str = ""
    labels: dict = field(default_factory=dict)  # "validation" and "test" labels in row order (of the first recipe)

    def __repr__(self):
        return self.provenance

    def plateau_report(self, label: str | None = None) -> str:
        """Where the runs (those of ``label``; None: all) leave MiniLM's majority-class plateau (:func:`plateau_exit`):
        the latest step at which a run leaves it, how many of the runs do, and how many times that step the shortest
        run is (the course measures a technique on runs at least ``PLATEAU_MARGIN`` times that long)."""
        runs = [run for (run_label, _), run in self.runs.items() if label is None or run_label == label]
        if not runs:
            raise ValueError(f"no runs labelled {label!r}; the labels: {sorted({key[0] for key in self.runs})}")
        exits = [run.plateau_exit() for run in runs]
        left = [step for step in exits if step is not None]
        prefix = f"{label}: " if label is not None else ""
        rule = f"{PLATEAU_WINDOW}-step mean training loss below {PLATEAU_LOSS:.2f}"
        if not left:
            return f"{prefix}no run leaves the plateau ({rule})"
        shortest = min(int(run.row["steps"]) for run in runs)
        return (f"{prefix}leaving the plateau ({rule}): by step {max(left)} in {len(left)} of {len(exits)} runs; the runs "
                f"are {shortest / max(left):.1f}x that long")


def declared_runs(notebook: str, profile, *cells: str, directory=None) -> DeclaredRuns:
    """The runs a notebook declares (those of ``cells``; none: every bankable arm), from the bank where it holds
    them, the rest run live after saying how long that takes. Prints, and returns in ``.provenance``, what it
    used: "N runs from the bank (built DATE on MACHINE, commit C), M run live".

    The bank holds the ``cpu`` profile's declarations. In ``cpu`` a missing run is run live (the bank may still
    be being built); in ``ci`` (nbval) the analysis reads the stored cpu runs and a missing one is only listed,
    so CI stays within its minutes; in ``gpu`` (no gpu bank yet) the notebook analyses the cpu bank, and says so.
    A run the notebook changed (a seed, an lr) is simply not in the bank: it runs live, as any new recipe does.
    """
    import pandas as pd

    from . import runner
    from .declarations import REFERENCE_EVAL_PER_S, REFERENCE_RUN_OVERHEAD_S, REFERENCE_TRAIN_PER_S, run_seconds

    stem = _stem(notebook)
    d = declaration_of(stem)
    arms = d.group(*cells) if cells else d.arms
    wanted = [(arm, run) for arm in arms for run in arm.runs() if bankable(run)]
    records = load_records(directory)
    live = [(arm, run) for arm, run in wanted if run.recipe.key() not in records]
    note = ""
    if profile.name == "gpu":
        note = " (the gpu profile analyses the cpu bank: no gpu bank exists yet)"
    if live and profile.name != BANK_PROFILE:
        print(f"{len(live)} declared run(s) not in the bank yet; the {profile.name} profile does not run them "
              f"(python -m ftcourse bank build {stem}): {', '.join(sorted({a.label for a, _ in live}))}")
        wanted = [(a, r) for a, r in wanted if r.recipe.key() in records]
        live = []
    elif live:
        seconds = sum(run_seconds(r, REFERENCE_TRAIN_PER_S, REFERENCE_EVAL_PER_S, REFERENCE_RUN_OVERHEAD_S) for _, r in live)
        print(f"{len(live)} declared run(s) not in the bank: running them live, about {max(1, round(seconds / 60))} min "
              "on the 2-core reference machine")
    labels = {}
    out, rows, used = {}, [], []
    for arm, run in wanted:
        key = run.recipe.key()
        if key in records:
            record, source = records[key], "bank"
            used.append(record)
        else:
            result = runner.fine_tune(run.recipe, record=True, outputs=arm.outputs, progress=False, label=arm.label)
            record, source = make_record(result, stem, arm.label), "live"
        lab = labels.setdefault((run.recipe.val_size, run.recipe.test_size, run.recipe.train_size), _labels(run.recipe))
        row = row_of(record, lab)
        out[arm.label, run.recipe.seed] = StoredRun(row, record, source)
        rows.append({"label": arm.label, **row, "source": source})
    built = sorted({r["provenance"]["date"][:10] for r in used})
    machines = sorted({f"{r['provenance']['cpu_model']} ({r['provenance']['cpu_capability']}, "
                       f"{r['provenance']['threads']} thread)" for r in used})
    commits = sorted({r["provenance"]["commit"][:7] + ("+" if r["provenance"]["dirty"] else "") for r in used})
    n_live = sum(1 for s in out.values() if s.source == "live")
    line = (f"{len(used)} run{'s' * (len(used) != 1)} from the bank"
            + (f" (built {', '.join(built)} on {'; '.join(machines)}, commit {', '.join(commits)})" if used else "")
            + f", {n_live} run live" + note)
    print(line)
    return DeclaredRuns(pd.DataFrame(rows), out, line, next(iter(labels.values()), {}))


def _bank_profile():
    from .profiles import get_profile

    return get_profile(BANK_PROFILE)


def canaries(notebook: str, profile, directory=None):
    """Rerun the notebook's two canaries live and show them beside their stored records (cpu profile: the bank's
    canaries, bit-identical where the machine matches; other profiles: the profile's own canaries, run live only,
    since the bank holds cpu sizes). Returns a DataFrame, one row per canary; its ``attrs["records"]`` holds the live
    runs' records by canary number (1, 2), for checks of the notebook's own."""
    import pandas as pd

    from . import runner
    from .declarations import declaration

    stem = _stem(notebook)
    records = load_records(directory)
    rows = []
    for i, recipe in enumerate(declaration(stem, profile).canaries):
        stored = records.get(recipe.key())
        exact = stored is not None and same_machine(stored)
        import torch

        threads = torch.get_num_threads()
        if exact:
            torch.set_num_threads(stored["provenance"]["threads"])
        try:
            result = runner.fine_tune(recipe, record=True, progress=False, label=f"canary {i + 1}")
        finally:
            torch.set_num_threads(threads)
        live = make_record(result, stem, f"canary {i + 1}")
        row = {"canary": i + 1, "recipe": recipe.describe(), "steps": live["metrics"]["steps"],
               "live test accuracy": live["metrics"]["test_accuracy"]}
        if stored is None:
            row.update({"stored test accuracy": float("nan"), "check": "not in the bank (this profile's sizes)"})
        else:
            why = compare_records(stored, live) if exact else ""
            row.update({"stored test accuracy": stored["metrics"]["test_accuracy"],
                        "check": ("bit-identical" if not why else f"DIFFERENT: {why}") if exact else
                        f"other machine: {abs(live['metrics']['test_accuracy'] - stored['metrics']['test_accuracy']):.4f} apart"})
        rows.append(row)
        records[f"live canary {i + 1}"] = live
    table = pd.DataFrame(rows).set_index("canary")
    table.attrs["records"] = {i + 1: records[f"live canary {i + 1}"] for i in range(len(rows))}  # the live runs' records
    return table


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M")
