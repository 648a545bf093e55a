"""Comparing fine-tuning configurations over seeds: verdicts a learner cannot misread.

Copy alone.
Into one package folder: ``python -m ftcourse copy stats --into mypkg/``.

Every notebook compares configurations ("baseline" vs "+ LLRD") over a handful of random seeds.
Each run gives a test accuracy and, optionally, its per-example correctness on the shared test set
(the same sentences for every run). This module answers "is B better than A, and by how much?"
the same way everywhere, and prints each answer as one line whose interval is exactly the one the
verdict follows (:func:`verdict_text`). It imports only numpy, scipy, pandas and the standard
library.

The pieces, and why each is the way it is:

* :func:`paired_t` -- the paired t-test over seeds. Runs with the same seed share data order and
  initialisation, so the differences ``d_s = a_s - b_s`` remove most of the seed-to-seed noise
  that the two configurations have in common. With ``n`` seeds,

      mean = (1/n) sum_s d_s,   se = sd(d, ddof=1) / sqrt(n),   T = mean / se ~ t(n - 1)

  and the interval is ``mean +- t_{n-1, (1+confidence)/2} * se``. Why t with n - 1 df and not a
  z interval: ``se`` is itself estimated from n values, and at n = 3 the 97.5 % quantile of t(2)
  is 4.30, not 1.96 -- a z interval would be more than twice too narrow and call noise an effect.

* :func:`compare` -- the table every notebook prints, one row per comparison, and its rules:

  - **Bonferroni across the m comparisons of one call.** Six configurations against a baseline
    at alpha = 0.05 find at least one "significant" difference by chance with probability up
    to 1 - 0.95**6 = 26 %. Each row's adjusted interval (``adj_low``, ``adj_high``) is the
    paired-t interval at confidence ``1 - alpha/m``; all m of them cover their true differences
    together with probability >= 1 - alpha, under any dependence (the rows share the baseline).
    ``p_adj = min(1, m * p_value)``. Why Bonferroni and not Holm (:func:`holm`), which rejects
    a little more often: Holm's step-down p-values have no matching intervals, so a row could
    say "better" beside an interval that includes 0, or the reverse. With Bonferroni the
    verdict and the printed interval are one statement: "better"/"worse" exactly when the
    adjusted interval excludes 0, equivalently ``p_adj < alpha``.
  - **No verdict from fewer than 3 seeds.** With 2 seeds the noise is estimated from a single
    difference of differences (1 df): the test is exact only if that difference is exactly
    normal, nothing can check it, and one odd seed decides. Such rows read
    ``"too few seeds (n = 2)"`` (:func:`too_few_seeds`), never better/worse/no detectable
    difference; :func:`seeds_needed` and :func:`seeds_for_half_width` never answer below 3.
  - **The bootstrap is shown, not a veto.** :func:`bootstrap_diff` resamples seeds *and* test
    examples (the test set is a sample too; an improvement that lives on a dozen sentences may
    not carry over). Its interval (``boot_low``, ``boot_high``) is computed at the same adjusted
    level and printed beside; when it and the t interval disagree about excluding 0, the note
    says so in one sentence. The verdict follows the t interval alone -- one rule, one interval.
  - **mde, and what a half-width is not.** "No detectable difference" is not "no difference".
    The ``mde`` column is the smallest true effect the comparison detects with 80 % power at its
    n, its observed sd of the paired differences and level alpha/m, by inverting the exact
    noncentral-t power (NaN below 3 seeds or at zero sd). The unadjusted ``half_width`` column
    is only the precision of the estimate: it is not a bound on the effect, and at a true effect
    equal to the half-width the test has only about 50 % power (50-60 % at 3-10 seeds). The mde
    is always larger.

* :func:`mcnemar` -- one pair of runs on the same test examples: the exact binomial test on the
  discordant examples (right for one and wrong for the other). :func:`mcnemar_models` applies it
  to the same trained models evaluated two ways (e.g. with and without the attention mask),
  with Holm across the models (no interval is printed there, so Holm's extra power costs no
  consistency): ``"worse in 3 of 3 models (McNemar, Holm across models)"``.

* :func:`failure_rates` -- does a fail (diverge, crash) more often than b? Fisher's exact test
  with its central two-sided p-value, which is the test the exact conditional odds-ratio
  interval inverts: "more failures"/"fewer failures" exactly when p < 0.05, and then the
  interval excludes 1. Counts of failures decide little: 2/2 against 0/2 gives p = 1/3.
  :func:`failure_power` and :func:`runs_for_failure_rates` give the exact power and the runs
  per arm (5 % vs 30 % needs about 40 per arm).

* :func:`equivalence` -- the paired TOST over seeds, for the claim "a and b are the same within
  +-margin": shown when the 1 - 2 alpha (90 %) interval lies inside the margin. Failing to find a
  difference is not this claim. :func:`seeds_for_equivalence` plans it with the exact TOST
  power (sd 0.012: a 0.01 margin needs about 14 seeds, a 0.02 margin about 5).

* :func:`seeds_needed` and :func:`seeds_for_half_width` -- how many seeds a comparison needs:
  to detect a given effect with a given power (exact noncentral t), or to pin the difference
  down to +-half_width. Both never answer below 3.

* :func:`verdict_text` -- the one renderer: a compare row, a failure_rates, equivalence or
  mcnemar_models result, as the line a notebook prints, e.g. ``"better: +0.0123 [+0.0040,
  +0.0206] (Bonferroni-adjusted 95% interval, paired t over 5 seeds)"``; :func:`test_name` is
  the short name of the test behind it ("paired t, Bonferroni", "Fisher's exact", "TOST",
  "McNemar, Holm"); :func:`format_effect` (alias ``effect_text``) is the number and its
  interval alone, ``"+0.0123 [+0.0040, +0.0206]"``, adjusted by default.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats
from scipy.stats.contingency import odds_ratio

__all__ = [
    "paired_t", "mcnemar", "bootstrap_diff", "holm", "seeds_needed", "seeds_for_half_width", "compare",
    "too_few_seeds", "failure_rates", "failure_power", "runs_for_failure_rates", "equivalence",
    "seeds_for_equivalence", "mcnemar_models", "verdict_text", "test_name", "format_effect", "effect_text", "VERDICTS",
]

VERDICTS = ("better", "worse", "no detectable difference")
"""The three verdicts of :func:`compare` from 3 or more paired seeds; below 3 it is :func:`too_few_seeds`."""

# No verdict from fewer seeds: 2 seeds estimate the noise from 1 degree of freedom (module docstring).
_MIN_SEEDS = 3
# Searches over n stop here: an effect that needs more seeds than this is not one to chase.
_MAX_SEEDS = 100_000
# Bytes of one chunk of example-level bootstrap weights: keeps memory flat whatever n_boot is.
_CHUNK_BYTES = 8 * 2**20




def too_few_seeds(n):
    """The verdict of a :func:`compare` row with fewer than 3 paired seeds: ``"too few seeds (n = 2)"``."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0 (the number of paired seeds); got {n!r}")
    return f"too few seeds (n = {int(n)})"


# --------------------------------------------------------------------------------------------------
# validation helpers


def _check_prob(name, value, *, what="a probability"):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1) ({what}); got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1) ({what}); got {value!r}")
    return float(value)


def _check_positive(name, value, *, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}; got {value!r}")
    return value


def _as_1d_float(name, x):
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {type(x).__name__}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per seed); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values (no NaN/inf)")
    return arr


