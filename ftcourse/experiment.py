"""Experiments over seeds: one fine-tuning run per seed, a DataFrame of results, plots, claims.

Course harness (not a technique module): what the notebooks use to run and report experiments.

``fine_tune(profile, seed, ...)`` does one run end to end: seed, model, data, optimizer,
schedule, :func:`ftcourse.train.train`, checkpoint selection, test accuracy and per-example
predictions. Every technique of the course enters through one keyword: ``prepare_model`` (freeze,
re-init), ``param_groups`` (LLRD), ``optimizer`` (from-scratch optimizers), ``schedule``,
``accumulation_steps``, ``amp``, ``callbacks`` (SWA, early stopping) and ``select`` (final weights
or best validation checkpoint).

``run_seeds`` repeats it over the profile's seeds and returns one row per seed; ``summarize``
gives mean ± std; ``ftcourse.stats.compare`` gives the verdicts. One run proves nothing about a
1-point difference: always compare over seeds, paired by seed.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import data as ftdata
from .accumulation import optimizer_steps_per_epoch
from .amp import Precision
from .early_stopping import EarlyStopping, EarlyStoppingCallback
from .models import load_model
from .param_groups import decay_param_groups
from .profiles import Profile
from .schedules import get_schedule
from .train import History, evaluate, pick_device, set_seed, train

# Columns of a fine_tune row that hold one numpy array per run (dataset row order), not a number.
ARRAY_COLUMNS = ("val_predictions", "test_predictions", "val_correct", "test_correct")

# Every fine_tune call of this process, in order: its sizes and where its time went. The notebook
# footer compares it with the notebook's plan (ftcourse.plan) and ftcourse estimate's validation
# reads it. notebook_setup() empties it.
RUN_LOG: list[dict] = []


@dataclass
class RunResult:
    row: dict  # what goes into the DataFrame (numbers, and the arrays of ARRAY_COLUMNS)
    history: History
    model: torch.nn.Module | None = None
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def val_predictions(self) -> np.ndarray:
        return self.row["val_predictions"]

    @property
    def test_predictions(self) -> np.ndarray:
        return self.row["test_predictions"]


def default_optimizer(param_groups, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """``torch.optim.AdamW``, fused where the device supports it (3-5x faster steps on CPU)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused)


def make_schedule(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, **kwargs):
    """The course's schedules (``ftcourse.schedules.get_schedule``)."""
    return get_schedule(name, optimizer, num_warmup_steps, num_training_steps, **kwargs)


def _check_fraction(name: str, value, upper_open: bool = True) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and 0 <= value and (value < 1 if upper_open else value <= 1))
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {value!r}")


