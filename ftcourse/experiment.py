"""Experiments over seeds: one fine-tuning run per seed, a DataFrame of results, plots.

``fine_tune(profile, seed, ...)`` does one run end to end: seed, model, data, optimizer,
schedule, :func:`ftcourse.train.train`, checkpoint selection, test accuracy. Every technique of
the course enters through one keyword: ``prepare_model`` (freeze, re-init), ``param_groups``
(LLRD), ``optimizer`` (from-scratch optimizers), ``schedule``, ``accumulation_steps``, ``amp``,
``callbacks`` (SWA, early stopping) and ``select`` (final weights or best validation checkpoint).

``run_seeds`` repeats it over the profile's seeds and returns one row per seed; ``summarize``
gives mean ± std. One run proves nothing about a 1-point difference: always compare over seeds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import data as ftdata
from .early_stopping import EarlyStopping, EarlyStoppingCallback
from .models import load_model
from .param_groups import decay_param_groups
from .profiles import Profile
from .train import History, evaluate, pick_device, set_seed, train


@dataclass
class RunResult:
    row: dict  # what goes into the DataFrame
    history: History
    model: torch.nn.Module | None = None


def default_optimizer(param_groups, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """``torch.optim.AdamW``, fused where the device supports it (3-5x faster steps on CPU)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused)


def make_schedule(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, **kwargs):
    """The course's schedules (``ftcourse.schedules``) when present, else transformers'."""
    try:
        from .schedules import get_schedule
    except ImportError:
        from transformers import get_scheduler

        return get_scheduler(name, optimizer, num_warmup_steps=num_warmup_steps,
                             num_training_steps=num_training_steps, scheduler_specific_kwargs=kwargs or None)
    return get_schedule(name, optimizer, num_warmup_steps, num_training_steps, **kwargs)


def fine_tune(
    profile: Profile,
    seed: int,
    *,
    lr: float | None = None,
    epochs: int | None = None,
    train_size: int | None = None,
    batch_size: int | None = None,
    group_by_length: bool = False,
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
) -> RunResult:
    """One seeded fine-tuning run on SST-2 (sizes from ``profile``; keywords override them).

    ``prepare_model(model)``: change the model before the optimizer is built (freeze, re-init).
    ``param_groups(model, lr, weight_decay) -> list[dict]``: default decayed/undecayed groups.
    ``optimizer(groups, lr, device) -> Optimizer``: default fused ``torch.optim.AdamW``.
    ``callbacks(model, optimizer, total_steps) -> list``: extra loop callbacks (SWA, ...).
    ``select``: ``"final"`` weights or the ``"best"`` validation checkpoint.
    ``early_stopping_patience``: stop after this many evaluations without a better validation
    accuracy (``ftcourse.early_stopping``); None trains every step.
    ``amp``: True uses the profile's mode; or a mode of ``ftcourse.amp``.
    ``group_by_length``: batches of sentences of similar length (``ftcourse.data.make_loader``): less
    padding, so faster steps and evaluations. Training batches as ``Trainer``'s
    ``train_sampling_strategy="group_by_length"``; evaluation in a fixed longest-first order (the
    metrics do not depend on the order).
    """
    if select not in ("final", "best"):
        raise ValueError(f"select must be 'final' or 'best', got {select!r}")
    lr = profile.lr if lr is None else lr
    epochs = profile.epochs if epochs is None else epochs
    batch_size = profile.batch_size if batch_size is None else batch_size
    weight_decay = profile.weight_decay if weight_decay is None else weight_decay
    warmup_ratio = profile.warmup_ratio if warmup_ratio is None else warmup_ratio
    evals_per_epoch = profile.evals_per_epoch if evals_per_epoch is None else evals_per_epoch
    amp = profile.amp if amp is True else (None if amp is False else amp)
    device = pick_device(device, verbose=False)

    splits = ftdata.tokenized_splits(profile.model_id, profile.max_length, train_size or profile.train_size, profile.data_seed)
    tokenizer = ftdata.cached_tokenizer(profile.model_id)
    set_seed(seed)  # before the model: the new classifier head is drawn from this seed
    model = load_model(profile.model_id).to(device)
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
    steps_per_epoch = math.ceil(len(train_loader) / accumulation_steps)
    total_steps = steps_per_epoch * epochs
    scheduler = make_schedule(schedule, opt, round(warmup_ratio * total_steps), total_steps, **(schedule_kwargs or {}))
    extra = list(callbacks(model, opt, total_steps)) if callbacks is not None else []
    tracker = EarlyStopping(patience=early_stopping_patience, mode="max", verbose=False)
    if select == "best" or early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(tracker, metric="accuracy", restore=select == "best"))

    history = train(
        model, train_loader, opt, scheduler=scheduler, epochs=epochs, eval_loader=val_loader,
        eval_every=max(1, steps_per_epoch // evals_per_epoch), max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps, precision=amp, callbacks=extra, device=device,
        progress=progress,
    )
    t0 = time.perf_counter()
    test = evaluate(model, test_loader, device)
    evals = history.evals_frame()
    if callbacks is None and select == "final" and len(evals) and evals["step"].iloc[-1] == len(history.steps):
        # the loop evaluated these very weights after its last step (only callbacks or a restore change them)
        val = {"accuracy": evals["val_accuracy"].iloc[-1]}
    else:
        val = evaluate(model, val_loader, device)
    row = {
        "seed": seed, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "val_accuracy": val["accuracy"], "best_val_accuracy": evals["val_accuracy"].max() if len(evals) else float("nan"),
        "steps": len(history.steps), "stopped_early": history.stopped_early, "train_time_s": history.train_time_s,
        "samples_per_s": sum(r["items"] for r in history.steps) / history.train_time_s,
        "peak_memory_mb": history.peak_memory_mb, "eval_time_s": time.perf_counter() - t0,
    }
    return RunResult(row, history, model if keep_model else None)


def run_seeds(profile: Profile, label: str = "baseline", seeds=None, keep_histories: bool = True, **fine_tune_kwargs):
    """``fine_tune`` once per seed (default: the profile's seeds).

    Returns ``(results, histories)``: a DataFrame with one row per seed (column ``label`` names
    the configuration, so several calls concatenate into one comparison) and the seeds' histories.
    """
    import pandas as pd

    seeds = profile.seeds if seeds is None else seeds
    rows, histories = [], {}
    for seed in seeds:
        result = fine_tune(profile, seed, **fine_tune_kwargs)
        rows.append({"label": label, **result.row})
        if keep_histories:
            histories[seed] = result.history
        print(f"{label} seed {seed}: test accuracy {result.row['test_accuracy']:.4f} "
              f"({result.row['train_time_s']:.0f} s)")
    return pd.DataFrame(rows), histories


def summarize(results, metric: str = "test_accuracy", by: str = "label"):
    """Mean, std (sample, ddof=1) and count of ``metric`` per configuration, in first-seen order,
    with a ``mean ± std`` text column."""
    order = list(dict.fromkeys(results[by]))
    table = results.groupby(by, sort=False)[metric].agg(["mean", "std", "count"]).reindex(order)
    table["mean ± std"] = [f"{m:.4f} ± {s:.4f}" if s == s else f"{m:.4f}" for m, s in zip(table["mean"], table["std"])]
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
