"""ftcourse.stats: each test checks the statistics against scipy, a direct computation or a simulation."""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from conftest import metric_results

from ftcourse.stats import (bootstrap_diff, compare, effect_text, format_effect, holm, mcnemar, paired_t,
                            seeds_for_half_width, seeds_needed)

# ---------------------------------------------------------------------------------------------- paired_t


@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("rep", range(3))
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_paired_t_equals_scipy_ttest_rel(n, rep, confidence):
    rng = np.random.default_rng(100 * n + rep)
    a = rng.normal(0.9, 0.01, n)
    b = a - rng.normal(0.003, 0.005, n)
    got = paired_t(a, b, confidence=confidence)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence)
    assert got["n"] == n
    assert_allclose(got["mean"], np.mean(a - b), rtol=1e-12)
    assert_allclose(got["p_value"], ref.pvalue, rtol=1e-10)
    assert_allclose([got["low"], got["high"]], [ci.low, ci.high], rtol=1e-10)
    assert_allclose(got["mean"] / got["se"], ref.statistic, rtol=1e-10)


def test_paired_t_uses_t_not_z_at_three_seeds():
    a, b = np.array([0.91, 0.92, 0.95]), np.array([0.90, 0.90, 0.90])
    got = paired_t(a, b)
    half = (got["high"] - got["low"]) / 2
    assert_allclose(half / got["se"], stats.t.ppf(0.975, 2), rtol=1e-12)  # 4.30, not 1.96


def test_paired_t_errors():
    with pytest.raises(ValueError, match="at least 2"):
        paired_t([0.9], [0.8])
    with pytest.raises(ValueError, match="same length"):
        paired_t([0.9, 0.8, 0.7], [0.8, 0.7])
    with pytest.raises(ValueError, match="confidence"):
        paired_t([0.9, 0.8], [0.8, 0.7], confidence=95)
    with pytest.raises(ValueError, match="finite"):
        paired_t([0.9, np.nan], [0.8, 0.7])


