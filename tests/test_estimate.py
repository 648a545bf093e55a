"""ftcourse.estimate: predictions from the plans at a given throughput, saved and compared with measured times
(notebook footers or the nbval times conftest.py writes). The measurement itself needs the model: not here."""
from __future__ import annotations

import json

import pytest

from ftcourse import estimate as ftestimate
from ftcourse import plan as ftplan
from ftcourse.notebook import read_footer
from ftcourse.profiles import PROFILES

THROUGHPUT = ftestimate.Throughput("cpu", "fp32", train_per_s=100.0, eval_per_s=250.0, overhead_s=5.0)


@pytest.fixture(autouse=True)
def fast_bf16(monkeypatch):
    monkeypatch.setattr(ftplan, "fast_low_precision", lambda: True)


def footer_notebook(path, seconds, profile="cpu"):
    text = (f"elapsed: {seconds / 60:.1f} min ({seconds} s) in the {profile} profile\n"
            "fine-tuning runs: 3 (train examples x epochs x evaluations an epoch: 64x1x1: 3)\n"
            "machine: CPU test, 2 threads\nversions: python 3\n")
    cells = [{"cell_type": "code", "source": "notebook_footer()", "metadata": {}, "execution_count": 1,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


@pytest.mark.parametrize("profile", ["ci", "cpu"])
def test_table_applies_the_plans_at_the_throughput(profile):
    p = PROFILES[profile]
    frame = ftestimate.table(p, THROUGHPUT)
    for number in ftplan.PLANS:
        plan = ftplan.plan(number, p)
        expected = ftplan.seconds(plan, p, 100.0, 250.0, 5.0) / 60
        assert frame.loc[plan.notebook, "predicted min"] == pytest.approx(expected)
        assert frame.loc[plan.notebook, "runs"] == plan.n_runs
    assert frame.loc["all notebooks", "predicted min"] == pytest.approx(frame["predicted min"].iloc[:-1].sum())


def test_a_faster_device_predicts_less():
    fast = ftestimate.Throughput("cuda", "fp16", 1000.0, 2500.0, 2.0)
    slow, quick = (ftestimate.table(PROFILES["cpu"], t)["predicted min"] for t in (THROUGHPUT, fast))
    assert (quick < slow).all()


def test_save_then_compare_with_nbval_times(tmp_path):
    profile = PROFILES["ci"]
    frame = ftestimate.table(profile, THROUGHPUT)
    ftestimate.save(tmp_path / "estimate.json", profile, THROUGHPUT, frame)
    saved = json.loads((tmp_path / "estimate.json").read_text())
    assert saved["profile"] == "ci" and saved["throughput"]["train_per_s"] == 100.0
    predicted = saved["predicted_s"]["07_llrd"]
    (tmp_path / "times.json").write_text(json.dumps({"notebooks/07_llrd.ipynb": predicted / 2,
                                                     "notebooks/08_reinit.ipynb": 60.0}))
    _, comparison = ftestimate.compare(tmp_path / "estimate.json", tmp_path / "times.json")
    assert list(comparison.index) == ["07_llrd", "08_reinit"]  # only the notebooks measured
    assert comparison.loc["07_llrd", "error"] == pytest.approx(1.0, abs=0.01)  # predicted twice the measured
    table = ftestimate.markdown(comparison)
    assert table.splitlines()[0].startswith("| notebook | runs | predicted (min) | measured (min) | error |")
    assert "| 07_llrd |" in table and table.splitlines()[-1].startswith("| all |")


def test_compare_with_footers_keeps_the_profile_of_the_estimate(tmp_path):
    profile = PROFILES["cpu"]
    ftestimate.save(tmp_path / "estimate.json", profile, THROUGHPUT, ftestimate.table(profile, THROUGHPUT))
    notebooks = tmp_path / "executed"
    notebooks.mkdir()
    footer_notebook(notebooks / "01_baseline.ipynb", 400)
    footer_notebook(notebooks / "02_gradient_accumulation.ipynb", 90, profile="ci")  # another profile: left out
    assert read_footer(notebooks / "01_baseline.ipynb")["seconds"] == 400
    _, comparison = ftestimate.compare(tmp_path / "estimate.json", notebooks)
    assert list(comparison.index) == ["01_baseline"]
    assert comparison.loc["01_baseline", "measured (min)"] == pytest.approx(400 / 60)


def test_bad_arguments_name_the_option(tmp_path, capsys):
    with pytest.raises(ValueError, match="--compare"):
        ftestimate.compare(tmp_path / "missing.json", tmp_path)
    profile = PROFILES["ci"]
    ftestimate.save(tmp_path / "estimate.json", profile, THROUGHPUT, ftestimate.table(profile, THROUGHPUT))
    with pytest.raises(ValueError, match="--measured"):
        ftestimate.compare(tmp_path / "estimate.json", tmp_path / "times.csv")
    with pytest.raises(ValueError, match="no measured time"):
        ftestimate.compare(tmp_path / "estimate.json", tmp_path)  # a folder without executed notebooks
    assert ftestimate.main(compare_path=tmp_path / "estimate.json") == 2
    assert "go together" in capsys.readouterr().err
    assert ftestimate.main(compare_path=tmp_path / "missing.json", measured=tmp_path) == 2


def test_read_footer_of_a_notebook_without_one(tmp_path):
    path = tmp_path / "01_baseline.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "outputs": []}],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert read_footer(path) == {}