def _check_args(profile, lr, epochs, train_size, batch_size, weight_decay, warmup_ratio, evals_per_epoch,
                accumulation_steps, select, early_stopping_patience) -> None:
    """Every argument of ``fine_tune`` checked before anything is loaded (a typo costs no model load)."""
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be an ftcourse.profiles.Profile (get_profile()), got {type(profile).__name__}")
    if select not in ("final", "best"):
        raise ValueError(f"select must be 'final' or 'best', got {select!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a finite number > 0 (or None for the profile's), got {lr!r}")
    for name, value in (("epochs", epochs), ("train_size", train_size), ("batch_size", batch_size),
                        ("evals_per_epoch", evals_per_epoch), ("accumulation_steps", accumulation_steps),
                        ("early_stopping_patience", early_stopping_patience)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be an int >= 1 (or None for the profile's), got {value!r}")
    if weight_decay is not None and (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
                                     or not math.isfinite(weight_decay) or weight_decay < 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (or None for the profile's), got {weight_decay!r}")
    if warmup_ratio is not None:
        _check_fraction("warmup_ratio", warmup_ratio)


def _model_replacers(callbacks) -> list:
    """Callbacks that load other weights into the model at the end of training (SWA's average)."""
    return [cb for cb in callbacks if getattr(cb, "replace_model", False)]


def fine_tune(
    profile: Profile,
    seed: int,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    train_size: int | None = None,
    batch_size: int | None = None,
    group_by_length: bool = True,
    weight_decay: float | None = None,
    warmup_ratio: float | None = None,
    schedule: str = "linear",
    schedule_kwargs: dict | None = None,
    prepare_model: Callable | None = None,
    param_groups: Callable | None = None,
    optimizer: Callable | None = None,
    accumulation_steps: int = 1,
    amp: str | None | bool = True,
    max_grad_norm: float | None = 1.0,
    evals_per_epoch: int | None = None,
    callbacks: Callable | None = None,
    select: str = "final",
    early_stopping_patience: int | None = None,
    keep_model: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    model_factory: Callable | None = None,
) -> RunResult:
    """One seeded fine-tuning run on SST-2 (sizes from ``profile``; keywords override them).

    ``prepare_model(model)``: change the model before the optimizer is built (freeze, re-init).
    ``param_groups(model, lr, weight_decay) -> list[dict]``: default decayed/undecayed groups.
    ``optimizer(groups, lr, device) -> Optimizer``: default fused ``torch.optim.AdamW``.
    ``callbacks(model, optimizer, total_steps) -> list``: extra loop callbacks (SWA, ...).
    ``select``: ``"final"`` weights or the ``"best"`` validation checkpoint. ``"best"`` cannot be
    combined with a callback that replaces the model at the end (``SWACallback(replace_model=True)``):
    the best checkpoint would silently overwrite the average; ``ftcourse.recipe`` chooses between them.
    ``early_stopping_patience``: stop after this many evaluations without a better validation
    accuracy (``ftcourse.early_stopping``); None trains every step.
    ``amp``: True uses the profile's mode; or a mode of ``ftcourse.amp``. One ``Precision`` serves the
    training steps, the in-loop validation and the final validation and test passes, so
    ``val_accuracy`` and ``best_val_accuracy`` are measured the same way.
    ``group_by_length`` (default True): training batches of sentences of similar length
    (``Trainer``'s ``train_sampling_strategy="group_by_length"``) and evaluation batches sorted by
    length: less padding, faster steps. Metrics do not depend on the evaluation order, and
    predictions come back in dataset row order.
    ``model_factory(model_id) -> model``: how to load the model (default ``ftcourse.models.load_model``).

    The returned row holds: seed, test/val accuracy and loss, best_val_accuracy, steps, stopped_early,
    diverged, collapsed (>= 95% of test predictions one class: the run never left, or fell back to,
    the majority-class plateau), timing (``train_time_s`` training only, ``eval_time_s`` the in-loop validation,
    ``callback_time_s``, ``final_eval_time_s``; ``samples_per_s`` over training time only), peak
    memory, and the per-example arrays of ``ARRAY_COLUMNS`` in dataset row order.
    """
    _check_args(profile, lr, epochs, train_size, batch_size, weight_decay, warmup_ratio, evals_per_epoch,
                accumulation_steps, select, early_stopping_patience)
    started = time.perf_counter()
    lr = profile.lr if lr is None else lr
    epochs = profile.epochs if epochs is None else int(epochs)
    train_size = profile.train_size if train_size is None else int(train_size)
    batch_size = profile.batch_size if batch_size is None else int(batch_size)
    weight_decay = profile.weight_decay if weight_decay is None else weight_decay
    warmup_ratio = profile.warmup_ratio if warmup_ratio is None else warmup_ratio
    evals_per_epoch = profile.evals_per_epoch if evals_per_epoch is None else int(evals_per_epoch)
    amp = profile.amp if amp is True else (None if amp is False else amp)
    device = pick_device(device, verbose=False)
    precision = Precision(amp, device)

    splits = ftdata.profile_splits(profile, train_size)
    tokenizer = ftdata.cached_tokenizer(profile.model_id)
    set_seed(seed)  # before the model: the new classifier head is drawn from this seed
    model = (model_factory or load_model)(profile.model_id).to(device)
    if prepare_model is not None:
        prepare_model(model)
    train_loader = ftdata.make_loader(splits["train"], tokenizer, batch_size, shuffle=True, seed=seed,
                                      group_by_length=group_by_length)
    val_loader = ftdata.make_loader(splits["validation"], tokenizer, profile.eval_batch_size, shuffle=False,
                                    group_by_length=group_by_length)
    test_loader = ftdata.make_loader(splits["test"], tokenizer, profile.eval_batch_size, shuffle=False,
                                     group_by_length=group_by_length)

    groups = (param_groups or (lambda m, lr, wd: decay_param_groups(m, wd)))(model, lr, weight_decay)
    opt = (optimizer or default_optimizer)(groups, lr, device)
    total_steps = optimizer_steps_per_epoch(len(train_loader), accumulation_steps) * epochs
    scheduler = make_schedule(schedule, opt, round(warmup_ratio * total_steps), total_steps, **(schedule_kwargs or {}))
    extra = list(callbacks(model, opt, total_steps)) if callbacks is not None else []
    if select == "best" and _model_replacers(extra):
        raise ValueError(
            "select='best' with a callback that replaces the model at the end (e.g. SWACallback(replace_model=True)): "
            "the best checkpoint would silently overwrite the average. Use ftcourse.recipe.recipe_fine_tune_kwargs "
            "(swa_start=..., select_best=True), which keeps the better of the two on validation, or replace_model=False.")
    tracker = EarlyStopping(patience=early_stopping_patience, mode="max", verbose=False)
    if select == "best" or early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(tracker, metric="accuracy", restore=select == "best"))

    history = train(
        model, train_loader, opt, scheduler=scheduler, epochs=epochs, eval_loader=val_loader,
        evals_per_epoch=evals_per_epoch, max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps, precision=precision, callbacks=extra, device=device,
        progress=progress,
    )
    t0 = time.perf_counter()
    test = evaluate(model, test_loader, device, precision, return_predictions=True)
    evals = history.evals_frame()
    last = history.last_eval
    if callbacks is None and select == "final" and last is not None and last["step"] == len(history.steps):
        # the loop evaluated these very weights after its last step (only callbacks or a restore change them)
        val = {"accuracy": evals["val_accuracy"].iloc[-1], "loss": evals["val_loss"].iloc[-1],
               "predictions": last["predictions"], "labels": last["labels"]}
    else:
        val = evaluate(model, val_loader, device, precision, return_predictions=True)
    row = {
        "seed": seed, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "val_accuracy": val["accuracy"], "val_loss": val["loss"],
        "best_val_accuracy": evals["val_accuracy"].max() if len(evals) else float("nan"),
        "steps": len(history.steps), "stopped_early": history.stopped_early, "diverged": history.diverged,
        "collapsed": collapsed(test["predictions"]),
        "train_time_s": history.train_time_s, "eval_time_s": history.eval_time_s,
        "callback_time_s": history.callback_time_s, "final_eval_time_s": time.perf_counter() - t0,
        "samples_per_s": history.samples_per_s, "peak_memory_mb": history.peak_memory_mb,
        "val_predictions": val["predictions"], "test_predictions": test["predictions"],
        "val_correct": val["predictions"] == val["labels"], "test_correct": test["predictions"] == test["labels"],
    }
    RUN_LOG.append({"train_examples": len(splits["train"]), "epochs": epochs, "evals_per_epoch": evals_per_epoch,
                    "batch_size": batch_size, "accumulation_steps": accumulation_steps, "precision": precision.name,
                    "steps": row["steps"], "evaluations": len(history.evals), "val_examples": len(splits["validation"]),
                    "test_examples": len(splits["test"]), "train_time_s": history.train_time_s,
                    "eval_time_s": history.eval_time_s + row["final_eval_time_s"],
                    "total_s": time.perf_counter() - started})
    return RunResult(row, history, model if keep_model else None, val["labels"], test["labels"])


COLLAPSE_SHARE = 0.95


def collapsed(predictions) -> bool:
    """True when a run predicts one class for at least 95% of the examples: it never left the
    majority-class plateau (or fell back to it), whatever its accuracy says."""
    predictions = np.asarray(predictions)
    return bool(len(predictions)) and float(np.bincount(predictions).max() / len(predictions)) >= COLLAPSE_SHARE


def run_seeds(profile: Profile, label: str = "baseline", seeds=None, keep_histories: bool = True,
              progress: bool = True, **fine_tune_kwargs):
    """``fine_tune`` once per seed (default: the profile's seeds), with one progress bar over the runs.

    Returns ``(results, histories)``: a DataFrame with one row per seed (column ``label`` names the
    configuration, so several calls concatenate into one comparison; the per-example arrays of
    ``ARRAY_COLUMNS`` ride along, in dataset row order) and the seeds' histories.
    """
    import pandas as pd

    seeds = list(profile.seeds if seeds is None else seeds)
    rows, histories = [], {}
    import sys

    # on stdout, with the per-run lines it writes: saved notebooks keep them in order, bar last
    bar = tqdm(seeds, desc=label, unit="run", disable=not progress, leave=True, file=sys.stdout)
    # In a notebook the step counter goes on the runs' bar (one line: Jupyter cannot redraw nested
    # text bars); in a terminal each run draws its own step bar below it.
    inner = bar if progress and _in_notebook() else progress
    for seed in bar:
        result = fine_tune(profile, seed, progress=inner, **fine_tune_kwargs)
        rows.append({"label": label, **result.row})
        if keep_histories:
            histories[seed] = result.history
        row = result.row
        flag = "  DIVERGED" if row["diverged"] else "  COLLAPSED (one class)" if row["collapsed"] else ""
        bar.write(f"{label} seed {seed}: test accuracy {row['test_accuracy']:.4f} "
                  f"({row['train_time_s']:.0f} s training, {row['eval_time_s'] + row['final_eval_time_s']:.0f} s evaluation){flag}")
    bar.close()
    return pd.DataFrame(rows), histories


def _in_notebook() -> bool:
    import sys

    return "ipykernel" in sys.modules


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
