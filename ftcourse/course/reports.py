"""Reports of experiments: summary tables, figures, and each notebook's claims table.

Course harness (not a technique module).

``summarize`` gives mean ± std per configuration; ``plot_learning_curves`` and ``plot_seed_results``
draw a run's curves and the per-seed results; ``save_summary`` and ``save_claims`` write what
``python -m ftcourse run`` collects into ``results/``. The verdicts themselves come from
``ftcourse.stats.compare``.
"""
from __future__ import annotations

from .runner import ARRAY_COLUMNS


def scalar_columns(results):
    """``results`` without the per-example array columns (for display)."""
    return results.drop(columns=[c for c in ARRAY_COLUMNS if c in results.columns])


def summarize(results, metric: str = "test_accuracy", by: str = "label"):
    """Mean, std (sample, ddof=1) and count of ``metric`` per configuration, in first-seen order,
    with a ``mean ± std`` text column (and the number of diverged runs, when the rows say)."""
    order = list(dict.fromkeys(results[by]))
    table = results.groupby(by, sort=False)[metric].agg(["mean", "std", "count"]).reindex(order)
    table["mean ± std"] = [f"{m:.4f} ± {s:.4f}" if s == s else f"{m:.4f}" for m, s in zip(table["mean"], table["std"])]
    for flag in ("diverged", "collapsed"):
        if flag in results.columns:
            table[flag] = results.groupby(by, sort=False)[flag].sum().reindex(order).astype(int)
    return table


def plot_learning_curves(histories: dict, ax=None, title: str | None = None):
    """Training loss per step (thin) and validation accuracy per evaluation (markers), one colour a seed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    ax_acc = ax.twinx()
    for i, (seed, history) in enumerate(histories.items()):
        steps, evals = history.steps_frame(), history.evals_frame()
        color = f"C{i}"
        ax.plot(steps["step"], steps["loss"], color=color, alpha=0.35, lw=0.8)
        ax.plot(steps["step"], steps["loss"].rolling(10, min_periods=1).mean(), color=color, lw=1.5, label=f"seed {seed}")
        if len(evals):
            ax_acc.plot(evals["step"], evals["val_accuracy"], "o--", color=color, ms=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (line: 10-step mean)")
    ax_acc.set_ylabel("validation accuracy (markers)")
    ax.legend(loc="center right", fontsize=8)
    ax.set_title(title or "learning curves")
    return ax


def plot_seed_results(results, metric: str = "test_accuracy", by: str = "label", ax=None, title: str | None = None):
    """Per-seed points for each configuration, with the mean ± std as an error bar beside them."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.3 * results[by].nunique(), 4))
    table = summarize(results, metric, by)
    rng = np.random.default_rng(0)  # jitter only, so the points do not hide each other
    for x, label in enumerate(table.index):
        values = results.loc[results[by] == label, metric].to_numpy()
        ax.scatter(x + rng.uniform(-0.08, 0.08, len(values)), values, color=f"C{x}", alpha=0.7, zorder=3)
        ax.errorbar(x + 0.25, table.loc[label, "mean"], yerr=np.nan_to_num(table.loc[label, "std"]),
                    fmt="D", color="black", capsize=4, zorder=4)
    ax.set_xticks(range(len(table)), table.index, rotation=20, ha="right")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or f"{metric.replace('_', ' ')} per seed (diamond: mean ± std)")
    ax.grid(axis="y", alpha=0.3)
    return ax


def save_summary(name: str, table, directory=None) -> None:
    """Write a notebook's summary table where ``python -m ftcourse run`` collects it
    (``FTCOURSE_RESULTS_DIR``; nothing is written when it is unset)."""
    import os
    from pathlib import Path

    directory = directory or os.environ.get("FTCOURSE_RESULTS_DIR")
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    text = table.to_string() if hasattr(table, "to_string") else str(table)
    (Path(directory) / f"{name}.md").write_text(f"## {name}\n\n```\n{text}\n```\n")


