"""ftcourse.stats.failure_rates and its planning: Fisher's exact test on failed runs, checked against scipy,
exhaustive enumeration and simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from scipy.stats.contingency import odds_ratio

from ftcourse.stats import _fisher_central_p_grid, failure_power, failure_rates, runs_for_failure_rates


def _runs(k, n):
    return np.arange(n) < k  # k failures among n runs


def test_failure_rates_two_of_two_vs_none_is_not_detectable():
    r = failure_rates([1, 1], [0, 0])
    assert (r["k_a"], r["n_a"], r["k_b"], r["n_b"]) == (2, 2, 0, 2)
    assert_allclose(r["p_value"], 1 / 3, rtol=1e-12)  # 2 * P(both failures in a | 2 failures in 4 runs) = 2/6
    assert r["verdict"] == "no detectable difference"
    assert r["odds_ratio"] == math.inf and r["low"] < 1 < r["high"]


def test_failure_rates_five_of_twenty_vs_none():
    r = failure_rates(_runs(5, 20), _runs(0, 20))
    assert set(r) == {"k_a", "n_a", "k_b", "n_b", "rate_a", "rate_b", "odds_ratio", "low", "high", "p_value",
                      "verdict"}
    assert_allclose(r["p_value"], 2 * math.comb(20, 5) / math.comb(40, 5), rtol=1e-12)  # 0.047
    assert r["verdict"] == "more failures"
    assert (r["rate_a"], r["rate_b"]) == (0.25, 0.0)
    assert r["odds_ratio"] == math.inf and 1 < r["low"] < 1.1 and r["high"] == math.inf
    flipped = failure_rates(_runs(0, 20), _runs(5, 20))
    assert flipped["verdict"] == "fewer failures" and flipped["p_value"] == r["p_value"]
    assert flipped["odds_ratio"] == 0.0 and flipped["high"] < 1
    assert_allclose(flipped["high"], 1 / r["low"], rtol=1e-6)


def test_failure_rates_matches_scipy_and_accepts_bool_or_int():
    rng = np.random.default_rng(4)
    for _ in range(20):
        na, nb = rng.integers(3, 40, 2)
        fa, fb = rng.random(na) < rng.random(), rng.random(nb) < rng.random()
        r = failure_rates(fa, fb)
        table = [[fa.sum(), na - fa.sum()], [fb.sum(), nb - fb.sum()]]
        ref = odds_ratio(table, kind="conditional")
        ci = ref.confidence_interval(0.95)
        assert_allclose([r["odds_ratio"], r["low"], r["high"]], [ref.statistic, ci.low, ci.high], rtol=1e-12)
        p = min(1.0, 2 * min(stats.fisher_exact(table, alternative="less").pvalue,
                             stats.fisher_exact(table, alternative="greater").pvalue))
        assert_allclose(r["p_value"], p, rtol=1e-12)
        assert r == failure_rates(fa.astype(int), fb.astype(float).tolist())
    # the central p-value is not scipy's default two-sided one (which sums the less likely tables)
    assert failure_rates(_runs(3, 4), _runs(0, 8))["p_value"] != stats.fisher_exact([[3, 1], [0, 8]]).pvalue


def _duality_block(n_a, n_b):
    grid = _fisher_central_p_grid(n_a, n_b)
    counts = {"more failures": 0, "fewer failures": 0, "no detectable difference": 0}
    for k_a in range(n_a + 1):
        for k_b in range(n_b + 1):
            r = failure_rates(_runs(k_a, n_a), _runs(k_b, n_b))
            excludes_1 = r["low"] > 1 or r["high"] < 1
            assert (r["p_value"] < 0.05) == excludes_1 == (r["verdict"] != "no detectable difference"), r
            if r["verdict"] == "more failures":
                assert r["low"] > 1 and r["rate_a"] > r["rate_b"]
            if r["verdict"] == "fewer failures":
                assert r["high"] < 1 and r["rate_a"] < r["rate_b"]
            assert_allclose(grid[k_a, k_b], r["p_value"], rtol=1e-9, atol=1e-15)
            counts[r["verdict"]] += 1
    return counts


def test_failure_rates_verdict_iff_interval_excludes_1_exhaustive():
    """Every table with 2..8 runs per arm, and equal arms up to 15 (about 3,000 tables, 10 s): the verdict,
    p < 0.05 and the interval excluding 1 agree."""
    total = {"more failures": 0, "fewer failures": 0, "no detectable difference": 0}
    sizes = [(na, nb) for na in range(2, 9) for nb in range(2, 9)] + [(n, n) for n in range(9, 16)]
    for n_a, n_b in sizes:
        for key, c in _duality_block(n_a, n_b).items():
            total[key] += c
    assert total["more failures"] > 100 and total["fewer failures"] > 100, total


def test_failure_rates_errors_name_the_argument():
    for bad, msg in [([[1, 0], [0, 1]], "1-D"), ([], "empty"), ([0, 2], "0/1"), ([0.5, 1], "0/1"),
                     (["x", "y"], "0/1"), ([np.nan, 1.0], "0/1")]:
        with pytest.raises(ValueError, match=f"failed_a.*{msg}|{msg}.*failed_a"):
            failure_rates(bad, [0, 1])
        with pytest.raises(ValueError, match="failed_b"):
            failure_rates([0, 1], bad)
    with pytest.raises(ValueError, match="alpha"):
        failure_rates([0, 1], [1, 1], alpha=5)


# ---------------------------------------------------------------------------------------------- planning


def test_failure_power_five_vs_thirty_percent():
    assert 35 <= runs_for_failure_rates(0.05, 0.30) <= 45
    assert 0.35 <= failure_power(0.05, 0.30, 20) <= 0.55
    assert failure_power(0.30, 0.05, 20) == pytest.approx(failure_power(0.05, 0.30, 20), rel=1e-12)
    n = runs_for_failure_rates(0.05, 0.30)
    assert failure_power(0.05, 0.30, n) >= 0.8 > max(failure_power(0.05, 0.30, k) for k in range(2, n))


def test_failure_power_equals_direct_enumeration_and_simulation():
    n, ra, rb = 12, 0.1, 0.6
    direct = 0.0
    for k_a in range(n + 1):
        for k_b in range(n + 1):
            if failure_rates(_runs(k_a, n), _runs(k_b, n))["p_value"] < 0.05:
                direct += stats.binom.pmf(k_a, n, ra) * stats.binom.pmf(k_b, n, rb)
    assert_allclose(failure_power(ra, rb, n), direct, rtol=1e-9)
    rng = np.random.default_rng(9)
    sims = 3000
    hits = 0
    for ka, kb in zip(rng.binomial(n, ra, sims), rng.binomial(n, rb, sims)):
        t = [[ka, n - ka], [kb, n - kb]]
        p = 2 * min(stats.fisher_exact(t, alternative="less").pvalue,
                    stats.fisher_exact(t, alternative="greater").pvalue)
        hits += p < 0.05
    assert abs(hits / sims - direct) < 4 * math.sqrt(direct * (1 - direct) / sims)


def test_failure_power_size_at_equal_rates_is_at_most_alpha():
    for rate in (0.05, 0.3, 0.5):
        for n in (5, 20, 60):
            assert failure_power(rate, rate, n) <= 0.05
    assert failure_power(0.0, 1.0, 4) == 1.0  # 4 of 4 vs 0 of 4: p = 2/70


def test_runs_for_failure_rates_equals_a_scan_from_two():
    for ra, rb, power in [(0.0, 0.3, 0.8), (0.1, 0.5, 0.9), (0.2, 0.6, 0.5), (0.5, 1.0, 0.8), (0.3, 0.5, 0.8)]:
        brute = next(n for n in range(2, 500) if failure_power(ra, rb, n) >= power)
        assert runs_for_failure_rates(ra, rb, power=power) == brute


def test_failure_planning_errors():
    with pytest.raises(ValueError, match="must differ"):
        runs_for_failure_rates(0.2, 0.2)
    with pytest.raises(ValueError, match="rate_a"):
        failure_power(1.5, 0.2, 10)
    with pytest.raises(ValueError, match="rate_b"):
        runs_for_failure_rates(0.2, -0.1)
    with pytest.raises(ValueError, match="n_per_arm"):
        failure_power(0.1, 0.2, 0)
    with pytest.raises(ValueError, match="1,000 runs"):
        runs_for_failure_rates(0.10, 0.11)
