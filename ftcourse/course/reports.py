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


def choose_on_validation(sweep, runs_at: dict, groups: dict | None = None, fields: dict | None = None):
    """An lr sweep's choice, recomputed from its runs (``sweep``: what ``declared_runs`` gives for the notebook's
    "lr sweep" cell, one selection seed), and checked against what the comparison runs at.

    Returns ``(grid, chosen)``: ``grid``, validation accuracy by lr (rows) and configuration (columns: each sweep arm's
    label without its last ", <field> <value> (sweep)" part); ``chosen``, ``{group: (lr, column)}``, the best cell of
    each group's columns (``groups``: ``{name: [columns]}``, chosen jointly, e.g. LLRD's lr and decay; default: one
    group a column). The lr of a configuration is its recipe's peak ``lr``, or the recipe field ``fields`` names for
    it (``{column: "swa_lr"}``: SWA's constant lr). Prints, per group, the choice, whether it lies at the edge of its
    grid (then the optimum may lie beyond: extend the grid), and whether it is the recipe the comparison runs at
    (``runs_at``: ``{group: recipe}``; equal up to the seed and the number of evaluations, which never change
    training); then one run's binomial standard error."""
    import math

    import pandas as pd

    from .recipes import Recipe

    fields = fields or {}
    recipes = {key: Recipe.from_dict(run.record["recipe"]) for key, run in sweep.runs.items()}
    rows = []
    for (label, seed), run in sweep.runs.items():
        configuration = label.rsplit(", ", 1)[0]
        field = fields.get(configuration, "lr")
        rows.append({"configuration": configuration, "field": field, "lr": getattr(recipes[label, seed], field),
                     "val_accuracy": run.row["val_accuracy"], "recipe": recipes[label, seed]})
    frame = pd.DataFrame(rows)
    unknown = set(fields) - set(frame.configuration)
    if unknown:
        raise ValueError(f"fields names configurations the sweep does not hold: {sorted(unknown)}; "
                         f"it holds {sorted(set(frame.configuration))}")
    grid = frame.pivot_table(index="lr", columns="configuration", values="val_accuracy")
    groups = groups or {column: [column] for column in grid.columns}
    same = lambda r: r.replace(seed=0, evals_per_epoch=1)  # noqa: E731  (neither changes training)
    chosen = {}
    for name, columns in groups.items():
        lr, column = grid[columns].stack().idxmax()
        chosen[name] = (lr, column)
        lrs = grid[column].dropna().index
        edge = " (at the edge of its lr grid: the optimum may lie beyond it)" if lr in (lrs.min(), lrs.max()) else ""
        picked = frame[(frame.configuration == column) & (frame.lr == lr)].recipe.iloc[0]
        runs = "what the comparison runs at" if same(picked) == same(runs_at[name]) else (
            f"the comparison runs {runs_at[name].describe()}")
        field = "peak lr" if fields.get(column, "lr") == "lr" else fields[column]
        print(f"{name}: chosen {column} at {field} {lr:g}{edge}; {runs}")
    best, n = float(grid.max().max()), len(next(iter(sweep.runs.values())).row["val_predictions"])
    print(f"one run's validation accuracy has a binomial SE of {math.sqrt(best * (1 - best) / n):.3f} ({n} sentences): "
          "lrs closer than that are a choice, not a finding")
    return grid, chosen


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
# Claims: what each notebook tested, with the measured effect, the test that decided, and the verdict
# ---------------------------------------------------------------------------------------------
CLAIM_COLUMNS = ("claim", "source", "scope", "effect (interval)", "test", "verdict")
CLAIMS_MIME = "application/vnd.ftcourse.claims+json"