def _as_correct(name, x, *, ndim=(1,)):
    """Per-example correctness as float64 0/1, from bool or 0/1 numbers."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of 0/1 (or bool) values") from exc
    if arr.dtype == object:
        raise ValueError(f"{name} must be a rectangular array of 0/1 (or bool) values; got dtype=object")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold bool or 0/1 numbers; got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have ndim in {ndim}; got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all((arr == 0.0) | (arr == 1.0)):
        raise ValueError(f"{name} must contain only 0/1 (or False/True) values")
    return arr


# --------------------------------------------------------------------------------------------------
# tests


def paired_t(a, b, confidence=0.95):
    """Paired t-test of ``a - b`` over seeds: the mean difference, its interval and p-value.

    ``a[s]`` and ``b[s]`` are the metric of the two configurations with seed ``s``. With the
    differences ``d = a - b`` (n of them)::

        mean = d.mean();  se = d.std(ddof=1) / sqrt(n);  T = mean / se
        p = 2 * P(t_{n-1} > |T|);  [low, high] = mean -+ t_{n-1, (1+confidence)/2} * se

    identical to ``scipy.stats.ttest_rel(a, b)`` and its ``confidence_interval(confidence)``.
    t with n - 1 degrees of freedom, not the normal, because ``se`` is estimated from the same
    few seeds (module docstring).

    Zero variance (all differences equal, up to floating-point rounding of the subtraction):
    the t statistic is 0/0 or +-inf, and scipy returns NaN or 0 with a warning. Here it is
    explicit: if the common difference is 0, ``p_value = 1.0`` and the interval is [0, 0]; if it
    is not 0, ``p_value = 0.0`` and the interval is [mean, mean] (zero width). The second case
    says "every seed moved by exactly this much": a real but rare outcome (e.g. two runs that
    differ only on a deterministic example); the per-example bootstrap in :func:`compare` is the
    check on it.

    Returns ``{"mean", "se", "low", "high", "p_value", "n"}``. Raises ValueError for n < 2 or
    unequal lengths.
    """
    a = _as_1d_float("a", a)
    b = _as_1d_float("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length (one value per paired seed); got {a.size} and {b.size}")
    n = a.size
    if n < 2:
        raise ValueError(f"a and b need at least 2 paired values for a t-test (n - 1 >= 1 df); got n = {n}")
    confidence = _check_prob("confidence", confidence, what="the interval's coverage, e.g. 0.95")
    d = a - b
    mean = float(d.mean())
    # Rounding of a - b alone can leave differences that "should" be equal apart by a few ulps;
    # treating those as a huge t would be noise masquerading as certainty.
    tol = 16 * np.finfo(np.float64).eps * max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    if float(np.ptp(d)) <= tol:
        if abs(mean) <= tol:
            return {"mean": 0.0, "se": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0, "n": n}
        return {"mean": mean, "se": 0.0, "low": mean, "high": mean, "p_value": 0.0, "n": n}
    se = float(d.std(ddof=1) / math.sqrt(n))
    df = n - 1
    t_stat = mean / se
    p = float(2.0 * stats.t.sf(abs(t_stat), df))
    q = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    return {"mean": mean, "se": se, "low": mean - q * se, "high": mean + q * se, "p_value": min(p, 1.0), "n": n}


def mcnemar(correct_a, correct_b):
    """Exact McNemar test for two runs scored on the same test examples.

    ``n10`` = examples that a gets right and b gets wrong, ``n01`` the reverse. Under "equally
    good", each discordant example favours a or b with probability 1/2, so ``n10`` is
    Binomial(n10 + n01, 1/2) and the two-sided p-value is
    ``scipy.stats.binomtest(n10, n10 + n01, 0.5).pvalue`` (exact, right at small counts, where
    the chi-square version is not). Concordant examples say nothing about which is better.
    ``p_value = 1.0`` when there are no discordant examples.

    One pair of runs only: it says nothing about seed-to-seed variation (use :func:`compare`).
    Accepts bool or 0/1 arrays of equal length. Returns ``{"n10", "n01", "n", "p_value"}`` with
    ``n`` the number of examples.
    """
    a = _as_correct("correct_a", correct_a)
    b = _as_correct("correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same length (same test examples); "
                         f"got {a.size} and {b.size}")
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    p = 1.0 if n10 + n01 == 0 else float(stats.binomtest(n10, n10 + n01, 0.5).pvalue)
    return {"n10": n10, "n01": n01, "n": int(a.size), "p_value": p}


def _counts(rng, k, size):
    """``size`` multinomial(k; 1/k, ..., 1/k) count vectors, shape (size, k): resampling weights."""
    idx = rng.integers(0, k, size=(size, k))
    idx += (np.arange(size) * k)[:, None]
    # bincount of offset indices is ~8x faster than rng.multinomial with thousands of categories.
    return np.bincount(idx.ravel(), minlength=size * k).reshape(size, k).astype(np.float64)


def bootstrap_diff(correct_a, correct_b, confidence=0.95, n_boot=10000, seed=0):
    """Two-level bootstrap interval of the mean difference in accuracy, over seeds and examples.

    ``correct_a`` and ``correct_b``: 0/1 (or bool) arrays of shape (seeds, examples); row ``s``
    of both comes from seed ``s``, column ``j`` is test example ``j`` (a 1-D array is one seed).
    With ``D = a - b`` (S x E), the statistic is ``mean(D)``, the difference in mean accuracy.

    Why two levels. The difference varies with the seed (initialisation, data order, dropout)
    and with the test set (which sentences happen to be in it). Resampling only examples
    ignores the seed noise and is far too narrow when runs disagree from seed to seed;
    resampling only seeds ignores that the test set is a sample. Here each replicate draws S
    seed indices and E example indices, both with replacement, and uses *every* pair of them --
    crossed, not nested, since all seeds are scored on the same examples. With multinomial count
    vectors ``w_s`` (S) and ``w_e`` (E) the replicate is

        r = w_s^T D w_e / (S * E)

    computed for a chunk of replicates at once as ``(W_s * (D @ W_e.T).T).sum(1) / (S * E)``:
    O(S * E * n_boot) multiply-adds without ever building an S x E x n_boot array.
    The interval is the percentile interval ``quantile(r, [(1-c)/2, (1+c)/2])``; ``mean`` is the
    observed ``mean(D)``, not the bootstrap average.

    Known biases (read the interval with them in mind): the crossed ("pigeonhole") bootstrap
    counts the seed x example interaction variance about three times instead of once (Owen
    2007, "The pigeonhole bootstrap", Ann. Appl. Stat.), so it is conservative when most of the
    noise is per-(seed, example) flakiness; with very few seeds, resampling seeds underestimates
    the seed variance (by (S-1)/S, and the percentile interval ignores the t correction). The
    paired t interval of :func:`compare` is the seed-level inference; this interval is the check
    that the effect survives test-set noise as well.

    One seed: only examples are resampled (the seed draw is always the one seed). Deterministic
    for a given ``seed`` (``np.random.default_rng(seed)``). Returns ``{"mean", "low", "high",
    "se", "n_seeds", "n_examples", "n_boot"}`` (``se``: the standard deviation of the replicates).
    """
    a = _as_correct("correct_a", correct_a, ndim=(1, 2))
    b = _as_correct("correct_b", correct_b, ndim=(1, 2))
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same shape (seeds, examples); got {a.shape} and {b.shape}")
    if a.ndim == 1:
        a, b = a[None, :], b[None, :]
    S, E = a.shape
    if S == 0 or E == 0:
        raise ValueError(f"correct_a and correct_b need at least one seed and one example; got shape {a.shape}")
    confidence = _check_prob("confidence", confidence, what="the interval's coverage, e.g. 0.95")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10 (number of bootstrap replicates); got {n_boot!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int (or None for fresh randomness); got {seed!r}")
    n_boot = int(n_boot)
    D = a - b
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_BYTES // (8 * E)))
    reps = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        w_s = _counts(rng, S, m)                        # (m, S)
        w_e = _counts(rng, E, m)                        # (m, E)
        col = D @ w_e.T                                 # (S, m): per-seed sums over drawn examples
        reps[start:start + m] = np.einsum("ms,sm->m", w_s, col) / (S * E)
    lo, hi = np.quantile(reps, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0])
    return {"mean": float(D.mean()), "low": float(lo), "high": float(hi), "se": float(reps.std(ddof=1)),
            "n_seeds": S, "n_examples": E, "n_boot": n_boot}


def holm(p_values):
    """Holm's step-down adjusted p-values, in input order.

    Sort the m p-values ascending, ``p_(1) <= ... <= p_(m)``; then

        adj_(i) = min(1, max_{k <= i} (m - k + 1) * p_(k))

    and reject every hypothesis with ``adj < alpha``. This controls the family-wise error rate
    (probability of at least one false rejection) at alpha under any dependence. The running max
    keeps the adjusted values monotone in the raw ones; ties keep their input order. Used by
    :func:`mcnemar_models`; :func:`compare` uses Bonferroni instead, because its verdicts are
    printed with intervals and Holm's adjusted p-values have no matching intervals.

    NaN p-values (a comparison that could not be tested, e.g. one seed) are treated as 1.0: the
    comparison still counts in m -- it was part of the family a notebook set out to test --
    and it is never rejected. Returns a float64 array (empty for empty input).
    """
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError("p_values must be a 1-D sequence of numbers in [0, 1] (NaN allowed)") from exc
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D; got shape {p.shape}")
    p = np.where(np.isnan(p), 1.0, p)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_values must lie in [0, 1] (NaN allowed, read as 1.0)")
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out


# --------------------------------------------------------------------------------------------------
# planning


def _first_n(condition, what):
    """Smallest n in [_MIN_SEEDS, _MAX_SEEDS] with condition(n_array) true, searched in growing blocks."""
    lo = _MIN_SEEDS
    hi = 64
    while lo <= _MAX_SEEDS:
        n = np.arange(lo, min(hi, _MAX_SEEDS) + 1)
        ok = np.asarray(condition(n), dtype=bool)
        if ok.any():
            return int(n[np.argmax(ok)])
        lo, hi = hi + 1, hi * 16
    raise ValueError(f"{what} needs more than {_MAX_SEEDS:,} seeds: the effect is too small for its noise "
                     f"to be resolved by adding seeds")


def _t_power(df, nc, alpha):
    """Power of the two-sided one-sample/paired t-test at level ``alpha``: df, noncentrality nc >= 0.

    ``P(T > t_crit) + P(T < -t_crit)`` with T noncentral t(df, nc). scipy's noncentral t returns
    NaN for the far tail ``P(T < -t_crit)`` once nc exceeds about 7 (a probability below 1e-12
    there, since nc >= 0): that NaN is read as 0, and any power still NaN is read as 1 (a huge
    noncentrality). Without this, ``seeds_needed`` was not monotone in ``std_diff``: NaN >= power
    is False, so an n whose power was NaN was skipped (std 0.0004 gave 4 seeds, 0.0005 gave 3).
    """
    df = np.asarray(df, dtype=np.float64)
    nc = np.asarray(nc, dtype=np.float64)
    t_crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        upper = stats.nct.sf(t_crit, df, nc)
        lower = stats.nct.cdf(-t_crit, df, nc)
    lower = np.where(np.isnan(lower) & (nc > 0), 0.0, lower)
    power = upper + lower
    return np.where(np.isnan(power), 1.0, np.clip(power, 0.0, 1.0))


def _paired_power(n, effect_over_sd, alpha):
    n = np.asarray(n, dtype=np.float64)
    return _t_power(n - 1, abs(effect_over_sd) * np.sqrt(n), alpha)


def _mde(n, std_diff, alpha, power=0.8):
    """Smallest true effect a two-sided paired t-test of n seeds detects with ``power``.

    Inverts the exact power of :func:`_t_power` in the noncentrality (monotone for nc >= 0) with
    Brent's method: ``mde = nc* * std_diff / sqrt(n)`` where ``power(n - 1, nc*, alpha) = power``.
    Not the textbook ``(t_{1-alpha/2} + t_{power}) * se`` shortcut, which ignores the far tail and
    the noncentral shape (a few per cent off at 5 seeds). NaN for n < 3 or std_diff == 0 (nothing
    to invert: no verdict below 3 seeds, and a zero sd "detects" any effect).
    """
    if n < _MIN_SEEDS or not (std_diff > 0 and math.isfinite(std_diff)):
        return math.nan
    df = n - 1
    target = lambda nc: float(_t_power(df, nc, alpha)) - power  # noqa: E731
    hi = float(stats.t.ppf(1.0 - alpha / 2.0, df)) + 4.0
    while target(hi) < 0:
        hi *= 2.0
    nc = optimize.brentq(target, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return float(nc * std_diff / math.sqrt(n))


def seeds_needed(std_diff, effect, power=0.8, alpha=0.05):
    """Smallest number of seeds n >= 3 at which a two-sided paired t-test reaches ``power``.

    ``std_diff``: the standard deviation over seeds of the paired difference (a pilot estimate,
    e.g. ``paired_t(a, b)["se"] * sqrt(n)``); ``effect``: the true mean difference to detect.
    Under that effect the statistic is noncentral t with df = n - 1 and noncentrality
    ``delta = effect / std_diff * sqrt(n)``, so

        power(n) = P(T > t_crit) + P(T < -t_crit),   t_crit = t_{n-1, 1 - alpha/2}

    (exact for normal differences; both tails count, since the test is two-sided). Returns the
    first n >= 3 with ``power(n) >= power``: never fewer than 3, because :func:`compare` gives no
    verdict below 3 seeds. Monotone non-decreasing in ``std_diff`` and never NaN (scipy's NaN
    tails at a huge noncentrality are read as power 1; see ``_t_power``). The search stops at
    100,000 seeds with a ValueError.
    """
    std_diff = _check_positive("std_diff", std_diff)
    if isinstance(effect, bool) or not isinstance(effect, numbers.Real) or not math.isfinite(effect) or effect == 0:
        raise ValueError(f"effect must be a finite non-zero number (the mean difference to detect); got {effect!r}")
    power = _check_prob("power", power, what="the target probability of detecting the effect, e.g. 0.8")
    alpha = _check_prob("alpha", alpha, what="the test's significance level, e.g. 0.05")
    ratio = abs(float(effect)) / std_diff
    return _first_n(lambda n: _paired_power(n, ratio, alpha) >= power,
                    f"power {power} at effect {effect} with std_diff {std_diff}")


def seeds_for_half_width(std_diff, half_width, confidence=0.95):
    """Smallest n >= 3 with ``t_{n-1, (1+confidence)/2} * std_diff / sqrt(n) <= half_width``.

    How many seeds a comparison needs for its paired-t interval to be +-``half_width``, if the
    standard deviation of the per-seed difference is ``std_diff`` (the interval's expected
    half-width, with the sample sd replaced by its planning value). Never fewer than 3 (no
    verdict below 3 seeds); ``std_diff = 0`` gives 3. A half-width is the precision of an
    estimate, not a detection guarantee: a true effect equal to it is detected only about half
    the time (use :func:`seeds_needed` for that). The search stops at 100,000 seeds with a
    ValueError.
    """
    std_diff = _check_positive("std_diff", std_diff, allow_zero=True)
    half_width = _check_positive("half_width", half_width)
    confidence = _check_prob("confidence", confidence, what="the interval's coverage, e.g. 0.95")
    q = 0.5 + confidence / 2.0
    return _first_n(lambda n: stats.t.ppf(q, n - 1) * std_diff / np.sqrt(n) <= half_width,
                    f"a half-width of {half_width} with std_diff {std_diff}")


# --------------------------------------------------------------------------------------------------
# the comparison table


_AUTO_CORRECT = {"test_accuracy": "test_correct", "val_accuracy": "val_correct"}


def _label_list(labels):
    return ", ".join(repr(x) for x in labels)


def _resolve_correct(results, metric, correct):
    if correct is None:
        return None
    if isinstance(correct, str) and correct == "auto":
        col = _AUTO_CORRECT.get(metric)
        return col if col is not None and col in results.columns else None
    if isinstance(correct, str):
        if correct not in results.columns:
            raise ValueError(f"correct={correct!r} is not a column of results; columns: {list(results.columns)} "
                             f"(or use correct='auto' or correct=None)")
        return correct
    raise TypeError(f"correct must be 'auto', a column name or None; got {correct!r}")


def _missing(cell):
    if cell is None:
        return True
    return isinstance(cell, float) and math.isnan(cell)


def compare(results, baseline=None, *, pairs=None, metric="test_accuracy", by="label", alpha=0.05,
            confidence=0.95, correct="auto", n_boot=10000, seed=0, drop_diverged=False):
    """Compare configurations over seeds: one row per comparison ``a - b``, with a verdict.

    ``results``: a DataFrame with one row per run and columns ``by`` (configuration label),
    ``seed``, ``metric``, optionally ``diverged`` (bool) and optionally per-example correctness
    (a column whose cells are 0/1 arrays in test-set order).

    What is compared -- exactly one of:

    * ``baseline=label``: every other configuration (first-seen order) against it;
    * ``pairs=[(a, b), ...]``: the explicit differences a - b, e.g. the increments of a
      cumulative table ``("+ SWA", "+ re-init")``. Each ``a`` at most once (it is the index).

    Pairing is by the ``seed`` column, never by row order; only seeds present for both are used
    (sorted, so the table does not depend on row order); a duplicated (label, seed) is an error.

    Columns (index ``configuration`` = a), m = the number of comparisons in this call (rows that
    could not be tested count too: they were part of the family a notebook set out to test):

    * ``reference`` (b), ``n`` (paired seeds used), ``mean_a``, ``mean_b``, ``mean_diff`` (means
      over those seeds);
    * ``low``, ``high``: the *unadjusted* paired-t interval (:func:`paired_t`) at ``confidence``,
      per comparison (not simultaneous); ``half_width = (high - low) / 2``, its half-width -- the
      precision of the estimate, not a bound on the effect (a true effect equal to it is
      detected only about half the time; ``mde`` is the detection figure); ``p_value``: the
      unadjusted paired-t p-value;
    * ``adj_low``, ``adj_high``: the paired-t interval at confidence ``1 - alpha / m``
      (Bonferroni), so that all m intervals of the call cover their true differences together
      with probability >= 1 - alpha; ``p_adj = min(1, m * p_value)``;
    * ``m``, ``alpha``: the family size and the family-wise level, so that a row alone says
      which interval its verdict follows (:func:`verdict_text`);
    * ``mde``: the smallest true difference this comparison detects with 80 % power, at its n,
      its observed sd of the paired differences and level ``alpha / m`` (exact noncentral-t
      power, inverted; see ``_mde``). NaN when n < 3 or the differences have zero sd;
    * ``verdict``: "better"/"worse" exactly when the adjusted interval excludes 0 (above or below
      it), equivalently ``p_adj < alpha``; otherwise "no detectable difference". With fewer than
      3 paired seeds it is :func:`too_few_seeds` -- ``"too few seeds (n = 2)"`` -- whatever the
      t columns (filled for n == 2) say;
    * ``diverged``, ``diverged_reference``: diverged runs of a and b among the paired seeds;
    * ``boot_low``, ``boot_high`` (only when correctness is available): the two-level bootstrap
      interval (:func:`bootstrap_diff`) of the same difference, seeds and examples resampled, at
      the same adjusted level ``1 - alpha / m``. Shown beside the t interval, it does not change
      the verdict; when the two disagree about excluding 0, the note says so;
    * ``note``: why a row is special ("" when nothing to say).

    ``correct``: "auto" uses ``test_correct`` for ``metric="test_accuracy"`` and ``val_correct``
    for ``"val_accuracy"`` when that column exists; a column name uses that column; None turns
    the bootstrap off. Fewer than 2 paired seeds: t columns NaN, and a note.

    Diverged runs are included by default: a run that diverges is a real outcome of that
    configuration, and dropping it flatters the configuration that diverges. With
    ``drop_diverged=True``, seeds where either side diverged are left out of that comparison
    (from both sides, to keep the pairing), and the note says so.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame with one row per run; got {type(results).__name__}")
    for name, col in (("by", by), ("metric", metric)):
        if col not in results.columns:
            raise ValueError(f"{name}={col!r} is not a column of results; columns: {list(results.columns)}")
    if "seed" not in results.columns:
        raise ValueError(f"results needs a 'seed' column to pair runs; columns: {list(results.columns)}")
    alpha = _check_prob("alpha", alpha, what="the significance level of the verdict, e.g. 0.05")
    confidence = _check_prob("confidence", confidence, what="the intervals' coverage, e.g. 0.95")
    if not isinstance(drop_diverged, (bool, np.bool_)):
        raise TypeError(f"drop_diverged must be True or False; got {drop_diverged!r}")
    correct_col = _resolve_correct(results, metric, correct)

    if results["seed"].isna().any():
        raise ValueError("results['seed'] has missing values; every run needs its seed")
    if not pd.api.types.is_numeric_dtype(results[metric]):
        raise TypeError(f"results[{metric!r}] must be numeric; got dtype {results[metric].dtype}")
    if "diverged" in results.columns:
        div = results["diverged"]
        if div.isna().any() or not set(pd.unique(div)) <= {True, False}:
            raise ValueError("results['diverged'] must be True/False for every run")
        diverged = div.astype(bool).to_numpy()
    else:
        diverged = np.zeros(len(results), dtype=bool)
    dup = results.duplicated([by, "seed"], keep=False)
    if dup.any():
        shown = results.loc[dup, [by, "seed"]].drop_duplicates().head(5).itertuples(index=False)
        raise ValueError(f"duplicate ({by}, seed) rows -- each configuration needs one run per seed: "
                         + ", ".join(f"({lab!r}, {s!r})" for lab, s in shown))

    labels = list(pd.unique(results[by]))
    if (baseline is None) == (pairs is None):
        raise ValueError("give exactly one of baseline= (a label to compare every other configuration with) "
                         "and pairs= (a list of (a, b) labels, compared as a - b)")
    if pairs is None:
        if baseline not in labels:
            raise ValueError(f"baseline={baseline!r} is not a {by!r} in results; known: {_label_list(labels)}")
        pairs = [(lab, baseline) for lab in labels if lab != baseline]
    else:
        try:
            pairs = [tuple(p) for p in pairs]
        except TypeError as exc:
            raise TypeError("pairs must be a list of (a, b) label pairs") from exc
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"pairs must be a list of (a, b) label pairs; got {pairs!r}")
        for a_lab, b_lab in pairs:
            for lab in (a_lab, b_lab):
                if lab not in labels:
                    raise ValueError(f"pairs: {lab!r} is not a {by!r} in results; known: {_label_list(labels)}")
            if a_lab == b_lab:
                raise ValueError(f"pairs: ({a_lab!r}, {b_lab!r}) compares a configuration with itself")
        firsts = [p[0] for p in pairs]
        repeated = sorted({repr(x) for x in firsts if firsts.count(x) > 1})
        if repeated:
            raise ValueError(f"pairs: each a may appear at most once (it indexes the table); repeated: {', '.join(repeated)}")

    frame = pd.DataFrame({"seed": results["seed"].to_numpy(), "value": results[metric].to_numpy(dtype=np.float64),
                          "diverged": diverged}, index=results.index)
    if correct_col is not None:
        frame["correct"] = results[correct_col].to_numpy()
    by_label = {lab: frame[results[by].to_numpy() == lab].set_index("seed") for lab in labels}

    m = len(pairs)
    adj_conf = 1.0 - alpha / m
    out = []
    for a_lab, b_lab in pairs:
        A, B = by_label[a_lab], by_label[b_lab]
        common = sorted(set(A.index) & set(B.index))
        A, B = A.loc[common], B.loc[common]
        notes = []
        n_div_a, n_div_b = int(A["diverged"].sum()), int(B["diverged"].sum())
        if drop_diverged and n_div_a + n_div_b:
            keep = ~(A["diverged"].to_numpy() | B["diverged"].to_numpy())
            dropped = [s for s, k in zip(common, keep) if not k]
            A, B = A[keep], B[keep]
            notes.append(f"{n_div_a + n_div_b} diverged run{'s' * (n_div_a + n_div_b != 1)} dropped "
                         f"(seed{'s' * (len(dropped) != 1)} {', '.join(str(s) for s in dropped)})")
        elif n_div_a + n_div_b:
            notes.append(f"{n_div_a + n_div_b} diverged run{'s' * (n_div_a + n_div_b != 1)} included")
        va, vb = A["value"].to_numpy(), B["value"].to_numpy()
        if np.isnan(va).any() or np.isnan(vb).any():
            raise ValueError(f"results[{metric!r}] is NaN for a run of {a_lab!r} or {b_lab!r} that is compared; "
                             f"mark it diverged and use drop_diverged=True, or remove it")
        n = len(va)
        row = {"reference": b_lab, "n": n,
               "mean_a": float(va.mean()) if n else np.nan, "mean_b": float(vb.mean()) if n else np.nan,
               "mean_diff": float((va - vb).mean()) if n else np.nan,
               "low": np.nan, "high": np.nan, "half_width": np.nan, "p_value": np.nan,
               "adj_low": np.nan, "adj_high": np.nan, "p_adj": np.nan, "m": m, "alpha": alpha, "mde": np.nan}
        if n >= 2:
            t = paired_t(va, vb, confidence=confidence)
            ta = paired_t(va, vb, confidence=adj_conf)
            row.update(low=t["low"], high=t["high"], half_width=(t["high"] - t["low"]) / 2, p_value=t["p_value"],
                       adj_low=ta["low"], adj_high=ta["high"], p_adj=min(1.0, m * t["p_value"]),
                       mde=_mde(n, t["se"] * math.sqrt(n), alpha / m))
            if n < _MIN_SEEDS:
                notes.append(f"{n} paired seeds: t columns shown, but a verdict needs >= {_MIN_SEEDS}")
        elif n == 1:
            notes.append("1 paired seed: no t-test (needs >= 2)")
        else:
            notes.append("no seeds in common: nothing to compare")
        row["diverged"], row["diverged_reference"] = n_div_a, n_div_b
        row["boot_low"] = row["boot_high"] = np.nan
        row["_boot"] = False
        if correct_col is not None and n >= 1:
            cells = list(A["correct"]) + list(B["correct"])
            if any(_missing(c) for c in cells):
                notes.append(f"no {correct_col} for some runs: no bootstrap interval")
            else:
                arrs = [np.asarray(c) for c in cells]
                lengths = {arr.shape for arr in arrs}
                if len(lengths) != 1 or arrs[0].ndim != 1:
                    raise ValueError(f"results[{correct_col!r}]: the per-example arrays of {a_lab!r} vs {b_lab!r} "
                                     f"must all be 1-D of one length (same test set); got shapes {sorted(lengths)}")
                ca = _as_correct(f"results[{correct_col!r}] of {a_lab!r}", np.stack(arrs[:n]), ndim=(2,))
                cb = _as_correct(f"results[{correct_col!r}] of {b_lab!r}", np.stack(arrs[n:]), ndim=(2,))
                bt = bootstrap_diff(ca, cb, confidence=adj_conf, n_boot=n_boot, seed=seed)
                row.update(boot_low=bt["low"], boot_high=bt["high"], _boot=True)
                gap = max(np.abs(ca.mean(1) - va).max(), np.abs(cb.mean(1) - vb).max())
                if gap > 1e-6:
                    notes.append(f"mean of {correct_col} differs from {metric} by up to {gap:.2g}")
        if n < _MIN_SEEDS:
            row["verdict"] = too_few_seeds(n)
        elif row["adj_low"] > 0:
            row["verdict"] = "better"
        elif row["adj_high"] < 0:
            row["verdict"] = "worse"
        else:
            row["verdict"] = "no detectable difference"
        if n >= _MIN_SEEDS and row["_boot"]:
            t_excl = row["adj_low"] > 0 or row["adj_high"] < 0
            b_excl = row["boot_low"] > 0 or row["boot_high"] < 0
            if t_excl and not b_excl:
                notes.append("the bootstrap interval (seeds and examples) includes 0 while the t interval excludes it")
            elif b_excl and not t_excl:
                notes.append("the bootstrap interval (seeds and examples) excludes 0 while the t interval includes it")
            elif t_excl and (row["boot_low"] > 0) != (row["adj_low"] > 0):
                notes.append("the bootstrap interval (seeds and examples) and the t interval exclude 0 "
                             "on opposite sides")
        row.pop("_boot")
        row["note"] = "; ".join(notes)
        out.append((a_lab, row))

    columns = ["reference", "n", "mean_a", "mean_b", "mean_diff", "low", "high", "half_width", "p_value",
               "adj_low", "adj_high", "p_adj", "m", "alpha", "mde", "verdict", "diverged", "diverged_reference"]
    if correct_col is not None:
        columns += ["boot_low", "boot_high"]
    columns.append("note")
    table = pd.DataFrame([r for _, r in out], index=pd.Index([a for a, _ in out], name="configuration"),
                         columns=columns)
    return table.astype({"n": "int64", "m": "int64", "diverged": "int64", "diverged_reference": "int64"})


