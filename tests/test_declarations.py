"""ftcourse.course.declarations: every notebook declares its runs as recipes in every profile; the cost model, the
cell announcements and the check of what a notebook ran against its declaration."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from ftcourse.course import declarations as declared
from ftcourse.course.notebook import read_footer
from ftcourse.course.profiles import PROFILE_NAMES, PROFILES
from ftcourse.course.recipes import Recipe

NOTEBOOKS = [f"{n:02d}" for n in range(1, 14)]
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def fast_bf16(monkeypatch):
    """Declarations as on the reference machine, whatever CPU runs the tests (04 depends on it)."""
    monkeypatch.setattr(declared, "fast_low_precision", lambda: True)


def made(runs, **overrides):
    """Run records as runner.runs_made() keeps them, for these declared runs."""
    return [{"label": r.label, "key": r.recipe.key(), "recipe": r.recipe.changes(), "custom": ["x"] if r.custom else [],
             **overrides} for r in runs]


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_declares_its_runs_comparisons_and_canaries(notebook, profile):
    d = declared.declaration(notebook, PROFILES[profile])
    assert d is not None and d.notebook.startswith(notebook)
    assert (NOTEBOOK_DIR / f"{d.notebook}.ipynb").exists()  # the name is the notebook's file
    assert d.runs() and d.other_work_s >= 0
    assert len(d.canaries) == 2 and all(c.total_steps() <= declared.CANARY_MAX_STEPS for c in d.canaries)
    # 13 in gpu runs its processes on Colab's CPUs, with the cpu profile's model (its note says so)
    model_id = PROFILES["cpu" if d.note.startswith("CPU processes") else profile].model_id
    for run in d.runs():
        assert isinstance(run.recipe, Recipe) and run.recipe.model_id == model_id
    seconds = declared.seconds(d)
    assert math.isfinite(seconds) and seconds > 0


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_declarations_count_the_runs_the_committed_notebooks_made(notebook):
    # the committed notebooks ran on the reference machine (native bf16: fast_low_precision() is True there, as in
    # the fixture); a notebook committed before its declaration changed fails here until it is executed again
    path = next(NOTEBOOK_DIR.glob(f"{notebook}_*.ipynb"))
    footer = read_footer(path)
    assert footer, f"{path.name} has no footer in its committed outputs"
    from ftcourse.course.bank import BANK_PROFILE, load_records

    d = declared.declaration(notebook, PROFILES[footer["profile"]])
    live = declared.expected_live_runs(d, set(load_records()), BANK_PROFILE, footer["profile"])  # banked: its canaries
    assert live.n_runs == footer["runs"], path.name


def test_identical_recipes_are_one_run():
    cpu = PROFILES["cpu"]
    base = Recipe(train_size=64, epochs=1)
    d = declared.Declaration("01_baseline", (declared.Arm("a", base, (0, 1)), declared.Arm("b", base, (1, 2))))
    assert d.n_runs == 3  # seed 1 of b is seed 1 of a
    custom = declared.Declaration("01_baseline", (declared.Arm("a", base, (0,)), declared.Arm("b", base, (0,), custom="hook")))
    assert custom.n_runs == 2  # code beside the recipe makes another run
    # and across notebooks: 01's baseline is the run every other notebook's baseline recipe names
    assert declared.declaration("01", cpu).runs()[0].recipe.key() == Recipe(seed=0).key()


def test_check_runs_accepts_the_declaration_and_names_each_difference():
    cpu = PROFILES["cpu"]
    d = declared.declaration("06", cpu)
    records = made(d.runs())
    assert declared.check_runs(d, records) == []
    assert declared.check_runs(d, records[::-1]) == []  # order does not matter
    missing = declared.check_runs(d, records[1:])
    first = d.runs()[0]
    assert missing == [f"declared, not run: {first.label} ({first.recipe.describe()})"]
    other_seed = dict(records[0], key=d.runs()[0].recipe.replace(seed=99).key(),
                      recipe=d.runs()[0].recipe.replace(seed=99).changes())
    lines = declared.check_runs(d, [other_seed, *records[1:]])
    assert len(lines) == 2 and lines[1].startswith(f"run, not declared: {first.label} (") and "seed=99" in lines[1]
    # a custom run does not stand in for the plain run of the same recipe
    assert declared.check_runs(d, [dict(records[0], custom=["callbacks"]), *records[1:]]) != []


def test_a_chosen_lr_matches_any_value_of_its_grid_and_nothing_else():
    # an lr swept on one seed, then chosen for the others while the notebook runs (no banked notebook chooses live)
    base = Recipe(train_size=320, epochs=1)
    d = declared.Declaration("xx_choice", (declared.Arm("sweep", base.replace(lr=1e-4), (100,)),
                                           declared.Arm("chosen", base.replace(lr=1e-4), (0, 1),
                                                        choice=declared.Choice("lr", (1e-4, 3e-4)))))
    runs = d.runs()
    chosen = [r for r in runs if r.choice is not None]
    assert chosen and all(r.choice.field == "lr" for r in chosen)
    records = made(runs)
    for i, r in enumerate(runs):
        if r.choice is not None:
            other = r.recipe.replace(lr=r.choice.values[-1])
            records[i] = dict(records[i], key=other.key(), recipe=other.changes())
    assert declared.check_runs(d, records) == []
    off_grid = [dict(rec, recipe={**rec["recipe"], "lr": 0.5}, key="r1-x") if r.choice else rec
                for r, rec in zip(runs, records)]
    assert declared.check_runs(d, off_grid) != []


def test_cells_select_their_arms_and_reject_a_typo():
    cpu, ci = PROFILES["cpu"], PROFILES["ci"]
    schedules = declared.declaration("06", cpu)
    assert {a.cell_name for a in schedules.group("lr sweep", "comparison")} == {"lr sweep", "comparison"}
    assert schedules.group("ReduceLROnPlateau") == ()  # switched off in cpu (plateau_runs=0): a known cell
    assert len(declared.declaration("06", ci).group("ReduceLROnPlateau")) == 1
    with pytest.raises(KeyError, match="declares no cell"):
        schedules.group("sweep")


def test_announce_counts_the_new_runs_and_their_minutes(capsys):
    cpu = PROFILES["cpu"]
    d = declared.declaration("08", cpu)
    assert declared.announce(d, "pilot") is None  # a cell ending with it shows the line once
    text = capsys.readouterr().out.strip()
    runs = d.new_runs("pilot")
    seconds = sum(declared.run_seconds(r, declared.REFERENCE_TRAIN_PER_S, declared.REFERENCE_EVAL_PER_S,
                                       declared.REFERENCE_RUN_OVERHEAD_S) for r in runs)
    assert text.startswith(f"this cell runs {len(runs)} fine-tuning runs (320 examples x 3 epochs)")
    assert f"about {max(1, round(seconds / 60))} min" in text


def test_a_cell_made_only_of_reused_runs_is_announced_as_such(capsys):
    ci = PROFILES["ci"]
    declared.announce(declared.declaration("05", ci), "seven optimizers at their chosen lrs")
    assert "no new fine-tuning run" in capsys.readouterr().out
    declared.announce(declared.declaration("05", PROFILES["cpu"]), "seven optimizers at their chosen lrs")
    assert "this cell runs 6 fine-tuning runs" in capsys.readouterr().out


def test_run_seconds_follow_the_recipe():
    small = declared.DeclaredRun("a", Recipe(train_size=320, epochs=3, evals_per_epoch=1, val_size=128), None, "", False)
    full = declared.DeclaredRun("a", Recipe(train_size=320, epochs=3, evals_per_epoch=1), None, "", False)
    a, b = (declared.run_seconds(r, 100.0, 300.0, 4.0) for r in (small, full))
    assert b - a == pytest.approx(3 * (872 - 128) / 300.0)
    with_pass = declared.DeclaredRun("a", full.recipe, None, "", True)
    assert declared.run_seconds(with_pass, 100.0, 300.0, 4.0) - b == pytest.approx(872 / 300.0)


def test_budgets_live_in_one_place():
    assert declared.budget_minutes("05_optimizers_from_scratch", "cpu") == 15
    assert declared.budget_minutes("06", "cpu") == 10 and declared.budget_minutes("06", "ci") == 2
    assert declared.budget_minutes("11", "gpu") == 20
    with pytest.raises(ValueError, match="profile_name must be one of"):
        declared.budget_minutes("06", "laptop")


def test_ci_has_its_own_other_work():
    # the ci figures come from a ci run, not the cpu footers: 03's cpu figure would double its ci estimate
    assert declared.declaration("03", PROFILES["ci"]).other_work_s < declared.declaration("03", PROFILES["cpu"]).other_work_s
    assert declared.declaration("03", PROFILES["gpu"]).other_work_s == declared.declaration("03", PROFILES["cpu"]).other_work_s


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_gpu_profile_fits_a_workshop_slot_on_a_t4(notebook):
    # at the T4 throughput the declarations module assumes (derived from published figures; unmeasured here),
    # every notebook of the gpu profile fits its 20-minute slot
    from ftcourse.course.bank import BANK_PROFILE, load_records

    d = declared.declaration(notebook, PROFILES["gpu"])
    live = declared.expected_live_runs(d, set(load_records()), BANK_PROFILE, "gpu")  # banked: analyses the cpu bank
    if d.note.startswith("CPU processes"):  # Colab's CPUs, not the T4: the reference machine's throughput
        seconds = declared.seconds(live)
    else:
        seconds = declared.seconds(live, declared.T4_TRAIN_PER_S, declared.T4_EVAL_PER_S, declared.T4_RUN_OVERHEAD_S)
    assert seconds <= declared.budget_minutes(notebook, "gpu") * 60, f"{notebook}: {seconds / 60:.1f} min"


def test_slow_low_precision_declares_one_fp32_model():
    # a CPU that emulates bf16: 04 skips the comparison and trains the one model its inference section needs
    d = declared.declaration("04", PROFILES["cpu"], fast=False)
    assert d.n_runs == 1 and d.runs()[0].recipe.precision is None
    assert "low precision" in d.cells and d.group("low precision") == ()


def test_a_declaration_refuses_long_canaries_and_unknown_arms():
    long = Recipe(train_size=16 * 61, epochs=1)
    with pytest.raises(ValueError, match="canary runs 61 optimizer steps"):
        declared.Declaration("01_baseline", (declared.Arm("a", long, (0,)),), canaries=(long,))
    with pytest.raises(ValueError, match="undeclared arm"):
        declared.Declaration("01_baseline", (declared.Arm("a", long, (0,)),), comparisons=(declared.Comparison("a", "b"),))
    with pytest.raises(ValueError, match="margin"):
        declared.Comparison("a", "b", "equivalence")
    with pytest.raises(ValueError, match="kind must be one of"):
        declared.Comparison("a", "b", "t-test")


def test_a_banked_notebook_runs_its_canaries_and_what_the_bank_lacks():
    cpu, ci = PROFILES["cpu"], PROFILES["ci"]
    d = declared.declaration("01", cpu)
    assert d.banked
    everything = {r.recipe.key() for r in d.runs()} | {c.key() for c in d.canaries}
    stored_all = declared.expected_live_runs(d, everything, "cpu", "cpu")
    assert [r.label for r in stored_all.runs()] == ["canary 1", "canary 2"]
    missing_one = declared.expected_live_runs(d, everything - {d.runs()[0].recipe.key()}, "cpu", "cpu")
    assert missing_one.n_runs == 3  # in cpu a run the bank lacks runs live
    in_ci = declared.expected_live_runs(declared.declaration("01", ci), set(), "cpu", "ci")
    assert [r.recipe.train_size for r in in_ci.runs()] == [320, 320]  # ci: its own small canaries only
    unbanked = declared.declaration("05", cpu)
    assert declared.expected_live_runs(unbanked, everything, "cpu", "cpu") is unbanked


def test_recipes_of_a_cell_are_its_arms_recipes_in_order():
    from ftcourse.course.profiles import PROFILES

    d = declared.declaration("11", PROFILES["cpu"])
    rows = d.recipes("cumulative table")
    assert list(rows) == ["baseline, no warmup", "+ warmup", "+ LLRD", "+ re-init", "+ SWA"]
    assert rows["+ SWA"].swa_start == 0.75 and rows["+ re-init"].swa_start is None
    assert rows == declared.combined_recipes(PROFILES["cpu"])
    with pytest.raises(KeyError, match="declares no cell"):
        d.recipes("no such cell")