def claim(claim: str, source: str, result=None, *, scope: str = "", effect: str | None = None,
          test: str | None = None, verdict: str | None = None, resolution: float | None = None) -> dict:
    """One row of a notebook's claims table: the claim, its source (the article's title, or the paper), its
    **scope** (model, examples x epochs or steps, and whether that is the source's regime), the measured effect
    with the interval its verdict follows, the test that decided, and the verdict.

    ``result``: a ``ftcourse.stats.compare`` row, or a ``failure_rates``, ``equivalence`` or ``mcnemar_models``
    result: effect, test and verdict then come from ``ftcourse.stats`` (its one renderer), so the interval beside
    a verdict is always the one it follows. ``resolution`` (e.g. 0.02): a "no detectable difference" whose mde
    is larger says so ("could not detect ±0.02"), since that is not evidence of no effect. For a replayed
    mechanism (no seeds involved) pass ``effect``, ``test`` and ``verdict`` as text.
    """
    from .. import stats

    numbers = {}
    if result is not None:
        kind = stats.test_name(result)
        if effect is None:
            if kind == "Fisher's exact":
                effect = (f"{result['k_a']}/{result['n_a']} vs {result['k_b']}/{result['n_b']} failed, odds ratio "
                          f"{result['odds_ratio']:.3g} [{result['low']:.3g}, {result['high']:.3g}]")
            elif kind == "McNemar, Holm":
                effect = stats.verdict_text(result)
            else:
                effect = stats.format_effect(result) + (f" ({int(result['n'])} seeds)" if "n" in result else "")
        test = test or kind
        if verdict is None:
            verdict = str(result["verdict"] if kind != "McNemar, Holm" else result["summary"])
            mde = result.get("mde", float("nan")) if hasattr(result, "get") else float("nan")
            if verdict == "no detectable difference" and mde == mde:
                verdict += f" (mde {mde:.3f}" + (f": could not detect ±{resolution:g})" if resolution is not None
                                                 and not mde <= resolution else ")")
        numbers = _claim_numbers(result, kind)
    if effect is None or verdict is None:
        raise ValueError("claim needs a result (a compare row, failure_rates, equivalence or mcnemar_models), "
                         "or effect= and verdict= (and test=) as text")
    return {"claim": claim, "source": source, "scope": scope, "effect (interval)": effect,
            "test": test or "—", "verdict": verdict, "_numbers": numbers}


def _claim_numbers(result, kind: str) -> dict:
    """The numbers the course-wide forest plot draws: the effect, the interval the verdict follows, its scale."""
    get = result.get
    if kind == "paired t, Bonferroni" and get("n", 0) >= 3:
        return {"effect": float(get("mean_diff")), "low": float(get("adj_low")), "high": float(get("adj_high")),
                "scale": "difference", "verdict": str(get("verdict"))}
    if kind == "TOST":
        return {"effect": float(get("mean")), "low": float(get("low")), "high": float(get("high")),
                "scale": "difference", "verdict": str(get("verdict")), "margin": float(get("margin"))}
    if kind == "Fisher's exact":
        return {"effect": float(get("odds_ratio")), "low": float(get("low")), "high": float(get("high")),
                "scale": "odds ratio", "verdict": str(get("verdict"))}
    return {}


class ClaimsTable:
    """A notebook's claims: shown as a Markdown table (never as HTML, which JupyterLab, GitHub and Colab cut
    off), with the numbers of each claim beside it for the course-wide forest plot (``CLAIMS_MIME``)."""

    def __init__(self, rows, notebook: str | None = None):
        import pandas as pd

        rows = list(rows)
        self.notebook = notebook
        self.numbers = [r.get("_numbers", {}) for r in rows]
        self.frame = pd.DataFrame([{c: r[c] for c in CLAIM_COLUMNS} for r in rows], columns=list(CLAIM_COLUMNS))
        self.frame.index = range(1, len(self.frame) + 1)

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, column):
        return self.frame[column]

    @property
    def loc(self):
        return self.frame.loc

    def markdown(self) -> str:
        return claims_markdown(self.frame, self.notebook)

    def _repr_mimebundle_(self, include=None, exclude=None):
        forest = [{"notebook": self.notebook, "claim": c, **n} for c, n in zip(self.frame["claim"], self.numbers) if n]
        return {"text/markdown": self.markdown(), "text/plain": self.frame.to_string(),
                CLAIMS_MIME: {"notebook": self.notebook, "claims": forest}}