# --------------------------------------------------------------------------------------------------
# failures: how often runs of a configuration fail (diverge, crash, stay at chance)

# Searches over runs per arm stop here: the exact power needs an (n+1) x (2n+1) table per n.
_MAX_RUNS = 1_000


def _as_runs(name, x):
    """Per-run failure flags as a 1-D int array, from bool or 0/1 numbers; ValueError naming ``name``."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of 0/1 (or bool) values, one per run") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold only 0/1 (or False/True) values, one per run; got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per run); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty (one value per run)")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0/1 (or False/True) values, one per run")
    return arr.astype(np.int64)


def _fisher_central_p(k_a, n_a, k_b, n_b):
    """Central two-sided Fisher p-value ``min(1, 2 * min(p_less, p_greater))`` via scipy."""
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    p_less = stats.fisher_exact(table, alternative="less").pvalue
    p_greater = stats.fisher_exact(table, alternative="greater").pvalue
    return float(min(1.0, 2.0 * min(p_less, p_greater)))


def failure_rates(failed_a, failed_b, *, alpha=0.05):
    """Does configuration a fail more (or less) often than b? Fisher's exact test on the runs.

    ``failed_a``, ``failed_b``: one flag per run, True/1 = the run failed (diverged, crashed,
    stayed at chance). Runs need not be paired and the arms need not be the same size. With
    ``k`` failures out of ``n`` runs per arm, the 2 x 2 table is ``[[k_a, n_a - k_a], [k_b, n_b -
    k_b]]`` and

    * ``odds_ratio``, ``low``, ``high``: the conditional maximum-likelihood odds ratio of failing
      (a over b) and its exact ``1 - alpha`` interval, from
      ``scipy.stats.contingency.odds_ratio(table, kind="conditional")``; ``inf`` when b never
      fails and a does, NaN when neither or both always fail;
    * ``p_value``: the *central* two-sided Fisher p-value ``min(1, 2 * min(p_less, p_greater))``
      (``scipy.stats.fisher_exact`` with ``alternative="less"`` and ``"greater"``). Central, not
      scipy's default "sum of the less likely tables", because that is the test the exact
      interval inverts: ``p_value < alpha`` exactly when the interval excludes 1, so the verdict
      and the printed interval never disagree;
    * ``verdict``: "more failures" / "fewer failures" (a relative to b) exactly when ``p_value <
      alpha``, else "no detectable difference". Small counts decide little: 2 of 2 failing
      against 0 of 2 gives p = 1/3.

    Returns ``{"k_a", "n_a", "k_b", "n_b", "rate_a", "rate_b", "odds_ratio", "low", "high",
    "p_value", "verdict"}``. Plan the number of runs with :func:`runs_for_failure_rates`.
    """
    fa = _as_runs("failed_a", failed_a)
    fb = _as_runs("failed_b", failed_b)
    alpha = _check_prob("alpha", alpha, what="the significance level of the verdict, e.g. 0.05")
    k_a, n_a, k_b, n_b = int(fa.sum()), int(fa.size), int(fb.sum()), int(fb.size)
    table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = odds_ratio(table, kind="conditional")
        ci = res.confidence_interval(1.0 - alpha)
    p = _fisher_central_p(k_a, n_a, k_b, n_b)
    verdict = "no detectable difference"
    if p < alpha and k_a * n_b != k_b * n_a:
        verdict = "more failures" if k_a * n_b > k_b * n_a else "fewer failures"
    return {"k_a": k_a, "n_a": n_a, "k_b": k_b, "n_b": n_b, "rate_a": k_a / n_a, "rate_b": k_b / n_b,
            "odds_ratio": float(res.statistic), "low": float(ci.low), "high": float(ci.high), "p_value": p,
            "verdict": verdict}


def _fisher_central_p_grid(n_a, n_b):
    """Central two-sided Fisher p-values of every table, as an (n_a + 1) x (n_b + 1) array [k_a, k_b].

    Given the total number of failures t = k_a + k_b, k_a is hypergeometric: P(k_a = x | t) =
    C(n_a, x) C(n_b, t - x) / C(n_a + n_b, t). For each t the one-sided p-values are its
    cumulative sums from either end (the same numbers ``fisher_exact`` computes one table at a
    time); all tables at once keep the power enumeration fast.
    """
    N = n_a + n_b
    x = np.arange(n_a + 1)[:, None]
    t = np.arange(N + 1)[None, :]
    kb = t - x
    valid = (kb >= 0) & (kb <= n_b)
    kb_c = np.clip(kb, 0, n_b)
    logc = lambda n, k: special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)  # noqa: E731
    pmf = np.where(valid, np.exp(logc(n_a, x) + logc(n_b, kb_c) - logc(N, t)), 0.0)
    p_less = np.cumsum(pmf, axis=0)
    p_greater = np.cumsum(pmf[::-1], axis=0)[::-1]
    p = np.minimum(1.0, 2.0 * np.minimum(p_less, p_greater))
    grid = np.empty((n_a + 1, n_b + 1))
    xi, ti = np.nonzero(valid)
    grid[xi, ti - xi] = p[xi, ti]
    return grid


def _check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (a failure rate); got {value!r}")
    return float(value)


def failure_power(rate_a, rate_b, n_per_arm, alpha=0.05):
    """Exact power of :func:`failure_rates` with ``n_per_arm`` runs in each arm.

    The probability that the verdict is "more failures" or "fewer failures" when a fails with
    probability ``rate_a`` and b with ``rate_b``, independently per run: the sum, over every
    outcome ``(k_a, k_b)`` with ``p_value < alpha``, of ``Binom(k_a; n, rate_a) * Binom(k_b; n,
    rate_b)``. Exact enumeration, no normal approximation (which is far off at the small counts
    of failures). Not monotone in n: the test is discrete, and power can dip by a point or two
    when n grows by one.
    """
    rate_a = _check_rate("rate_a", rate_a)
    rate_b = _check_rate("rate_b", rate_b)
    if isinstance(n_per_arm, bool) or not isinstance(n_per_arm, numbers.Integral) or n_per_arm < 1:
        raise ValueError(f"n_per_arm must be an integer >= 1 (runs per configuration); got {n_per_arm!r}")
    alpha = _check_prob("alpha", alpha, what="the test's significance level, e.g. 0.05")
    return _failure_power(rate_a, rate_b, int(n_per_arm), alpha)


def _failure_power(rate_a, rate_b, n, alpha):
    k = np.arange(n + 1)
    reject = _fisher_central_p_grid(n, n) < alpha
    pa = stats.binom.pmf(k, n, rate_a)
    pb = stats.binom.pmf(k, n, rate_b)
    return float(min(1.0, pa @ (reject * pb[None, :]).sum(axis=1)))


def runs_for_failure_rates(rate_a, rate_b, power=0.8, alpha=0.05):
    """Smallest number of runs per arm at which :func:`failure_rates` detects ``rate_a`` vs ``rate_b``.

    Scans n upwards and returns the first n whose exact :func:`failure_power` reaches ``power``
    (since power is not monotone in n, a slightly larger n can fall just short). The scan starts
    at half the normal-approximation size ``(z_{1-alpha/2} + z_power)^2 (p_a q_a + p_b q_b) /
    (p_a - p_b)^2`` (or 2), where the exact power is still far below the target (at least 0.3
    below it over rates 0..1 and powers 0.5..0.9), so the answer is that of a scan from 2, in a
    fraction of the time. Failure rates are expensive to compare: 5 % against 30 % needs about
    40 runs per arm, and 20 per arm detect it less than half the time. Raises ValueError for
    equal rates and beyond 1,000 runs per arm.
    """
    rate_a = _check_rate("rate_a", rate_a)
    rate_b = _check_rate("rate_b", rate_b)
    if rate_a == rate_b:
        raise ValueError(f"rate_a and rate_b must differ (there is nothing to detect); got {rate_a!r} and {rate_b!r}")
    power = _check_prob("power", power, what="the target probability of detecting the difference, e.g. 0.8")
    alpha = _check_prob("alpha", alpha, what="the test's significance level, e.g. 0.05")
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    n_normal = z * z * (rate_a * (1 - rate_a) + rate_b * (1 - rate_b)) / (rate_a - rate_b) ** 2
    for n in range(max(2, int(n_normal // 2)), _MAX_RUNS + 1):
        if _failure_power(rate_a, rate_b, n, alpha) >= power:
            return n
    raise ValueError(f"failure rates {rate_a} vs {rate_b} need more than {_MAX_RUNS:,} runs per arm for power "
                     f"{power}: too close to tell apart by counting failures")


# --------------------------------------------------------------------------------------------------
# equivalence: "the two are the same, within a margin"


def _check_margin(margin):
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0 (the largest difference that counts as 'the same', "
                         f"in the metric's units); got {margin!r}")
    return float(margin)


def _check_tost_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 0.5:
        raise ValueError(f"alpha must be a number in (0, 0.5) (each one-sided test's level; the interval is "
                         f"1 - 2 * alpha); got {alpha!r}")
    return float(alpha)


def _compact(x):
    """A margin as written by hand: 0.01, 0.005, 2."""
    return f"{x:g}"


def equivalence(a, b, margin, alpha=0.05):
    """Are a and b the same within ``+-margin``? Paired TOST (two one-sided t-tests) over seeds.

    "No detectable difference" is not evidence of no difference: few seeds detect nothing. To
    *claim* that two configurations are equivalent, say what difference would not matter (the
    ``margin``, in the metric's units, chosen before looking) and show that the mean difference
    lies inside ``(-margin, +margin)``. With ``d_s = a_s - b_s`` over n paired seeds, mean ``m``,
    ``se = sd(d) / sqrt(n)`` and df = n - 1, the two one-sided tests are

        H0: mu <= -margin  ->  p_1 = P(t_{df} > (m + margin) / se)
        H0: mu >= +margin  ->  p_2 = P(t_{df} < (m - margin) / se)

    and ``p_value = max(p_1, p_2)``. ``equivalent`` is ``p_value < alpha``, which is exactly "the
    ``1 - 2 alpha`` interval ``m -+ t_{df, 1-alpha} * se`` lies inside (-margin, +margin)" -- a
    90 % interval for alpha = 0.05, not 95 %, because each one-sided test spends alpha on one
    side only. Zero variance (every seed moved by the same amount, as in :func:`paired_t`):
    ``p_value`` is 0 if ``|m| < margin`` and 1 otherwise.

    Returns ``{"mean", "low", "high", "p_value", "equivalent", "margin", "n", "alpha",
    "verdict"}`` with verdict ``"equivalent within ±0.01"`` or ``"not shown equivalent"``.
    Raises ValueError for unequal lengths, fewer than 3 pairs, a margin that is not a finite
    number > 0, or alpha outside (0, 0.5). Plan with :func:`seeds_for_equivalence`.
    """
    a_arr = _as_1d_float("a", a)
    b_arr = _as_1d_float("b", b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must have the same length (one value per paired seed); got {a_arr.size} and "
                         f"{b_arr.size}")
    if a_arr.size < _MIN_SEEDS:
        raise ValueError(f"a and b need at least {_MIN_SEEDS} paired values for an equivalence test; "
                         f"got n = {a_arr.size}")
    margin = _check_margin(margin)
    alpha = _check_tost_alpha(alpha)
    t = paired_t(a_arr, b_arr, confidence=1.0 - 2.0 * alpha)
    n, mean, se = t["n"], t["mean"], t["se"]
    if se == 0.0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        df = n - 1
        p_1 = float(stats.t.sf((mean + margin) / se, df))
        p_2 = float(stats.t.cdf((mean - margin) / se, df))
        p = max(p_1, p_2)
    equivalent = bool(p < alpha)
    verdict = f"equivalent within \u00b1{_compact(margin)}" if equivalent else "not shown equivalent"
    return {"mean": mean, "low": t["low"], "high": t["high"], "p_value": p, "equivalent": equivalent,
            "margin": margin, "n": n, "alpha": alpha, "verdict": verdict}


def _tost_power(n, std_diff, margin, alpha, true_diff=0.0):
    """Exact power of the paired TOST: P(the 1 - 2 alpha interval lies inside (-margin, margin)).

    With normal differences, the mean ``m ~ N(true_diff, sd^2 / n)`` and ``V = (n-1) s^2 / sd^2 ~
    chi2(n-1)`` are independent, and the test passes when ``|m -+ margin| > t_c * s / sqrt(n)``
    on both sides, i.e. ``-margin + h < m < margin - h`` with ``h = t_c * s / sqrt(n)``. Given
    V the probability is a difference of two normal cdfs (0 once h >= margin), so

        power = integral over V of [Phi((margin - h - true_diff) / se) - Phi((-margin + h - true_diff) / se)]

    with ``se = sd / sqrt(n)`` (Owen's 1965 formula). It is computed by adaptive quadrature
    (``scipy.integrate.quad``) over ``u = F_chi2(V)`` in [0, F_chi2(V_max)], where the integrand
    is bounded and smooth inside: no simulation, and no approximation beyond the quadrature (1e-9).
    """
    df = n - 1
    t_c = float(stats.t.ppf(1.0 - alpha, df))
    se = std_diff / math.sqrt(n)
    if se == 0.0:
        return 1.0 if abs(true_diff) < margin else 0.0
    v_max = (margin / (t_c * se)) ** 2 * df
    u_max = float(stats.chi2.cdf(v_max, df))
    if u_max == 0.0:
        return 0.0

    def inside(u):
        h = t_c * se * math.sqrt(float(stats.chi2.ppf(u, df)) / df)
        upper = stats.norm.cdf((margin - h - true_diff) / se)
        lower = stats.norm.cdf((-margin + h - true_diff) / se)
        return max(0.0, float(upper - lower))

    value, _ = integrate.quad(inside, 0.0, u_max, limit=200, epsabs=1e-9, epsrel=1e-8)
    return min(1.0, max(0.0, value))


def seeds_for_equivalence(std_diff, margin, power=0.8, alpha=0.05, true_diff=0.0):
    """Smallest n >= 3 at which a paired TOST (:func:`equivalence`) shows equivalence with ``power``.

    ``std_diff``: the standard deviation over seeds of the paired difference (a pilot value);
    ``margin``: the equivalence margin; ``true_diff``: the true mean difference assumed (0 = the
    two are truly the same; it must lie inside the margin). The power at each n is exact for
    normal differences (Owen's formula integrated numerically, see ``_tost_power``; no
    simulation); it increases with n, so the first n is found by doubling and bisection.
    Showing equivalence costs seeds: with sd 0.012, a margin of 0.01 needs about 14 seeds and a
    margin of 0.02 about 5. ``std_diff = 0`` gives 3. The search stops at 100,000 seeds with a
    ValueError.
    """
    std_diff = _check_positive("std_diff", std_diff, allow_zero=True)
    margin = _check_margin(margin)
    power = _check_prob("power", power, what="the target probability of showing equivalence, e.g. 0.8")
    alpha = _check_tost_alpha(alpha)
    if isinstance(true_diff, bool) or not isinstance(true_diff, numbers.Real) or not abs(float(true_diff)) < margin:
        raise ValueError(f"true_diff must be a number inside (-margin, +margin) = (-{margin}, {margin}): outside it "
                         f"equivalence is false and cannot be shown; got {true_diff!r}")
    true_diff = float(true_diff)
    ok = lambda n: _tost_power(n, std_diff, margin, alpha, true_diff) >= power  # noqa: E731
    if ok(_MIN_SEEDS):
        return _MIN_SEEDS
    lo, hi = _MIN_SEEDS, _MIN_SEEDS * 2
    while not ok(hi):
        if hi >= _MAX_SEEDS:
            raise ValueError(f"equivalence within {margin} at power {power} with std_diff {std_diff} needs more than "
                             f"{_MAX_SEEDS:,} seeds: the margin is too small for the noise")
        lo, hi = hi, min(2 * hi, _MAX_SEEDS)
    while hi - lo > 1:  # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


# --------------------------------------------------------------------------------------------------
# the same models, evaluated two ways


def mcnemar_models(correct_a, correct_b, alpha=0.05):
    """The same trained models evaluated two ways: per model McNemar, Holm across the models.

    ``correct_a``, ``correct_b``: 0/1 (or bool) arrays of shape (models, examples); row i of
    both is model i (e.g. one fine-tuned run per seed), scored on the same examples in two ways
    (a: without the attention mask, b: with it). Nothing is retrained, so the only noise is
    which examples flip: per model, the exact :func:`mcnemar` test on its discordant examples
    (``a_only``: right only under a, ``b_only``: right only under b), and Holm's adjustment
    (:func:`holm`) across the models, so that the chance of any false "better"/"worse" in the
    set stays at most ``alpha``. Holm, not Bonferroni, here: no interval is printed beside
    these verdicts, so the more powerful step-down adjustment costs no consistency.

    Returns ``{"table", "n_models", "n_worse", "n_better", "summary"}``: ``table`` a DataFrame
    with one row per model and columns ``model`` (row index i), ``b_only``, ``a_only``,
    ``diff`` (accuracy of a minus accuracy of b), ``p_value``, ``p_holm``, ``worse`` and
    ``better`` (``p_holm < alpha`` and the sign of ``diff``: a compared with b); ``summary``
    e.g. ``"worse in 3 of 3 models (McNemar, Holm across models)"``, ``"better in 1, worse in 1
    of 3 models (McNemar, Holm across models)"`` or ``"no model differs (McNemar, Holm across
    models)"``.
    """
    a = _as_correct("correct_a", correct_a, ndim=(2,))
    b = _as_correct("correct_b", correct_b, ndim=(2,))
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same shape (models, examples); "
                         f"got {a.shape} and {b.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"correct_a and correct_b need at least one model and one example; got shape {a.shape}")
    alpha = _check_prob("alpha", alpha, what="the family-wise significance level, e.g. 0.05")
    rows = []
    for i in range(a.shape[0]):
        r = mcnemar(a[i], b[i])
        rows.append({"model": i, "b_only": r["n01"], "a_only": r["n10"], "diff": float(a[i].mean() - b[i].mean()),
                     "p_value": r["p_value"]})
    table = pd.DataFrame(rows, columns=["model", "b_only", "a_only", "diff", "p_value"])
    table["p_holm"] = holm(table["p_value"].to_numpy())
    significant = table["p_holm"].to_numpy() < alpha
    table["worse"] = significant & (table["a_only"].to_numpy() < table["b_only"].to_numpy())
    table["better"] = significant & (table["a_only"].to_numpy() > table["b_only"].to_numpy())
    k, n_worse, n_better = len(table), int(table["worse"].sum()), int(table["better"].sum())
    models = f"{k} model{'s' * (k != 1)}"
    parts = [f"{word} in {count}" for word, count in (("better", n_better), ("worse", n_worse)) if count]
    summary = f"{', '.join(parts)} of {models}" if parts else "no model differs"
    return {"table": table, "n_models": k, "n_worse": n_worse, "n_better": n_better,
            "summary": f"{summary} (McNemar, Holm across models)"}


# --------------------------------------------------------------------------------------------------
# text


def _signed(x, digits):
    s = f"{x:+.{digits}f}"
    if float(s) == 0.0:  # no "-0.0000"
        s = f"{0.0:+.{digits}f}"
    return s.replace("-", "\u2212")


def _bound(x, digits):
    """An interval bound, signed; a non-zero bound never prints as 0, so its side of 0 stays visible."""
    if x == 0.0 or not math.isfinite(x):
        return _signed(x, digits)
    d = digits
    while float(f"{x:.{d}f}") == 0.0 and d < 20:
        d += 1
    return f"{x:+.{d}f}".replace("-", "\u2212")


def _sig(x, sig=2):
    """``x`` > 0 with ``sig`` significant digits, positional: 0.047, 1.3, 630; "inf", "n/a"."""
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "\u2212inf"
    if x == 0.0:
        return "0"
    decimals = sig - 1 - math.floor(math.log10(abs(x)))
    if decimals > 0:
        return f"{x:.{decimals}f}"
    return f"{round(x, decimals):.0f}"


def _ratio_bound(x):
    """An odds-ratio bound: 2 significant digits, more if it would print as 1 without being 1."""
    sig = 2
    text = _sig(x, sig)
    while math.isfinite(x) and x != 1.0 and x > 0 and float(text) == 1.0 and sig < 12:
        sig += 1
        text = _sig(x, sig)
    return text


def _p_text(p):
    return f"{p:.1e}" if 0 < p < 1e-4 else _sig(p, 2)


def _percent(level):
    return f"{100 * level:.10g}%"


def _get(row):
    if isinstance(row, pd.DataFrame) or not hasattr(row, "get") or not hasattr(row, "__contains__"):
        raise TypeError(f"row must be one compare() row (pandas Series or dict) or a dict from failure_rates, "
                        f"equivalence or mcnemar_models; got {type(row).__name__}")
    return row.get


def _kind(row):
    """Which result ``row`` is: "compare", "failures", "equivalence" or "mcnemar"."""
    _get(row)
    if "odds_ratio" in row:
        return "failures"
    if "equivalent" in row and "margin" in row:
        return "equivalence"
    if "n_models" in row and "summary" in row:
        return "mcnemar"
    if "mean_diff" in row and "verdict" in row:
        return "compare"
    raise ValueError("row is not a result this module renders: expected a compare() row (mean_diff, verdict, "
                     "adj_low, ...), a failure_rates dict (odds_ratio, ...), an equivalence dict (equivalent, "
                     "margin, ...) or a mcnemar_models dict (n_models, summary, ...)")


def format_effect(row, digits=4, interval="adjusted"):
    """``"+0.0123 [+0.0040, +0.0206]"``: a difference and its interval, for a claims table.

    ``row``: a row of :func:`compare`, or a dict with ``mean``, ``low``, ``high`` (from
    :func:`paired_t`, :func:`bootstrap_diff` or :func:`equivalence`). ``interval``:

    * ``"adjusted"`` (default): for a compare row, the Bonferroni-adjusted t interval
      (``adj_low``, ``adj_high``) -- the one its verdict follows; with fewer than 3 paired seeds
      there is no verdict and no interval is shown. For a dict, its own ``low``, ``high``;
    * ``"t"``: the unadjusted per-comparison t interval (``low``, ``high``);
    * ``"bootstrap"``: the two-level bootstrap interval (``boot_low``, ``boot_high``).

    Signs are always shown; minus is the typographic U+2212; a bound that is not 0 never prints
    as 0 (more digits are shown instead), so the printed interval shows which side of 0 it is
    on. Without an interval: ``"+0.0123 [no interval]"``.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"digits must be an integer >= 0; got {digits!r}")
    if interval not in ("adjusted", "t", "bootstrap"):
        raise ValueError(f"interval must be 'adjusted', 't' or 'bootstrap'; got {interval!r}")
    get = _get(row)
    mean = get("mean_diff", get("mean", None))
    if mean is None:
        raise ValueError("row needs 'mean_diff' (a compare() row) or 'mean' (a paired_t/bootstrap_diff/equivalence "
                         "dict)")
    is_compare = "mean_diff" in row
    if interval == "adjusted" and is_compare:
        if "adj_low" not in row or "adj_high" not in row:
            raise ValueError("row has no adj_low/adj_high (the adjusted interval of compare()); pass interval='t' "
                             "for the unadjusted one")
        n = get("n", None)
        keys = (None, None) if n is not None and n < _MIN_SEEDS else ("adj_low", "adj_high")
    elif interval == "bootstrap":
        keys = ("boot_low", "boot_high")
    else:
        keys = ("low", "high")
    low, high = get(keys[0], None), get(keys[1], None)
    mean = float(mean)
    if math.isnan(mean):
        return "n/a"
    if low is None or high is None or math.isnan(float(low)) or math.isnan(float(high)):
        return f"{_signed(mean, digits)} [no interval]"
    return f"{_signed(mean, digits)} [{_bound(float(low), digits)}, {_bound(float(high), digits)}]"


effect_text = format_effect


def test_name(row):
    """The short name of the test behind a result: what a notebook prints beside the verdict.

    ``"paired t, Bonferroni"`` for a :func:`compare` row (also when it has too few seeds for a
    verdict: it is the test the row would use), ``"Fisher's exact"`` for :func:`failure_rates`,
    ``"TOST"`` for :func:`equivalence`, ``"McNemar, Holm"`` for :func:`mcnemar_models`.
    """
    return {"compare": "paired t, Bonferroni", "failures": "Fisher's exact", "equivalence": "TOST",
            "mcnemar": "McNemar, Holm"}[_kind(row)]


test_name.__test__ = False  # not a pytest test, whatever its name


def verdict_text(row, digits=4):
    """The one line a notebook prints for a result: the verdict, then exactly the interval it follows.

    * a :func:`compare` row: ``"better: +0.0123 [+0.0040, +0.0206] (Bonferroni-adjusted 95%
      interval, paired t over 5 seeds)"`` -- the adjusted t interval (``adj_low``, ``adj_high``)
      at family level ``1 - alpha``, which excludes 0 exactly when the verdict is better/worse
      ("95% interval" alone when the call made one comparison). "no detectable difference"
      adds the row's mde: ``"...; mde 0.018"`` (the smallest effect detected with 80 % power).
      Fewer than 3 seeds: ``"too few seeds (n = 2): +0.0100"``, with no interval;
    * a :func:`failure_rates` dict: ``"more failures: 5/20 vs 0/20, odds ratio inf [1.02, inf]
      (Fisher's exact test, p = 0.047)"`` -- the exact odds-ratio interval, which excludes 1
      exactly when the verdict is more/fewer failures;
    * an :func:`equivalence` dict: ``"equivalent within ±0.01: +0.0010 [−0.0050, +0.0070] (TOST,
      90% interval, 14 seeds)"`` -- the 1 - 2 alpha interval, inside the margin exactly when
      equivalent;
    * a :func:`mcnemar_models` dict: its summary line.

    Bounds that are not 0 (or, for odds ratios, not 1) never print as 0 (1): more digits are
    shown instead. Raises TypeError/ValueError for anything else.
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise ValueError(f"digits must be an integer >= 0; got {digits!r}")
    kind = _kind(row)
    get = _get(row)
    if kind == "mcnemar":
        return str(get("summary"))
    if kind == "failures":
        return (f"{get('verdict')}: {get('k_a')}/{get('n_a')} vs {get('k_b')}/{get('n_b')}, odds ratio "
                f"{_sig(float(get('odds_ratio')))} [{_ratio_bound(float(get('low')))}, "
                f"{_ratio_bound(float(get('high')))}] (Fisher's exact test, p = {_p_text(float(get('p_value')))})")
    if kind == "equivalence":
        return (f"{get('verdict')}: {format_effect(row, digits)} (TOST, {_percent(1 - 2 * float(get('alpha')))} "
                f"interval, {get('n')} seeds)")
    verdict, n = get("verdict"), int(get("n"))
    mean = float(get("mean_diff"))
    if n < _MIN_SEEDS or verdict == too_few_seeds(n):
        return f"{too_few_seeds(n)}: {_signed(mean, digits) if math.isfinite(mean) else 'n/a'}"
    if verdict not in VERDICTS:
        raise ValueError(f"row['verdict'] must be one of {VERDICTS} or too_few_seeds(n); got {verdict!r}")
    alpha, m = get("alpha", None), get("m", None)
    level = "" if alpha is None else f"{_percent(1 - float(alpha))} "
    adjusted = "Bonferroni-adjusted " if m is None or int(m) > 1 else ""
    text = f"{verdict}: {format_effect(row, digits)} ({adjusted}{level}interval, paired t over {n} seeds)"
    if verdict == "no detectable difference":
        mde = float(get("mde", math.nan))
        text += f"; mde {_sig(mde)}" if math.isfinite(mde) else "; mde n/a"
    boot_low, boot_high = float(get("boot_low", math.nan)), float(get("boot_high", math.nan))
    if math.isfinite(boot_low) and math.isfinite(boot_high):
        t_excludes = verdict in ("better", "worse")
        b_excludes = boot_low > 0 or boot_high < 0
        if t_excludes != b_excludes:  # shown, not a veto: the sentence says the two disagree
            text += (f"; the bootstrap interval over seeds and test sentences, [{_signed(boot_low, digits)}, "
                     f"{_signed(boot_high, digits)}], {'excludes' if b_excludes else 'includes'} 0")
    return text