def test_paired_t_zero_variance_is_explicit():
    a = np.array([0.9, 0.91, 0.93])
    same = paired_t(a, a.copy())
    assert same["p_value"] == 1.0 and same["low"] == same["high"] == same["mean"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(stats.ttest_rel(a, a.copy()).pvalue)  # what scipy returns there
    # a constant shift of 0.01: the float differences differ by a few ulps, still "zero variance"
    shifted = paired_t(a, a - 0.01)
    assert shifted["p_value"] == 0.0
    assert shifted["low"] == shifted["high"] == shifted["mean"]
    assert_allclose(shifted["mean"], 0.01, rtol=1e-12)
    neg = paired_t([1.0, 2.0], [2.0, 3.0])
    assert neg["p_value"] == 0.0 and neg["low"] == neg["high"] == -1.0


# ---------------------------------------------------------------------------------------------- mcnemar


def test_mcnemar_hand_computed_and_scipy():
    # 8 examples only a gets right, 2 only b: p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56 / 1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 30 + [0] * 5)
    b = np.array([0] * 8 + [1] * 2 + [1] * 30 + [0] * 5)
    got = mcnemar(a, b)
    assert (got["n10"], got["n01"], got["n"]) == (8, 2, 45)
    assert_allclose(got["p_value"], 112 / 1024, rtol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.random(300) < 0.8, rng.random(300) < 0.75
        res = mcnemar(x, y)
        n10, n01 = int(np.sum(x & ~y)), int(np.sum(~x & y))
        assert (res["n10"], res["n01"]) == (n10, n01)
        assert_allclose(res["p_value"], stats.binomtest(n10, n10 + n01, 0.5).pvalue, rtol=1e-12)


def test_mcnemar_no_discordant_pairs_and_bool_equals_int():
    x = np.array([True, False, True, True])
    assert mcnemar(x, x)["p_value"] == 1.0
    y = np.array([False, False, True, False])
    assert mcnemar(x, y) == mcnemar(x.astype(int), y.astype(np.int64)) == mcnemar(x.astype(float), y)


def test_mcnemar_errors():
    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([1, 2, 0], [1, 0, 0])
    with pytest.raises(TypeError, match="bool or 0/1"):
        mcnemar(["a", "b"], ["a", "b"])


# ---------------------------------------------------------------------------------------------- holm


def _holm_reference(p):
    """Holm from its definition, one hypothesis at a time."""
    p = np.where(np.isnan(p), 1.0, np.asarray(p, dtype=float))
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    out = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out


def test_holm_hand_worked():
    assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert_allclose(holm([0.01, np.nan]), [0.02, 1.0])  # NaN counts in m, as 1.0
    assert_allclose(holm([0.02]), [0.02])
    assert holm([]).shape == (0,)


def test_holm_matches_definition_and_is_monotone():
    rng = np.random.default_rng(3)
    for m in (2, 5, 17):
        p = rng.random(m) ** 3
        adj = holm(p)
        assert_allclose(adj, _holm_reference(p), rtol=1e-12)
        assert np.all(adj >= p) and np.all(adj <= 1.0)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


# ---------------------------------------------------------------------------------------------- seeds_needed


def _brute_force_n(std_diff, effect, power, alpha):
    for n in range(3, 10_000):  # no verdict below 3 seeds
        t_crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = effect / std_diff * math.sqrt(n)
        if stats.nct.sf(t_crit, n - 1, nc) + stats.nct.cdf(-t_crit, n - 1, nc) >= power:
            return n
    raise AssertionError("not found")


@pytest.mark.parametrize("std_diff, effect, power, alpha",
                         [(1.0, 0.5, 0.8, 0.05), (0.004, 0.003, 0.8, 0.05), (0.01, -0.004, 0.9, 0.05),
                          (1.0, 3.0, 0.8, 0.05), (0.02, 0.005, 0.8, 0.01), (1.0, 0.05, 0.8, 0.05)])
def test_seeds_needed_matches_brute_force_nct(std_diff, effect, power, alpha):
    assert seeds_needed(std_diff, effect, power=power, alpha=alpha) == _brute_force_n(std_diff, abs(effect), power, alpha)


def test_seeds_needed_known_values():
    # standard paired/one-sample t planning values (two-sided, alpha 0.05, power 0.8): d = 0.5 -> 34, d = 1 -> 10
    assert seeds_needed(1.0, 0.5) == 34
    assert seeds_needed(2.0, 2.0) == 10
    assert seeds_needed(1.0, 100.0) == 3  # 2 would do at this effect, but no verdict below 3 seeds


def test_seeds_needed_monte_carlo_power():
    std_diff, effect, power, sims, tol = 1.0, 0.8, 0.8, 20_000, 0.015
    n = seeds_needed(std_diff, effect, power=power)
    rng = np.random.default_rng(11)

    def rejection_rate(k):
        d = rng.normal(effect, std_diff, size=(sims, k))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(k))
        return np.mean(np.abs(t) > stats.t.ppf(0.975, k - 1))

    assert rejection_rate(n) >= power - tol
    assert rejection_rate(n - 1) < power + tol


def test_seeds_needed_errors():
    with pytest.raises(ValueError, match="std_diff"):
        seeds_needed(0.0, 0.1)
    with pytest.raises(ValueError, match="effect"):
        seeds_needed(1.0, 0.0)
    with pytest.raises(ValueError, match="power"):
        seeds_needed(1.0, 0.1, power=1.0)
    with pytest.raises(ValueError, match="alpha"):
        seeds_needed(1.0, 0.1, alpha=0.0)
    with pytest.raises(ValueError, match="100,000"):
        seeds_needed(1.0, 1e-3)


def test_seeds_needed_monotone_in_std_never_nan_at_least_3():
    """The former counter-example: std 0.0004 gave 4 seeds and 0.0005 gave 3 (scipy's NaN power)."""
    assert seeds_needed(0.0004, 0.01) == 3
    assert seeds_needed(0.0005, 0.01) == 3
    grid = np.geomspace(1e-4, 0.05, 300)
    ns = np.array([seeds_needed(s, 0.01) for s in grid])
    assert ns.min() == 3 and ns[0] == 3
    assert np.all(np.diff(ns) >= 0), grid[1:][np.diff(ns) < 0]
    assert ns[-1] > 150  # 0.01 at sd 0.05 (d = 0.2) needs ~199 seeds: the grid spans the interesting range
    # the same in the effect: larger effects never need more seeds
    ns_e = [seeds_needed(0.01, e) for e in np.geomspace(0.002, 2.0, 200)]
    assert np.all(np.diff(ns_e) <= 0) and ns_e[-1] == 3


def test_t_power_reads_scipy_nan_tail_as_zero():
    from ftcourse.stats import _t_power
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = stats.nct.cdf(-stats.t.ppf(0.975, 2), 2, 40.0)
    nc = np.linspace(0, 60, 601)
    power = _t_power(2, nc, 0.05)
    assert np.isfinite(power).all() and np.all(np.diff(power) >= -1e-12)
    assert_allclose(power[0], 0.05, rtol=1e-9)  # size of the test at nc = 0
    if np.isnan(raw):  # scipy 1.17 returns NaN here; the power must not
        assert_allclose(_t_power(2, 40.0, 0.05), stats.nct.sf(stats.t.ppf(0.975, 2), 2, 40.0), rtol=1e-12)


def test_seeds_for_half_width_direct():
    for std_diff, hw, conf in [(0.01, 0.005, 0.95), (0.004, 0.001, 0.95), (1.0, 0.3, 0.9), (1.0, 5.0, 0.95), (1.0, 10.0, 0.95)]:
        n = seeds_for_half_width(std_diff, hw, confidence=conf)
        q = 0.5 + conf / 2
        assert stats.t.ppf(q, n - 1) * std_diff / math.sqrt(n) <= hw
        if n > 3:
            assert stats.t.ppf(q, n - 2) * std_diff / math.sqrt(n - 1) > hw
    assert seeds_for_half_width(1.0, 5.0) == 3  # t_{1, 0.975} / sqrt(2) = 8.98 > 5
    assert seeds_for_half_width(1.0, 9.0) == 3  # 2 would do, but no verdict below 3 seeds
    assert seeds_for_half_width(0.0, 0.01) == 3
    with pytest.raises(ValueError, match="half_width"):
        seeds_for_half_width(1.0, 0.0)
    with pytest.raises(ValueError, match="100,000"):
        seeds_for_half_width(1.0, 1e-4)


# ---------------------------------------------------------------------------------------------- bootstrap


def _correct_pair(rng, S, E, p_a=0.9, p_b=0.88):
    return rng.random((S, E)) < p_a, rng.random((S, E)) < p_b


def test_bootstrap_deterministic_observed_mean_and_one_seed():
    a, b = _correct_pair(np.random.default_rng(0), 5, 300)
    r1, r2 = bootstrap_diff(a, b, n_boot=2000, seed=4), bootstrap_diff(a, b, n_boot=2000, seed=4)
    assert r1 == r2
    assert bootstrap_diff(a, b, n_boot=2000, seed=5)["low"] != r1["low"]
    assert_allclose(r1["mean"], a.mean() - b.mean(), rtol=1e-12)
    assert r1["low"] < r1["mean"] < r1["high"]
    assert (r1["n_seeds"], r1["n_examples"]) == (5, 300)
    one = bootstrap_diff(a[0], b[0].astype(int), n_boot=2000)
    assert one["n_seeds"] == 1
    assert_allclose(one["mean"], a[0].mean() - b[0].mean(), rtol=1e-12)
    assert one["low"] < one["mean"] < one["high"]
    zero = bootstrap_diff(a, a, n_boot=100)
    assert zero["low"] == zero["high"] == zero["mean"] == 0.0


def test_bootstrap_matches_direct_index_resampling():
    """The w_s^T D w_e shortcut has the distribution of resampling rows and columns directly."""
    rng = np.random.default_rng(1)
    S, E, B = 4, 60, 20_000
    a = rng.random((S, E)) < np.linspace(0.6, 0.95, S)[:, None]
    b = rng.random((S, E)) < 0.8
    D = a.astype(float) - b
    direct = np.array([D[np.ix_(rng.integers(0, S, S), rng.integers(0, E, E))].mean() for _ in range(B)])
    got = bootstrap_diff(a, b, n_boot=B, seed=2)
    assert_allclose(got["se"], direct.std(ddof=1), rtol=0.04)
    assert_allclose([got["low"], got["high"]], np.quantile(direct, [0.025, 0.975]), atol=0.25 * got["se"])


def test_bootstrap_fast_at_course_size():
    a, b = _correct_pair(np.random.default_rng(2), 10, 1821)
    start = time.perf_counter()
    bootstrap_diff(a, b, n_boot=10_000)
    assert time.perf_counter() - start < 10.0  # ~0.3 s on one free core; S x E x B would be 1.4 GB


def _crossed_data(rng, S, E, delta, w=0.1, h=0.15):
    """Per-seed random effects + per-example effects + Bernoulli noise; true difference = delta.

    P(a right on (s, j)) = q_j + e_j + u_s, P(b right) = q_j + v_s, with q_j ~ U(0.3, 0.7), the
    per-example gain e_j ~ U(delta - w, delta + w) and run effects u_s, v_s ~ U(-h, h): all in
    (0, 1), so the population difference (over seeds and test sentences) is exactly delta.
    """
    q = rng.uniform(0.3, 0.7, E)
    e = rng.uniform(delta - w, delta + w, E)
    u, v = rng.uniform(-h, h, (S, 1)), rng.uniform(-h, h, (S, 1))
    return rng.random((S, E)) < q + e + u, rng.random((S, E)) < q + v


def test_bootstrap_coverage_two_level_vs_naive():
    rng = np.random.default_rng(123)
    S, E, delta, n_data, n_boot = 8, 200, 0.05, 200, 1000
    hits = naive_hits = 0
    for k in range(n_data):
        a, b = _crossed_data(rng, S, E, delta)
        r = bootstrap_diff(a, b, n_boot=n_boot, seed=k)
        hits += r["low"] <= delta <= r["high"]
        # naive: seeds fixed, only test examples resampled
        col = (a.astype(float) - b).mean(0)
        reps = col[rng.integers(0, E, size=(n_boot, E))].mean(1)
        lo, hi = np.quantile(reps, [0.025, 0.975])
        naive_hits += lo <= delta <= hi
    coverage, naive = hits / n_data, naive_hits / n_data
    assert 0.88 <= coverage <= 0.99, coverage
    assert naive < 0.8 and naive < coverage - 0.15, (naive, coverage)


def test_bootstrap_errors():
    a = np.ones((3, 10))
    with pytest.raises(ValueError, match="same shape"):
        bootstrap_diff(a, np.ones((3, 9)))
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_diff(a * 2, a)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_diff(a, a, n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_diff(a, a, confidence=1.5)
    with pytest.raises(ValueError, match="ndim"):
        bootstrap_diff(np.ones((2, 2, 2)), np.ones((2, 2, 2)))


# ---------------------------------------------------------------------------------------------- compare


def _results(effects, seeds=range(5), E=400, seed=0, seed_sd=0.01):
    """One row per (label, seed): correctness drawn around a shared example difficulty."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.5, 0.95, E)
    rows = []
    for label, effect in effects.items():
        for s in seeds:
            c = rng.random(E) < np.clip(q + effect + rng.normal(0, seed_sd), 0, 1)
            rows.append({"label": label, "seed": s, "test_accuracy": c.mean(), "test_correct": c})
    return pd.DataFrame(rows)


def test_compare_verdicts_and_columns():
    res = _results({"base": 0.0, "good": 0.15, "bad": -0.15})
    same = res[res.label == "base"].assign(label="same")  # identical runs: every difference is 0
    table = compare(pd.concat([res, same], ignore_index=True), baseline="base")
    assert table.index.name == "configuration"
    assert list(table.index) == ["good", "bad", "same"]
    assert list(table.columns) == ["reference", "n", "mean_a", "mean_b", "mean_diff", "low", "high", "half_width",
                                   "p_value", "adj_low", "adj_high", "p_adj", "m", "alpha", "mde", "verdict",
                                   "diverged", "diverged_reference", "boot_low", "boot_high", "note"]
    assert "p_holm" not in table.columns
    assert table.loc["good", "verdict"] == "better"
    assert table.loc["bad", "verdict"] == "worse"
    assert table.loc["same", "verdict"] == "no detectable difference"
    assert table.loc["same", "p_value"] == 1.0
    assert (table["reference"] == "base").all() and (table["n"] == 5).all()
    assert_allclose(table["mean_diff"], table["mean_a"] - table["mean_b"], atol=1e-12)
    assert_allclose(table["half_width"], (table["high"] - table["low"]) / 2)
    assert (table["note"] == "").all()
    good = res[res.label == "good"].test_accuracy.to_numpy() - res[res.label == "base"].test_accuracy.to_numpy()
    t = paired_t(res[res.label == "good"].test_accuracy, res[res.label == "base"].test_accuracy)
    assert_allclose(table.loc["good", ["mean_diff", "low", "high", "p_value"]].astype(float),
                    [good.mean(), t["low"], t["high"], t["p_value"]], rtol=1e-12)
    assert table.loc["good", "boot_low"] > 0 and table.loc["bad", "boot_high"] < 0


def test_compare_pairs_by_seed_not_row_order():
    res = _results({"base": 0.0, "x": 0.02, "y": 0.05}, seeds=[3, 1, 4, 15, 9])
    ref = compare(res, baseline="base", n_boot=500)
    shuffled = res.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert not shuffled.label.equals(res.label)
    pd.testing.assert_frame_equal(compare(shuffled, baseline="base", n_boot=500), ref)
    # pairing really is by seed: seed 3 of x minus seed 3 of base, whatever the rows
    x = res[res.label == "x"].set_index("seed").test_accuracy
    base = res[res.label == "base"].set_index("seed").test_accuracy.iloc[::-1]
    assert_allclose(ref.loc["x", "mean_diff"], (x - base).mean(), rtol=1e-12)


def test_compare_only_common_seeds():
    res = _results({"base": 0.0, "x": 0.02}, seeds=range(6))
    res = res[~((res.label == "x") & (res.seed == 0)) & ~((res.label == "base") & (res.seed == 5))]
    row = compare(res, baseline="base", n_boot=200).loc["x"]
    assert row["n"] == 4
    x = res[(res.label == "x") & res.seed.between(1, 4)].test_accuracy.mean()
    assert_allclose(row["mean_a"], x, rtol=1e-12)


def test_compare_bonferroni_across_rows():
    res = _results({"base": 0.0, "a": 0.01, "b": 0.03, "c": -0.02, "d": 0.0}, seed=5, seed_sd=0.02)
    table = compare(res, baseline="base", correct=None)
    m = 4
    assert (table["m"] == m).all() and (table["alpha"] == 0.05).all()
    assert_allclose(table["p_adj"], np.minimum(1.0, m * table["p_value"].to_numpy()), rtol=1e-12)
    base = res[res.label == "base"].set_index("seed").test_accuracy
    for lab in "abcd":
        x = res[res.label == lab].set_index("seed").test_accuracy
        t = paired_t(x, base, confidence=1 - 0.05 / m)
        assert_allclose(table.loc[lab, ["adj_low", "adj_high"]].astype(float), [t["low"], t["high"]], rtol=1e-12)
        u = paired_t(x, base, confidence=0.95)
        assert_allclose(table.loc[lab, ["low", "high"]].astype(float), [u["low"], u["high"]], rtol=1e-12)
    assert (table["adj_high"] - table["adj_low"] > table["high"] - table["low"]).all()
    assert "boot_low" not in table.columns


def test_compare_bootstrap_shown_beside_not_veto():
    """Every seed gains on the same 1-2 sentences: the t-test is sure, test-set resampling is not.

    The verdict follows the adjusted t interval (one rule); the note says the bootstrap disagrees.
    """
    E, seeds = 40, range(6)
    base = np.random.default_rng(0).random(E) < 0.8
    base[:2] = False
    rows = []
    for s in seeds:
        gain = base.copy()
        gain[0] = True
        gain[1] = s % 2 == 0
        for label, c in (("base", base), ("gain", gain)):
            rows.append({"label": label, "seed": s, "test_accuracy": c.mean(), "test_correct": c.copy()})
    res = pd.DataFrame(rows)
    plain = compare(res, baseline="base", correct=None).loc["gain"]
    assert plain["p_adj"] < 0.05 and plain["verdict"] == "better"
    row = compare(res, baseline="base").loc["gain"]
    assert row["p_adj"] < 0.05 and row["adj_low"] > 0 and row["boot_low"] <= 0 < row["boot_high"]
    assert row["verdict"] == "better"
    assert row["note"] == "the bootstrap interval (seeds and examples) includes 0 while the t interval excludes it"
    assert plain["note"] == ""




def test_compare_verdict_iff_adjusted_interval_excludes_0_iff_p_adj_below_alpha():
    rng = np.random.default_rng(2024)
    seen = {v: 0 for v in ("better", "worse", "no detectable difference")}
    for _ in range(150):
        n, m = int(rng.integers(3, 9)), int(rng.integers(1, 5))
        sd = float(rng.choice([0.002, 0.01]))
        alpha = float(rng.choice([0.05, 0.1]))
        effects = {f"c{i}": float(rng.normal(0, 1.5 * sd)) for i in range(m)}
        table = compare(metric_results(rng, n, effects, sd), baseline="base", correct=None, alpha=alpha)
        for _, row in table.iterrows():
            excludes = row["adj_low"] > 0 or row["adj_high"] < 0
            decided = row["verdict"] in ("better", "worse")
            assert decided == excludes == (row["p_adj"] < alpha), row
            assert row["verdict"] != "better" or row["adj_low"] > 0
            assert row["verdict"] != "worse" or row["adj_high"] < 0
            seen[row["verdict"]] += 1
    assert min(seen.values()) >= 20, seen  # the inputs exercise all three verdicts


def test_compare_too_few_seeds_never_better_or_worse():
    from ftcourse.stats import VERDICTS, too_few_seeds
    assert too_few_seeds(2) == "too few seeds (n = 2)" and too_few_seeds(0) == "too few seeds (n = 0)"
    assert too_few_seeds(np.int64(1)) == "too few seeds (n = 1)"
    assert VERDICTS == ("better", "worse", "no detectable difference")
    for bad in (-1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="n must be an integer"):
            too_few_seeds(bad)
    # a huge, perfectly consistent gain over 2 seeds: the t columns exclude 0, the verdict does not follow
    res = metric_results(np.random.default_rng(1), 2, {"x": 0.05}, 0.0005)
    row = compare(res, baseline="base", correct=None).loc["x"]
    assert row["n"] == 2 and row["verdict"] == "too few seeds (n = 2)"
    assert np.isfinite([row["low"], row["high"], row["adj_low"], row["adj_high"], row["p_adj"]]).all()
    assert row["adj_low"] > 0 and row["p_adj"] < 0.05  # the t interval alone would have said "better"
    assert np.isnan(row["mde"])
    assert "a verdict needs >= 3" in row["note"]
    assert "includes 0 while" not in row["note"] and "excludes 0 while" not in row["note"]


def _power_nct(n, effect, sd, alpha):
    """Two-sided paired t power, straight from scipy (NaN far tail read as 0)."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stats.nct.sf(t_crit, df, nc) + np.nan_to_num(stats.nct.cdf(-t_crit, df, nc))


def test_compare_mde_inverts_noncentral_t_power():
    rng = np.random.default_rng(8)
    for n, m in [(3, 1), (5, 1), (5, 4), (10, 3), (20, 2)]:
        effects = {f"c{i}": 0.003 * i for i in range(m)}
        table = compare(metric_results(rng, n, effects, 0.01), baseline="base", correct=None)
        base = table.iloc[0]
        for lab, row in table.iterrows():
            sd = (row["half_width"] / stats.t.ppf(0.975, n - 1)) * math.sqrt(n)  # observed sd of the differences
            assert_allclose(_power_nct(n, row["mde"], sd, 0.05 / m), 0.8, atol=1e-8)
            se = sd / math.sqrt(n)
            approx = (stats.t.ppf(1 - 0.05 / m / 2, n - 1) + stats.t.ppf(0.8, n - 1)) * se
            rel = row["mde"] / approx - 1
            assert abs(rel) < 0.2, (n, m, rel)  # close to the textbook shortcut ...
            if n <= 5:
                assert abs(rel) > 0.005, (n, m, rel)  # ... but not it, where the shortcut is off
            assert row["mde"] > row["half_width"]  # detecting needs more than the half-width
        assert np.isfinite(base["mde"])


def test_mde_direct_and_monte_carlo():
    from ftcourse.stats import _mde
    n, sd, alpha = 5, 0.01, 0.05
    mde = _mde(n, sd, alpha)
    rng = np.random.default_rng(5)
    d = rng.normal(mde, sd, size=(40_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert abs(np.mean(np.abs(t) > stats.t.ppf(1 - alpha / 2, n - 1)) - 0.8) < 0.012
    assert np.isnan(_mde(2, sd, alpha)) and np.isnan(_mde(5, 0.0, alpha))
    assert _mde(5, sd, 0.01) > mde > _mde(6, sd, alpha)  # stricter level or fewer seeds: larger mde
    assert_allclose(_mde(5, 2 * sd, alpha), 2 * mde, rtol=1e-9)  # scales with the sd


def test_half_width_is_not_a_detection_bound():
    """At a true effect equal to the expected half-width, the test detects it only about half the time."""
    from ftcourse.stats import _paired_power
    for n in (3, 5, 10, 30):
        hw_over_sd = stats.t.ppf(0.975, n - 1) / math.sqrt(n)
        assert 0.45 < _paired_power(n, hw_over_sd, 0.05) < 0.65


def test_compare_zero_sd_and_constant_shift():
    res = metric_results(np.random.default_rng(0), 4, {}, 0.0)
    shifted = res.assign(label="up", test_accuracy=res.test_accuracy + 0.01)
    same = res.assign(label="same")
    table = compare(pd.concat([res, shifted, same], ignore_index=True), baseline="base", correct=None)
    assert table.loc["up", "verdict"] == "better" and table.loc["up", "p_adj"] == 0.0
    assert table.loc["same", "verdict"] == "no detectable difference" and table.loc["same", "p_adj"] == 1.0
    assert np.isnan(table["mde"]).all()  # zero sd: nothing to invert


def test_compare_bootstrap_at_adjusted_level():
    res = _results({"base": 0.0, "x": 0.02, "y": 0.0, "z": -0.01}, seeds=range(4), E=300)
    table = compare(res, baseline="base", n_boot=2000, seed=3)
    ca = np.stack(res[res.label == "x"].sort_values("seed").test_correct.to_list())
    cb = np.stack(res[res.label == "base"].sort_values("seed").test_correct.to_list())
    bt = bootstrap_diff(ca, cb, confidence=1 - 0.05 / 3, n_boot=2000, seed=3)
    assert_allclose(table.loc["x", ["boot_low", "boot_high"]].astype(float), [bt["low"], bt["high"]], rtol=1e-12)
    wide = bootstrap_diff(ca, cb, confidence=0.95, n_boot=2000, seed=3)
    assert bt["low"] < wide["low"] and bt["high"] > wide["high"]


def test_compare_pairs_mode():
    res = _results({"base": 0.0, "+A": 0.03, "+B": 0.05})
    table = compare(res, pairs=[("+B", "+A"), ("+A", "base")], n_boot=500)
    assert list(table.index) == ["+B", "+A"]
    assert list(table["reference"]) == ["+A", "base"]
    b_minus_a = (res[res.label == "+B"].test_accuracy.to_numpy() - res[res.label == "+A"].test_accuracy.to_numpy())
    assert_allclose(table.loc["+B", "mean_diff"], b_minus_a.mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="at most once"):
        compare(res, pairs=[("+B", "+A"), ("+B", "base")])
    with pytest.raises(ValueError, match="itself"):
        compare(res, pairs=[("+B", "+B")])


def test_compare_diverged_counted_and_dropped():
    res = _results({"base": 0.0, "x": 0.05})
    res["diverged"] = False
    bad = (res.label == "x") & (res.seed == 2)
    res.loc[bad, "diverged"] = True
    res.loc[bad, "test_accuracy"] = 0.5
    res.loc[(res.label == "base") & (res.seed == 4), "diverged"] = True
    kept = compare(res, baseline="base", correct=None).loc["x"]
    assert (kept["n"], kept["diverged"], kept["diverged_reference"]) == (5, 1, 1)
    assert "2 diverged runs included" in kept["note"]
    assert_allclose(kept["mean_a"], res[res.label == "x"].test_accuracy.mean(), rtol=1e-12)
    dropped = compare(res, baseline="base", correct=None, drop_diverged=True).loc["x"]
    assert (dropped["n"], dropped["diverged"], dropped["diverged_reference"]) == (3, 1, 1)
    assert "dropped" in dropped["note"] and "2, 4" in dropped["note"]
    keep = (res.label == "x") & res.seed.isin([0, 1, 3])
    assert_allclose(dropped["mean_a"], res[keep].test_accuracy.mean(), rtol=1e-12)


def test_compare_one_seed_no_crash():
    res = _results({"base": 0.0, "x": 0.2, "y": 0.2}, seeds=range(4))
    res = res[(res.label != "y") | (res.seed == 0)]
    table = compare(res, baseline="base", n_boot=200)
    y = table.loc["y"]
    assert y["n"] == 1
    assert np.isnan([y["low"], y["high"], y["half_width"], y["p_value"], y["p_adj"], y["adj_low"], y["mde"]]).all()
    assert y["verdict"] == "too few seeds (n = 1)" and "1 paired seed" in y["note"]
    assert np.isfinite(y["mean_diff"]) and np.isfinite(y["boot_low"])  # examples are still resampled
    # the untestable row still counts in the Bonferroni family: m = 2
    assert (table["m"] == 2).all()
    assert_allclose(table.loc["x", "p_adj"], min(1.0, 2 * table.loc["x", "p_value"]), rtol=1e-12)


def test_compare_correct_column_resolution():
    res = _results({"base": 0.0, "x": 0.05}, seeds=range(3))
    assert "boot_low" in compare(res, baseline="base", n_boot=200).columns
    assert "boot_low" not in compare(res, baseline="base", correct=None).columns
    val = res.rename(columns={"test_accuracy": "val_accuracy"})
    assert "boot_low" not in compare(val, baseline="base", metric="val_accuracy").columns  # no val_correct
    renamed = res.rename(columns={"test_correct": "per_example"})
    assert "boot_low" in compare(renamed, baseline="base", correct="per_example", n_boot=200).columns
    with pytest.raises(ValueError, match="not a column"):
        compare(res, baseline="base", correct="nope")
    short = res.copy()
    short.at[0, "test_correct"] = short.at[0, "test_correct"][:-1]
    with pytest.raises(ValueError, match="one length"):
        compare(short, baseline="base")


def test_compare_errors():
    res = _results({"base": 0.0, "x": 0.05}, seeds=range(3))
    with pytest.raises(ValueError, match=r"known: 'base', 'x'"):
        compare(res, baseline="nope")
    with pytest.raises(ValueError, match=r"known: 'base', 'x'"):
        compare(res, pairs=[("x", "nope")])
    with pytest.raises(ValueError, match="exactly one"):
        compare(res)
    with pytest.raises(ValueError, match="exactly one"):
        compare(res, baseline="base", pairs=[("x", "base")])
    with pytest.raises(ValueError, match="duplicate"):
        compare(pd.concat([res, res.iloc[:1]]), baseline="base")
    with pytest.raises(ValueError, match="alpha"):
        compare(res, baseline="base", alpha=5)
    with pytest.raises(ValueError, match="metric"):
        compare(res, baseline="base", metric="f1")
    with pytest.raises(TypeError, match="DataFrame"):
        compare(res.to_dict("records"), baseline="base")


def test_format_effect():
    row = pd.Series({"mean_diff": 0.0123, "low": -0.004, "high": 0.0286})
    assert format_effect(row, interval="t") == "+0.0123 [\u22120.0040, +0.0286]"
    with pytest.raises(ValueError, match="adj_low"):
        format_effect(row)  # the default is the adjusted interval, which this row lacks
    assert effect_text is format_effect
    assert format_effect({"mean": -0.00001, "low": -0.02, "high": 0.02}) == "+0.0000 [\u22120.0200, +0.0200]"
    assert format_effect(pd.Series({"mean_diff": 0.01, "low": np.nan, "high": np.nan}), interval="t") == \
        "+0.0100 [no interval]"
    res = _results({"base": 0.0, "x": 0.05, "y": 0.0}, seeds=range(3))  # m = 2: adjusted != unadjusted
    table_row = compare(res, baseline="base", n_boot=200).loc["x"]
    assert format_effect(table_row, interval="bootstrap").endswith(f"{table_row['boot_high']:+.4f}]")
    adj = format_effect(table_row)
    assert adj == format_effect(table_row, interval="adjusted")
    assert adj.endswith(f"{table_row['adj_high']:+.4f}]") and adj != format_effect(table_row, interval="t")
    # a bound that is not 0 never prints as 0: its side of 0 stays visible
    assert format_effect({"mean": 0.01, "low": 0.00003, "high": 0.02}) == "+0.0100 [+0.00003, +0.0200]"
    assert format_effect({"mean": 0.01, "low": -0.000004, "high": 0.02}) == "+0.0100 [\u22120.000004, +0.0200]"
    with pytest.raises(ValueError, match="interval"):
        format_effect(table_row, interval="holm")
