"""ftcourse.stats.equivalence (paired TOST), its planning, and mcnemar_models: checked against statsmodels (when
installed), a direct scipy computation, simulation and scipy.stats.binomtest."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from ftcourse.stats import _tost_power, equivalence, holm, mcnemar_models, paired_t, seeds_for_equivalence

# ---------------------------------------------------------------------------------------------- equivalence


def _tost_direct(a, b, margin, alpha):
    d = np.asarray(a) - np.asarray(b)
    n = d.size
    se = d.std(ddof=1) / math.sqrt(n)
    p1 = stats.t.sf((d.mean() + margin) / se, n - 1)
    p2 = stats.t.cdf((d.mean() - margin) / se, n - 1)
    q = stats.t.ppf(1 - alpha, n - 1)
    return max(p1, p2), d.mean() - q * se, d.mean() + q * se


def _pairs(rng, n, shift, sd):
    a = rng.normal(0.9, 0.01, n)
    return a, a - shift - rng.normal(0, sd, n)


def test_equivalence_against_direct_scipy():
    rng = np.random.default_rng(1)
    for n in (3, 5, 14):
        for alpha in (0.05, 0.1):
            a, b = _pairs(rng, n, 0.002, 0.006)
            got = equivalence(a, b, 0.01, alpha=alpha)
            p, lo, hi = _tost_direct(a, b, 0.01, alpha)
            assert_allclose([got["p_value"], got["low"], got["high"]], [p, lo, hi], rtol=1e-10)
            assert_allclose(got["mean"], np.mean(a - b), rtol=1e-12)
            t = paired_t(a, b, confidence=1 - 2 * alpha)  # the 90 % interval for alpha = 0.05
            assert (got["low"], got["high"]) == (t["low"], t["high"])
            assert got["n"] == n and got["margin"] == 0.01 and got["alpha"] == alpha


def test_equivalence_against_statsmodels():
    from statsmodels.stats import weightstats  # a dev dependency (pyproject): CI runs this, never skips it
    rng = np.random.default_rng(2)
    for n, margin in [(3, 0.01), (6, 0.005), (12, 0.02)]:
        a, b = _pairs(rng, n, 0.001, 0.004)
        p_sm, _, _ = weightstats.ttost_paired(a, b, -margin, margin)
        assert_allclose(equivalence(a, b, margin)["p_value"], p_sm, rtol=1e-10)


def test_equivalence_verdict_iff_interval_inside_margin():
    rng = np.random.default_rng(3)
    seen = {True: 0, False: 0}
    for _ in range(400):
        n = int(rng.integers(3, 16))
        margin = float(rng.choice([0.005, 0.01, 0.02]))
        alpha = float(rng.choice([0.05, 0.1]))
        a, b = _pairs(rng, n, float(rng.normal(0, 0.006)), float(rng.choice([0.002, 0.008])))
        r = equivalence(a, b, margin, alpha=alpha)
        inside = -margin < r["low"] and r["high"] < margin
        assert r["equivalent"] == inside == (r["p_value"] < alpha), r
        assert r["verdict"] == (f"equivalent within \u00b1{margin:g}" if inside else "not shown equivalent")
        assert r["low"] < r["mean"] < r["high"]
        seen[r["equivalent"]] += 1
    assert min(seen.values()) > 50, seen


def test_equivalence_verdict_text_and_zero_variance():
    a = np.array([0.90, 0.91, 0.92, 0.93])
    r = equivalence(a, a - 0.001, 0.01)  # every seed moved by exactly 0.001
    assert r["p_value"] == 0.0 and r["equivalent"] and r["verdict"] == "equivalent within \u00b10.01"
    assert r["low"] == r["high"] == r["mean"]
    far = equivalence(a, a - 0.05, 0.01)
    assert far["p_value"] == 1.0 and not far["equivalent"] and far["verdict"] == "not shown equivalent"
    assert equivalence(a, a, 2)["verdict"] == "equivalent within \u00b12"
    assert equivalence(a, a, 0.005)["verdict"] == "equivalent within \u00b10.005"
    noisy = equivalence([0.9, 0.95, 0.85], [0.9, 0.9, 0.9], 0.01)  # 3 seeds, noisy: cannot be shown
    assert not noisy["equivalent"] and noisy["p_value"] > 0.05


def test_equivalence_errors_name_the_argument():
    with pytest.raises(ValueError, match="same length"):
        equivalence([0.9, 0.8, 0.7], [0.9, 0.8], 0.01)
    with pytest.raises(ValueError, match="at least 3"):
        equivalence([0.9, 0.8], [0.9, 0.8], 0.01)
    for bad in (0.0, -0.01, math.inf, math.nan, "0.01", True):
        with pytest.raises(ValueError, match="margin"):
            equivalence([0.9, 0.8, 0.7], [0.9, 0.8, 0.7], bad)
    for bad in (0.5, 0.0, 1.2):
        with pytest.raises(ValueError, match="alpha"):
            equivalence([0.9, 0.8, 0.7], [0.9, 0.8, 0.7], 0.01, alpha=bad)


# ---------------------------------------------------------------------------------------------- planning


def test_seeds_for_equivalence_course_values():
    n1 = seeds_for_equivalence(0.012, 0.01)
    n2 = seeds_for_equivalence(0.012, 0.02)
    assert 12 <= n1 <= 16 and 4 <= n2 <= 6
    for n, margin in ((n1, 0.01), (n2, 0.02)):
        assert _tost_power(n, 0.012, margin, 0.05) >= 0.8 > _tost_power(n - 1, 0.012, margin, 0.05)
    assert seeds_for_equivalence(0.0, 0.01) == 3
    assert seeds_for_equivalence(0.001, 0.05) == 3  # floor: never fewer than 3 seeds
    # a true difference inside the margin costs more seeds
    assert seeds_for_equivalence(0.012, 0.01, true_diff=0.003) > n1
    assert seeds_for_equivalence(0.012, 0.01, power=0.9) > n1


def test_tost_power_monte_carlo_and_monotone():
    rng = np.random.default_rng(7)
    sims = 40_000
    for n, sd, margin, delta in [(10, 0.012, 0.01, 0.0), (6, 0.01, 0.02, 0.005), (4, 0.012, 0.02, -0.004)]:
        d = rng.normal(delta, sd, size=(sims, n))
        m, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
        q = stats.t.ppf(0.95, n - 1)
        mc = np.mean((m - q * se > -margin) & (m + q * se < margin))
        assert abs(_tost_power(n, sd, margin, 0.05, delta) - mc) < 4 * math.sqrt(mc * (1 - mc) / sims) + 1e-3
    powers = [_tost_power(n, 0.012, 0.01, 0.05) for n in range(3, 41)]
    assert np.all(np.diff(powers) > 0) and powers[0] < 0.1 and powers[-1] > 0.99


def test_seeds_for_equivalence_errors():
    with pytest.raises(ValueError, match="true_diff"):
        seeds_for_equivalence(0.01, 0.01, true_diff=0.01)
    with pytest.raises(ValueError, match="margin"):
        seeds_for_equivalence(0.01, 0.0)
    with pytest.raises(ValueError, match="std_diff"):
        seeds_for_equivalence(-0.01, 0.01)
    with pytest.raises(ValueError, match="power"):
        seeds_for_equivalence(0.01, 0.01, power=1.0)
    with pytest.raises(ValueError, match="100,000"):
        seeds_for_equivalence(1.0, 0.001)


# ---------------------------------------------------------------------------------------------- mcnemar_models


def _flipped(rng, models, examples, flips):
    """b: correctness with the mask; a: the same models with ``flips[i]`` examples (signed) changed."""
    b = rng.random((models, examples)) < 0.8
    a = b.copy()
    for i, k in enumerate(flips):
        idx_right = np.flatnonzero(b[i])[: max(-k, 0)]  # k < 0: a loses k examples b gets right
        idx_wrong = np.flatnonzero(~b[i])[: max(k, 0)]  # k > 0: a gains k examples b gets wrong
        a[i, idx_right] = False
        a[i, idx_wrong] = True
    return a, b


def test_mcnemar_models_against_binomtest_and_holm():
    rng = np.random.default_rng(11)
    a, b = _flipped(rng, 4, 400, [-30, -2, 25, 0])
    a[1, np.flatnonzero(~b[1])[:3]] = True  # model 1: 2 lost, 3 gained
    res = mcnemar_models(a, b)
    table = res["table"]
    assert list(table.columns) == ["model", "b_only", "a_only", "diff", "p_value", "p_holm", "worse", "better"]
    assert list(table["model"]) == [0, 1, 2, 3]
    for i, row in table.iterrows():
        a_only, b_only = int(np.sum(a[i] & ~b[i])), int(np.sum(~a[i] & b[i]))
        assert (row["a_only"], row["b_only"]) == (a_only, b_only)
        ref = 1.0 if a_only + b_only == 0 else stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert_allclose(row["p_value"], ref, rtol=1e-12)
        assert_allclose(row["diff"], a[i].mean() - b[i].mean(), rtol=1e-12)
    assert_allclose(table["p_holm"], holm(table["p_value"].to_numpy()), rtol=1e-12)
    assert list(table["worse"]) == [True, False, False, False]
    assert list(table["better"]) == [False, False, True, False]
    assert (res["n_models"], res["n_worse"], res["n_better"]) == (4, 1, 1)
    assert res["summary"] == "better in 1, worse in 1 of 4 models (McNemar, Holm across models)"


def test_mcnemar_models_summaries():
    rng = np.random.default_rng(12)
    a, b = _flipped(rng, 3, 300, [-25, -30, -20])
    assert mcnemar_models(a, b)["summary"] == "worse in 3 of 3 models (McNemar, Holm across models)"
    assert mcnemar_models(b, a)["summary"] == "better in 3 of 3 models (McNemar, Holm across models)"
    a, b = _flipped(rng, 3, 300, [-1, 2, 0])
    res = mcnemar_models(a, b)
    assert res["summary"] == "no model differs (McNemar, Holm across models)"
    assert res["n_worse"] == res["n_better"] == 0
    # Holm, not per model: 3 models with p = 0.031 each are none of them "worse"
    a, b = _flipped(rng, 3, 300, [-6, -6, -6])  # p = 2/64 each, Holm 3 * 2/64 > 0.05
    res = mcnemar_models(a, b)
    assert (res["table"]["p_value"] < 0.05).all() and res["n_worse"] == 0
    assert mcnemar_models(a.astype(int), b.astype(float))["summary"] == res["summary"]


def test_mcnemar_models_errors():
    with pytest.raises(ValueError, match="ndim"):
        mcnemar_models(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="same shape"):
        mcnemar_models(np.ones((2, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_models(np.full((2, 5), 2), np.ones((2, 5)))
    with pytest.raises(ValueError, match="at least one model"):
        mcnemar_models(np.ones((0, 5)), np.ones((0, 5)))
    with pytest.raises(ValueError, match="alpha"):
        mcnemar_models(np.ones((2, 5)), np.ones((2, 5)), alpha=1.5)
    assert isinstance(mcnemar_models(np.ones((1, 5)), np.ones((1, 5)))["table"], pd.DataFrame)
