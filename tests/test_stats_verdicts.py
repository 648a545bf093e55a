"""ftcourse.stats.verdict_text / test_name / format_effect: one renderer, and the interval it prints is the one
the verdict follows."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import metric_results

import ftcourse.stats as fstats
from ftcourse.stats import (compare, equivalence, failure_rates, format_effect, mcnemar_models, test_name,
                            too_few_seeds, verdict_text)

MINUS = "\u2212"
NUMBER = r"([+\u2212]?(?:[0-9.]+|inf))"
INTERVAL = re.compile(rf"\[{NUMBER}, {NUMBER}\]")


def _num(text):
    return float(text.replace(MINUS, "-"))


def _printed_interval(line):
    found = INTERVAL.findall(line)
    assert len(found) == 1, line
    return _num(found[0][0]), _num(found[0][1])




# ---------------------------------------------------------------------------------------------- exact strings


def test_compare_lines_exact():
    row = {"mean_diff": 0.0123, "adj_low": 0.0040, "adj_high": 0.0206, "verdict": "better", "n": 5, "m": 3,
           "alpha": 0.05, "mde": 0.011}
    assert verdict_text(row) == ("better: +0.0123 [+0.0040, +0.0206] (Bonferroni-adjusted 95% interval, "
                                 "paired t over 5 seeds)")
    row = {"mean_diff": -0.0020, "adj_low": -0.0150, "adj_high": 0.0110, "verdict": "no detectable difference",
           "n": 5, "m": 3, "alpha": 0.05, "mde": 0.0183}
    assert verdict_text(row) == ("no detectable difference: \u22120.0020 [\u22120.0150, +0.0110] (Bonferroni-adjusted "
                                 "95% interval, paired t over 5 seeds); mde 0.018")
    row = {"mean_diff": 0.01, "adj_low": 0.002, "adj_high": 0.018, "low": 0.004, "high": 0.016,
           "verdict": too_few_seeds(2), "n": 2, "m": 1, "alpha": 0.05, "mde": np.nan}
    assert verdict_text(row) == "too few seeds (n = 2): +0.0100"
    assert format_effect(row) == "+0.0100 [no interval]"  # the verdict follows no interval
    assert verdict_text(pd.Series(row)) == "too few seeds (n = 2): +0.0100"
    one = {"mean_diff": -0.03, "adj_low": -0.05, "adj_high": -0.01, "verdict": "worse", "n": 4, "m": 1, "alpha": 0.1}
    assert verdict_text(one) == "worse: \u22120.0300 [\u22120.0500, \u22120.0100] (90% interval, paired t over 4 seeds)"


def test_failure_and_equivalence_lines_exact():
    r = failure_rates(np.arange(20) < 5, np.zeros(20, bool))
    assert verdict_text(r) == ("more failures: 5/20 vs 0/20, odds ratio inf [1.02, inf] "
                               "(Fisher's exact test, p = 0.047)")  # 1.024 is not printed as "1.0"
    r = failure_rates([1, 1], [0, 0])
    assert verdict_text(r) == ("no detectable difference: 2/2 vs 0/2, odds ratio inf [0.22, inf] "
                               "(Fisher's exact test, p = 0.33)")
    e = {"mean": 0.0010, "low": -0.0050, "high": 0.0070, "p_value": 0.004, "equivalent": True, "margin": 0.01,
         "n": 14, "alpha": 0.05, "verdict": "equivalent within \u00b10.01"}
    assert verdict_text(e) == ("equivalent within \u00b10.01: +0.0010 [\u22120.0050, +0.0070] "
                               "(TOST, 90% interval, 14 seeds)")
    a = np.array([0.90, 0.91, 0.95, 0.93])
    real = equivalence(a, a - [0.001, 0.03, -0.02, 0.0], 0.01)
    assert verdict_text(real) == f"not shown equivalent: {format_effect(real)} (TOST, 90% interval, 4 seeds)"


def test_mcnemar_line_and_test_names():
    rng = np.random.default_rng(0)
    b = rng.random((3, 200)) < 0.8
    m = mcnemar_models(b, b)
    assert verdict_text(m) == m["summary"] == "no model differs (McNemar, Holm across models)"
    table = compare(metric_results(rng, 5, {"x": 0.01}, 0.005), baseline="base", correct=None)
    assert test_name(table.loc["x"]) == "paired t, Bonferroni"
    assert test_name(failure_rates([1, 0], [0, 0])) == "Fisher's exact"
    assert test_name(equivalence([0.9, 0.8, 0.7], [0.9, 0.8, 0.71], 0.05)) == "TOST"
    assert test_name(m) == "McNemar, Holm"


def test_renderer_errors():
    with pytest.raises(TypeError, match="row must be"):
        verdict_text([0.01, 0.0, 0.02])
    with pytest.raises(TypeError, match="row must be"):
        test_name(pd.DataFrame({"mean_diff": [0.0]}))
    with pytest.raises(ValueError, match="not a result"):
        verdict_text({"mean": 0.01, "low": 0.0, "high": 0.02})
    with pytest.raises(ValueError, match="verdict"):
        verdict_text({"mean_diff": 0.01, "adj_low": 0.0, "adj_high": 0.02, "verdict": "significant", "n": 5})
    with pytest.raises(ValueError, match="digits"):
        verdict_text({"mean_diff": 0.01, "verdict": "better", "n": 5}, digits=-1)


# ---------------------------------------------------------------------------------------------- the printed interval


def test_compare_printed_interval_excludes_0_iff_better_or_worse():
    rng = np.random.default_rng(31)
    seen = {}
    for _ in range(120):
        n, m = int(rng.integers(2, 8)), int(rng.integers(1, 4))
        sd = float(rng.choice([0.002, 0.01]))
        effects = {f"c{i}": float(rng.normal(0, 1.5 * sd)) for i in range(m)}
        table = compare(metric_results(rng, n, effects, sd), baseline="base", correct=None)
        for _, row in table.iterrows():
            line = verdict_text(row)
            seen[row["verdict"]] = seen.get(row["verdict"], 0) + 1
            assert line.startswith(row["verdict"] + ": "), line
            if n < 3:
                assert not INTERVAL.search(line) and "mde" not in line and line == f"too few seeds (n = {n}): " \
                    f"{format_effect(row)[:-len(' [no interval]')]}"
                continue
            low, high = _printed_interval(line)
            assert (low > 0 or high < 0) == (row["verdict"] in ("better", "worse")), line
            assert (low > 0) == (row["verdict"] == "better") and (high < 0) == (row["verdict"] == "worse")
            assert ("Bonferroni-adjusted 95% interval" in line) == (m > 1) and "95% interval" in line
            assert (row["verdict"] == "no detectable difference") == ("; mde " in line)
            assert format_effect(row) in line
    assert {"better", "worse", "no detectable difference", "too few seeds (n = 2)"} <= set(seen), seen


def test_failure_printed_interval_excludes_1_iff_verdict():
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(150):
        n_a, n_b = rng.integers(2, 30, 2)
        r = failure_rates(rng.random(n_a) < rng.random(), rng.random(n_b) < rng.random())
        line = verdict_text(r)
        low, high = _printed_interval(line)
        assert (low > 1 or high < 1) == (r["verdict"] != "no detectable difference"), line
        assert (low > 1) == (r["verdict"] == "more failures"), line
        seen.add(r["verdict"])
    assert len(seen) == 3


def test_equivalence_printed_interval_inside_margin_iff_equivalent():
    rng = np.random.default_rng(6)
    seen = set()
    for _ in range(150):
        n = int(rng.integers(3, 15))
        a = rng.normal(0.9, 0.01, n)
        r = equivalence(a, a - rng.normal(rng.normal(0, 0.005), 0.006, n), 0.01)
        low, high = _printed_interval(verdict_text(r))
        assert (-0.01 < low and high < 0.01) == r["equivalent"]
        seen.add(r["equivalent"])
    assert seen == {True, False}


# ---------------------------------------------------------------------------------------------- the module


def test_module_never_calls_a_half_width_a_bound():
    source = Path(fstats.__file__).read_text()
    for phrase in ("any effect is within", "smallest effect these seeds resolve", "smallest effect this many seeds"):
        assert phrase not in source.lower()
    assert "p_holm" not in compare.__doc__
    assert "Copy alone." in fstats.__doc__


def test_module_imports_only_numpy_scipy_pandas_and_stdlib():
    tree = ast.parse(Path(fstats.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: Copy alone."
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"numpy", "scipy", "pandas"}, roots


def test_public_names():
    for name in ("compare", "too_few_seeds", "failure_rates", "failure_power", "runs_for_failure_rates",
                 "equivalence", "seeds_for_equivalence", "mcnemar_models", "verdict_text", "test_name",
                 "format_effect", "effect_text", "VERDICTS"):
        assert name in fstats.__all__ and hasattr(fstats, name)


def test_the_sentence_says_when_the_bootstrap_disagrees_with_the_verdict():
    from ftcourse.stats import verdict_text

    row = {"mean_diff": 0.012, "low": 0.002, "high": 0.022, "adj_low": 0.002, "adj_high": 0.022, "n": 5, "m": 1,
           "alpha": 0.05, "mde": 0.01, "verdict": "better", "boot_low": -0.001, "boot_high": 0.025}
    text = verdict_text(row)
    assert text.startswith("better: ") and "bootstrap interval over seeds and test sentences" in text
    assert text.endswith("includes 0")
    agree = dict(row, boot_low=0.001)
    assert "bootstrap" not in verdict_text(agree)
    quiet = dict(row, verdict="no detectable difference", adj_low=-0.001, boot_low=0.003)
    assert verdict_text(quiet).endswith("excludes 0")
