"""What each notebook runs, counted from the profile: the one place that declares a notebook's work.

Course harness (not a technique module).

``plan(notebook, profile)`` lists a notebook's fine-tuning runs (how many, of how many training
examples, epochs and validation passes) and its other work (``extra_s``: seconds of the cells that
are not fine-tuning runs, as measured on the reference machine, scaled by the measured speed).
Three things read it:

* ``python -m ftcourse estimate`` turns it into predicted minutes per notebook on this device;
* a notebook's long experiment cells print what they are about to run (``announce``);
* ``notebook_footer()`` compares the runs the notebook really made (``ftcourse.experiment.RUN_LOG``)
  with the plan, and fails if they differ, so the plan cannot drift from the notebooks.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

# The reference machine: the 2-core development machine of the cpu profile (Intel Xeon, AVX-512),
# quiet, MiniLM, batch 16, length-grouped: training examples/s and evaluation sentences/s.
REFERENCE_TRAIN_PER_S = 106.0
REFERENCE_EVAL_PER_S = 300.0
REFERENCE_RUN_OVERHEAD_S = 4.0  # model load, optimizer, loaders
NOTEBOOK_STARTUP_S = 15.0


@dataclass(frozen=True)
class Runs:
    """``count`` fine-tuning runs alike: ``train_examples`` × ``epochs``, ``evals_per_epoch`` validation
    passes an epoch (plus the final test pass and, when weights change after the loop, a validation pass)."""
    label: str
    count: int
    train_examples: int
    epochs: int
    evals_per_epoch: int
    extra_val_pass: bool = False

    def key(self) -> tuple:
        return (self.train_examples, self.epochs, self.evals_per_epoch)


@dataclass(frozen=True)
class Plan:
    notebook: str
    runs: tuple[Runs, ...]
    extra_s: float = 0.0  # other cells, seconds on the reference machine
    note: str = ""

    @property
    def n_runs(self) -> int:
        return sum(r.count for r in self.runs)

    def counts(self) -> Counter:
        """Runs by (train_examples, epochs, evals_per_epoch): what the footer checks."""
        c = Counter()
        for r in self.runs:
            c[r.key()] += r.count
        return c


def run_seconds(runs: Runs, val_examples: int, test_examples: int, train_per_s: float, eval_per_s: float,
                overhead_s: float) -> float:
    """Seconds for one run of ``runs`` at the given throughputs."""
    passes = runs.epochs * runs.evals_per_epoch + (1 if runs.extra_val_pass else 0)
    return (runs.train_examples * runs.epochs / train_per_s + (passes * val_examples + test_examples) / eval_per_s
            + overhead_s)


def eval_sizes(profile) -> tuple[int, int]:
    return profile.val_size or 872, profile.test_size or 1821


def seconds(plan: Plan, profile, train_per_s: float = REFERENCE_TRAIN_PER_S, eval_per_s: float = REFERENCE_EVAL_PER_S,
            overhead_s: float = REFERENCE_RUN_OVERHEAD_S) -> float:
    """Predicted wall time of a notebook at these throughputs (extra work scaled by the training speed)."""
    val_n, test_n = eval_sizes(profile)
    total = sum(r.count * run_seconds(r, val_n, test_n, train_per_s, eval_per_s, overhead_s) for r in plan.runs)
    return total + plan.extra_s * REFERENCE_TRAIN_PER_S / train_per_s + NOTEBOOK_STARTUP_S


def announce(runs: Runs, profile, train_per_s: float = REFERENCE_TRAIN_PER_S, eval_per_s: float = REFERENCE_EVAL_PER_S) -> str:
    """The line a long experiment cell prints first: what it runs and about how long it takes on the
    reference machine."""
    val_n, test_n = eval_sizes(profile)
    s = runs.count * run_seconds(runs, val_n, test_n, train_per_s, eval_per_s, REFERENCE_RUN_OVERHEAD_S)
    text = (f"this cell runs {runs.count} fine-tuning run{'s' * (runs.count != 1)} ({runs.train_examples} examples x "
            f"{runs.epochs} epoch{'s' * (runs.epochs != 1)}), about {math.ceil(s / 60)} min on the 2-core reference machine")
    print(text)
    return text


PLANS: dict = {}  # notebook number ("07") -> function(profile) -> Plan


def plan(notebook: str, profile) -> Plan | None:
    """The plan of ``notebook`` ("07" or "07_llrd") in ``profile``; None if it has none yet."""
    make = PLANS.get(notebook[:2])
    return None if make is None else make(profile)


def check_runs(notebook: str, profile, run_log: list[dict]) -> str:
    """Compare the runs a notebook made with its plan: a one-line report; AssertionError if they differ."""
    expected = plan(notebook, profile)
    made = Counter((r["train_examples"], r["epochs"], r["evals_per_epoch"]) for r in run_log)
    if expected is None:
        return f"{len(run_log)} fine-tuning runs (no plan declared for {notebook})"
    if made != expected.counts():
        raise AssertionError(
            f"{notebook} ran {sum(made.values())} fine-tuning runs {dict(made)}, but ftcourse/plan.py plans "
            f"{expected.n_runs} {dict(expected.counts())} (keys: train examples, epochs, evaluations an epoch): "
            "update the plan with the notebook")
    return f"{len(run_log)} fine-tuning runs, as planned in ftcourse/plan.py"