# ---------------------------------------------------------------------------------------------
# Claims: what each notebook tested, with the measured effect and the verdict
# ---------------------------------------------------------------------------------------------
CLAIM_COLUMNS = ("claim", "source", "effect (95% CI)", "verdict")
NOT_RESOLVABLE = "not resolvable at this size"


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def effect_text(comparison) -> str:
    """``+0.0123 [-0.0040, +0.0286] (5 seeds)`` from a row of ``ftcourse.stats.compare`` (paired-t
    interval over seeds; the two-level bootstrap interval beside it when there is one)."""
    text = f"{_signed(comparison['mean_diff'])}"
    if comparison.get("low") == comparison.get("low"):  # not NaN
        text += f" [{_signed(comparison['low'])}, {_signed(comparison['high'])}]"
    boot_low = comparison.get("boot_low", float("nan"))
    if boot_low == boot_low:
        text += f", bootstrap [{_signed(boot_low)}, {_signed(comparison['boot_high'])}]"
    return text + f" ({int(comparison['n'])} seeds)"


def claim(claim: str, source: str, comparison=None, *, effect: str | None = None, verdict: str | None = None,
          resolution: float | None = None) -> dict:
    """One row of a notebook's claims table: the claim, its source (article title or paper), the
    measured effect with its 95% interval, and the verdict.

    From a ``compare`` row (``comparison``), effect and verdict are filled in from it. With
    ``resolution`` (e.g. 0.02), a "no detectable difference" whose interval is wider than
    ±resolution becomes "not resolvable at this size (±h)": the run could not have seen an effect of
    that size, which is not evidence of no effect. For a replayed mechanism (no seeds involved), pass
    ``effect`` and ``verdict`` as text.
    """
    if comparison is not None:
        effect = effect if effect is not None else effect_text(comparison)
        if verdict is None:
            verdict = comparison["verdict"]
            half = comparison.get("half_width", float("nan"))
            low, high = comparison.get("low", float("nan")), comparison.get("high", float("nan"))
            if verdict == "no detectable difference" and (low > 0 or high < 0):
                # the printed interval is per comparison; the verdict is corrected for all of them
                p_holm = comparison.get("p_holm", float("nan"))
                verdict = (f"no detectable difference after Holm's correction (p_holm {p_holm:.3f}), although "
                           "this interval alone excludes 0")
                if "bootstrap" in str(comparison.get("note", "")):
                    verdict = "no detectable difference: the bootstrap interval (seeds and examples) includes 0"
            elif resolution is not None and verdict == "no detectable difference" and not half <= resolution:
                verdict = f"{NOT_RESOLVABLE} (±{half:.3f})" if half == half else NOT_RESOLVABLE
    if effect is None or verdict is None:
        raise ValueError("claim needs a compare row, or both effect= and verdict=")
    return {"claim": claim, "source": source, "effect (95% CI)": effect, "verdict": verdict}


def claims_table(rows, notebook: str | None = None):
    """The claims rows as a DataFrame (columns ``CLAIM_COLUMNS``). In a notebook it also shows as a
    markdown table (the ``text/markdown`` output that ``scripts/evidence.py`` collects into README)."""
    import pandas as pd

    class ClaimsTable(pd.DataFrame):
        _metadata = ["notebook"]

        @property
        def _constructor(self):
            return ClaimsTable

        def _repr_markdown_(self):
            return claims_markdown(self, getattr(self, "notebook", None))

    table = ClaimsTable(pd.DataFrame(list(rows), columns=list(CLAIM_COLUMNS)))
    table.index = range(1, len(table) + 1)
    table.notebook = notebook
    return table


def claims_markdown(table, notebook: str | None = None) -> str:
    """A markdown table of claims (with a notebook column when ``notebook`` is given)."""
    columns = list(CLAIM_COLUMNS) + (["notebook"] if notebook else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        cells = [str(r[c]).replace("|", "\\|").replace("\n", " ") for c in CLAIM_COLUMNS] + ([notebook] if notebook else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_claims(name: str, rows, directory=None):
    """Show and save a notebook's claims table: returns the DataFrame, and writes ``<name>.claims.md``
    where ``python -m ftcourse run`` collects every notebook's into ``results/claims.md``
    (``FTCOURSE_RESULTS_DIR``; nothing is written when it is unset)."""
    import os
    from pathlib import Path

    table = claims_table(rows, name)
    directory = directory or os.environ.get("FTCOURSE_RESULTS_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.claims.md").write_text(claims_markdown(table, name))
    return table
