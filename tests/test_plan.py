"""ftcourse.plan: every notebook declares its fine-tuning runs in every profile, and the cpu plans match the
runs the executed notebooks' footers counted."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from ftcourse import plan as ftplan
from ftcourse.profiles import PROFILE_NAMES, PROFILES

NOTEBOOKS = [f"{n:02d}" for n in range(1, 12)]
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

# The runs of the cpu footers ("fine-tuning runs: N (train examples x epochs x evaluations an epoch: ...)") of
# notebooks executed with the current profiles. 04's ran on the reference machine, whose native bf16 passes
# min_speed_ratio (fast_low_precision() is True there). 03's footer (15 of 1600x1x1) predates the profile's
# 2,240 examples and 5 seeds, so it is not here.
CPU_FOOTERS = {
    "04": Counter({(1600, 1, 1): 10}),  # elapsed 378 s
    "05": Counter({(960, 1, 1): 30}),  # elapsed 803 s
    "06": Counter({(1280, 1, 1): 16, (1280, 1, 4): 3}),  # elapsed 602 s
    "07": Counter({(1000, 1, 1): 20}),  # elapsed 527 s
    "09": Counter({(800, 2, 1): 8}),  # elapsed 444 s
    "10": Counter({(400, 4, 2): 5}),  # elapsed 375 s
    "11": Counter({(1000, 1, 1): 15, (1000, 1, 4): 3, (1000, 2, 1): 6}),  # elapsed 781 s
}


@pytest.fixture(autouse=True)
def fast_bf16(monkeypatch):
    """Plans as on the reference machine, whatever CPU runs the tests (04 depends on it)."""
    monkeypatch.setattr(ftplan, "fast_low_precision", lambda: True)


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_has_a_plan(notebook, profile):
    p = ftplan.plan(notebook, PROFILES[profile])
    assert p is not None and p.notebook.startswith(notebook)
    assert (NOTEBOOK_DIR / f"{p.notebook}.ipynb").exists()  # the name is the notebook's file
    assert p.runs and p.extra_s >= 0
    for runs in p.runs:
        for value in (runs.count, runs.train_examples, runs.epochs, runs.evals_per_epoch):
            assert isinstance(value, int) and not isinstance(value, bool) and value > 0, runs
    seconds = ftplan.seconds(p, PROFILES[profile])
    assert math.isfinite(seconds) and seconds > 0


@pytest.mark.parametrize("notebook", sorted(CPU_FOOTERS))
def test_cpu_plans_match_the_footers(notebook):
    assert ftplan.plan(notebook, PROFILES["cpu"]).counts() == CPU_FOOTERS[notebook]


def test_check_runs_accepts_the_plan_and_rejects_a_difference():
    cpu = PROFILES["cpu"]
    log = [{"train_examples": n, "epochs": e, "evals_per_epoch": v}
           for (n, e, v), count in ftplan.plan("06", cpu).counts().items() for _ in range(count)]
    assert "as planned" in ftplan.check_runs("06_lr_schedules", cpu, log)
    with pytest.raises(AssertionError, match="update the plan"):
        ftplan.check_runs("06_lr_schedules", cpu, log[1:])


def test_slow_low_precision_trains_one_fp32_model(monkeypatch):
    # a CPU that emulates bf16: 04 skips the comparison and trains the one model its inference section needs
    monkeypatch.setattr(ftplan, "fast_low_precision", lambda: False)
    assert ftplan.plan("04", PROFILES["cpu"]).counts() == Counter({(1600, 1, 1): 1})


def test_optimizers_reuse_runs_in_ci():
    # ci: every stage has the same sizes, so AdamW's sweep run and the whole comparison (seed 0) are reused
    assert ftplan.plan("05", PROFILES["ci"]).counts() == Counter({(64, 1, 1): 4 + 6})


def test_a_smaller_validation_set_costs_less():
    runs = ftplan.Runs("curves", 1, 320, 3, 1)
    small = ftplan.Runs("curves", 1, 320, 3, 1, val_examples=128)
    full, subset = (ftplan.run_seconds(r, 872, 1821, 100.0, 300.0, 4.0) for r in (runs, small))
    assert full - subset == pytest.approx(3 * (872 - 128) / 300.0)
