"""ftcourse.course.estimate: predictions from the declarations at a given throughput, saved and compared with measured
times (notebook footers or the nbval times conftest.py writes). The measurement itself needs the model: not here."""
from __future__ import annotations

import json

import pytest

from ftcourse.course import estimate as ftestimate
from ftcourse.course import declarations as declared
from ftcourse.course.notebook import FOOTER_MIME
from ftcourse.course.notebook import read_footer
from ftcourse.course.profiles import PROFILES

THROUGHPUT = ftestimate.Throughput("cpu", "fp32", train_per_s=100.0, eval_per_s=250.0, overhead_s=5.0)


@pytest.fixture(autouse=True)
def fast_bf16(monkeypatch):
    monkeypatch.setattr(declared, "fast_low_precision", lambda: True)


def footer_notebook(path, seconds, profile="cpu"):
    facts = {"notebook": path.stem, "profile": profile, "seconds": seconds, "runs": 3, "machine": "CPU test, 2 threads",
             "versions": "python 3"}
    cells = [{"cell_type": "code", "source": "notebook_footer()", "metadata": {}, "execution_count": 1,
              "outputs": [{"output_type": "display_data", "metadata": {},
                           "data": {"text/plain": "elapsed: ...", FOOTER_MIME: facts}}]}]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


@pytest.mark.parametrize("profile", ["ci", "cpu"])
def test_table_applies_the_declarations_at_the_throughput(profile):
    p = PROFILES[profile]
    frame = ftestimate.table(p, THROUGHPUT)
    for number in declared.DECLARATIONS:
        d = declared.declaration(number, p)
        expected = declared.seconds(d, 100.0, 250.0, 5.0) / 60
        assert frame.loc[d.notebook, "predicted min"] == pytest.approx(expected)
        assert frame.loc[d.notebook, "runs"] == d.n_runs
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


@pytest.mark.parametrize("n_batches,steps,windows", [(100, 15, 3), (40, 15, 3), (10, 15, 3), (7, 1, 1), (500, 20, 5)])
def test_timing_windows_span_the_epoch_on_different_batches(n_batches, steps, windows):
    chosen = ftestimate.window_batches(n_batches, steps, windows)
    assert len(chosen) == windows
    for indices in chosen:
        assert 0 < len(indices) <= steps and all(0 <= i < n_batches for i in indices)
        assert indices == sorted(indices)
        if n_batches > steps:  # from the epoch's first (longest) batches to its last ones, evenly
            spacing = n_batches / steps
            assert indices[0] < spacing and indices[-1] >= n_batches - 1 - spacing
    if n_batches / steps >= windows:  # room for distinct offsets: no batch timed twice
        flat = [i for indices in chosen for i in indices]
        assert len(flat) == len(set(flat))


def test_timing_windows_reject_empty_windows():
    with pytest.raises(ValueError, match="steps and windows"):
        ftestimate.window_batches(100, 0, 3)
    with pytest.raises(ValueError, match="windows"):
        ftestimate.window_batches(100, 10, 0)


def test_one_slow_window_does_not_move_the_median_rate():
    # the a794a7d CI: one busy window at 52/s among normal ones at 75/s
    assert ftestimate.median_rate([750, 520, 760], [10.0, 10.0, 10.0]) == pytest.approx(75.0)
    assert ftestimate.median_rate([600], [8.0]) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="one length"):
        ftestimate.median_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        ftestimate.median_rate([], [])