def claims_table(rows, notebook: str | None = None) -> ClaimsTable:
    """The claims rows as a :class:`ClaimsTable` (its ``frame`` has the columns ``CLAIM_COLUMNS``)."""
    return ClaimsTable(rows, notebook)


def claims_markdown(table, notebook: str | None = None) -> str:
    """A Markdown table of claims (with a notebook column when ``notebook`` is given)."""
    frame = table.frame if isinstance(table, ClaimsTable) else table
    columns = list(CLAIM_COLUMNS) + (["notebook"] if notebook else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in frame.iterrows():
        cells = [str(r[c]).replace("|", "\\|").replace("\n", " ") for c in CLAIM_COLUMNS] + ([notebook] if notebook else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_claims(name: str, rows, directory=None) -> ClaimsTable:
    """Show and save a notebook's claims table: returns it, and writes ``<name>.claims.md`` and
    ``<name>.claims.json`` (its numbers, for the forest plot) where ``python -m ftcourse run`` collects them
    (``FTCOURSE_RESULTS_DIR``; nothing is written when it is unset)."""
    import json
    import os
    from pathlib import Path

    table = claims_table(rows, name)
    directory = directory or os.environ.get("FTCOURSE_RESULTS_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.claims.md").write_text(table.markdown())
        (Path(directory) / f"{name}.claims.json").write_text(json.dumps(table._repr_mimebundle_()[CLAIMS_MIME], indent=1))
    return table


VERDICT_COLOURS = {"better": "C2", "fewer failures": "C2", "worse": "C3", "more failures": "C3",
                   "equivalent": "C0", "no detectable difference": "0.45", "not shown equivalent": "0.45"}


def forest_plot(claims: list[dict], ax=None, title: str = "every quantitative claim of the course"):
    """One figure of every quantitative claim: its effect and the interval its verdict follows, grouped by
    notebook (top to bottom) and coloured by verdict; differences on one axis, odds ratios (failure counts, log
    scale) on another. ``claims``: the dicts of ``CLAIMS_MIME`` outputs (``notebook``, ``claim``, ``effect``,
    ``low``, ``high``, ``scale``, ``verdict``)."""
    import matplotlib.pyplot as plt
    import numpy as np

    differences = [c for c in claims if c.get("scale") == "difference"]
    ratios = [c for c in claims if c.get("scale") == "odds ratio"]
    panels = [(differences, "difference (accuracy)")] + ([(ratios, "odds ratio of failing (log scale)")] if ratios else [])
    if ax is None:
        height = 1.2 + 0.28 * max(1, len(differences), len(ratios))
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), height), squeeze=False)
        axes = list(axes[0])
    else:
        axes = [ax]
        panels = panels[:1]
    for axis, (items, xlabel) in zip(axes, panels):
        y = np.arange(len(items))[::-1]
        for yi, c in zip(y, items):
            key = "equivalent" if str(c["verdict"]).startswith("equivalent") else str(c["verdict"])
            colour = VERDICT_COLOURS.get(key, "0.45")
            low, high = c["low"], c["high"]
            axis.plot([low, high], [yi, yi], color=colour, lw=2)
            axis.plot([c["effect"]], [yi], "o", color=colour, ms=5)
        axis.axvline(1.0 if "ratio" in xlabel else 0.0, color="k", lw=0.8)
        if "ratio" in xlabel:
            axis.set_xscale("log")
        axis.set_yticks(y, [f"{c['notebook'][:2]} · {c['claim'][:60]}" for c in items], fontsize=7)
        axis.set_xlabel(xlabel)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_title(title + " (green better, red worse, blue equivalent, grey no verdict)", fontsize=9)
    return axes[0]
