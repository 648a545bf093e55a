"""Running recipes: ``build_training`` puts a :class:`~ftcourse.course.recipes.Recipe` together,
``fine_tune`` runs one, ``run_seeds`` repeats one over seeds.

Course harness (not a technique module).

``build_training(recipe, model)`` is the one function to read to see how a full recipe is put
together from the technique modules: model changes (re-initialise the top blocks, freeze the bottom
ones), parameter groups (no decay on biases and norms; LLRD; grouped LLRD), the optimizer (torch's
fused AdamW or a from-scratch one of ``ftcourse.optim``), the schedule, and the callbacks (gradual
unfreezing, SWA, early stopping, the best-checkpoint choice). ``fine_tune`` adds the data, the seed
and the loop (``ftcourse.train.train``), then scores the weights the run ends with on validation and
test, with per-example predictions in dataset row order.

A live run can still take code the recipe cannot hold (a teaching copy of a callback, a recorder):
``fine_tune(recipe, callbacks=..., optimizer=..., param_groups=..., prepare_model=...)``. Such a
run is marked ``custom`` in its record, since its recipe alone does not reproduce it.

``fine_tune(profile, seed, **keywords)``, the signature of the notebooks written before recipes,
is a thin wrapper: it builds the recipe from the profile and the keywords (``baseline_recipe``
then ``replace``) and runs it, so both give the same numbers.

One run proves nothing about a 1-point difference: compare over seeds, paired by seed
(``ftcourse.stats.compare``).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .. import optim as from_scratch
from ..amp import Precision
from ..early_stopping import EarlyStopping, EarlyStoppingCallback
from ..freezing import GradualUnfreezing, all_param_groups, freeze_bottom_layers
from ..llrd import grouped_llrd_param_groups, llrd_param_groups
from ..lora import add_lora
from ..models import encoder_layers
from ..param_groups import decay_param_groups
from ..reinit import reinit_top_layers
from ..schedules import get_schedule
from ..swa import SWACallback
from ..train import History, evaluate, pick_device, set_seed, train
from . import data as ftdata
from .combined import BestOfCallback
from .pretrained import load_model
from .profiles import Profile
from .recipes import Recipe, baseline_recipe

# Columns of a fine_tune row that hold one numpy array per run (dataset row order), not a number.
ARRAY_COLUMNS = ("val_predictions", "test_predictions", "val_correct", "test_correct")
COLLAPSE_SHARE = 0.95


@dataclass
class RunResult:
    row: dict  # what goes into the DataFrame (numbers, and the arrays of ARRAY_COLUMNS)
    history: History
    model: torch.nn.Module | None = None
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    recipe: Recipe | None = None
    custom: tuple[str, ...] = ()  # the code passed beside the recipe (its record alone does not reproduce it)
    record: dict | None = None  # with fine_tune(record=True): evaluations, outputs and step traces (ftcourse.course.bank)

    @property
    def val_predictions(self) -> np.ndarray:
        return self.row["val_predictions"]

    @property
    def test_predictions(self) -> np.ndarray:
        return self.row["test_predictions"]


def collapsed(predictions) -> bool:
    """True when a run predicts one class for at least 95% of the examples: it never left the
    majority-class plateau (or fell back to it), whatever its accuracy says."""
    predictions = np.asarray(predictions)
    return bool(len(predictions)) and float(np.bincount(predictions).max() / len(predictions)) >= COLLAPSE_SHARE


def failed(diverged: bool, test_accuracy: float, test_labels) -> bool:
    """A failed run (Mosbach et al. 2021's definition, decided before any run): it diverged, or its test accuracy
    is at or below the test set's majority-class share."""
    labels = np.asarray(test_labels)
    majority = float(np.bincount(labels).max() / len(labels)) if len(labels) else 1.0
    return bool(diverged) or float(test_accuracy) <= majority


class _WithoutAttentionMask:
    """A loader's batches without ``attention_mask`` (the model then attends to the padding too), in the same
    fixed order, so that predictions still come back in row order."""

    def __init__(self, loader):
        self.loader, self.sampler = loader, loader.sampler

    def __iter__(self):
        for batch in self.loader:
            yield {k: v for k, v in batch.items() if k != "attention_mask"}

    def __len__(self):
        return len(self.loader)


# Extra evaluations of the final weights an arm can ask for (Arm.outputs), each stored as a named output
EXTRA_OUTPUTS = {"no_attention_mask": _WithoutAttentionMask}


class RunRecorder:
    """A passive callback (it changes no weight and draws no random number): at every evaluation it also scores
    the test set, and keeps both splits' predictions; at the end it scores the weight average, if the run has one.
    What ``fine_tune(record=True)`` stores in the bank (``ftcourse.course.bank``)."""
    order = 100  # after every callback that changes the weights (SWA finishes its average first)

    def __init__(self, test_loader, precision, callbacks):
        self.test_loader, self.precision, self.callbacks = test_loader, precision, callbacks
        self.evaluations, self.outputs = [], {}

    def on_evaluate(self, state, metrics) -> None:
        from .bank import pack_predictions

        last = state.history.last_eval  # the loop's validation pass, predictions in row order
        test = evaluate(state.model, self.test_loader, state.device, self.precision, return_predictions=True)
        self.evaluations.append({"step": state.step, "epoch": state.epoch, "val_loss": float(metrics["loss"]),
                                 "val_accuracy": float(metrics["accuracy"]), "test_loss": float(test["loss"]),
                                 "test_accuracy": float(test["accuracy"]),
                                 "val_predictions": pack_predictions(last["predictions"]),
                                 "test_predictions": pack_predictions(test["predictions"])})

    def on_train_end(self, state) -> None:
        averaged = next((cb.averaged for cb in self.callbacks if getattr(cb, "averaged", None) is not None), None)
        if averaged is not None:
            self.outputs["swa"] = _scored(averaged.module, state.eval_loader, self.test_loader, state.device, self.precision)


def _scored(model, val_loader, test_loader, device, precision) -> dict:
    from .bank import pack_predictions

    return {split: pack_predictions(evaluate(model, loader, device, precision, return_predictions=True)["predictions"])
            for split, loader in (("val_predictions", val_loader), ("test_predictions", test_loader))}


def _step_traces(history, optimizer) -> dict:
    from .bank import pack_floats

    initial = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    steps = history.steps
    traces = {"loss": pack_floats([s["loss"] for s in steps]), "grad_norm": pack_floats([s["grad_norm"] for s in steps]),
              "lr_scale": pack_floats([s["lr_0"] / initial[0] if initial[0] else 0.0 for s in steps], "float64"),
              "skipped": int(sum(not s.get("stepped", True) for s in steps))}
    if len(set(initial)) > 1:
        traces["group_lrs"] = [float(lr) for lr in initial]
    return traces


# ---------------------------------------------------------------------------------------------
# The pieces of a recipe
# ---------------------------------------------------------------------------------------------
def default_optimizer(param_groups, lr: float, device: torch.device, **kwargs) -> torch.optim.Optimizer:
    """``torch.optim.AdamW``, fused where the device supports it (3-5x faster steps on CPU)."""
    fused = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused, **kwargs)


def make_optimizer(name: str, param_groups, lr: float, device: torch.device, **kwargs) -> torch.optim.Optimizer:
    """The optimizer a recipe names (``Recipe.optimizer``): torch's fused AdamW, or one of ftcourse.optim
    (``BERTAdam`` is its AdamW without bias correction)."""
    if name == "torch.AdamW":
        return default_optimizer(param_groups, lr, device, **kwargs)
    if name == "BERTAdam":
        return from_scratch.AdamW(param_groups, lr=lr, bias_correction=False, **kwargs)
    if name in from_scratch.__all__:
        return getattr(from_scratch, name)(param_groups, lr=lr, **kwargs)
    raise ValueError(f"optimizer must be 'torch.AdamW', 'BERTAdam' or one of {', '.join(from_scratch.__all__)}, got {name!r}")


def make_schedule(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, **kwargs):
    """The course's schedules (``ftcourse.schedules.get_schedule``)."""
    return get_schedule(name, optimizer, num_warmup_steps, num_training_steps, **kwargs)


def prepare_model(recipe: Recipe, model: torch.nn.Module) -> None:
    """The recipe's changes to the model, before the optimizer sees it: re-initialise the top blocks
    (and the pooler with them), then freeze the embeddings and the bottom blocks, or wrap the target layers in
    LoRA adapters (everything else frozen but the head)."""
    if recipe.reinit_layers:
        reinit_top_layers(model, recipe.reinit_layers, reinit_pooler=recipe.reinit_pooler)
    if recipe.freeze_layers:
        freeze_bottom_layers(model, recipe.freeze_layers, embeddings=True)
    if recipe.lora_rank is not None:
        add_lora(model, r=recipe.lora_rank, alpha=recipe.lora_alpha, dropout=recipe.lora_dropout,
                 targets=recipe.lora_targets, train_head=True)


def param_groups_for(recipe: Recipe, model: torch.nn.Module) -> list[dict]:
    """The optimizer's parameter groups: LLRD, grouped LLRD, every parameter (gradual unfreezing adds
    frozen ones back later, so they must be in the optimizer from the start), or the trainable ones;
    biases and norms undecayed in each."""
    lr, wd = recipe.lr, recipe.weight_decay
    if recipe.llrd_decay is not None:
        return llrd_param_groups(model, lr, recipe.llrd_decay, weight_decay=wd)
    if recipe.llrd_group_ratios is not None:
        return grouped_llrd_param_groups(model, [lr * r for r in recipe.llrd_group_ratios], weight_decay=wd,
                                         head_lr=lr * recipe.head_lr_ratio)
    if recipe.gradual_unfreezing is not None:
        return all_param_groups(model, wd)
    return decay_param_groups(model, wd)


def callbacks_for(recipe: Recipe, model: torch.nn.Module, total_steps: int) -> list:
    """The loop callbacks the recipe asks for, SWA before the checkpoint choice that may pick its average."""
    callbacks = []
    if recipe.gradual_unfreezing is not None:
        units = len(encoder_layers(model)) + 1  # every block, then the embeddings
        every = max(1, int(recipe.gradual_unfreezing * total_steps / units))
        callbacks.append(GradualUnfreezing(model, every_steps=every))
    choose = recipe.select == "best"
    swa = None
    if recipe.swa_start is not None:
        # the average replaces the final weights, unless it competes with the best checkpoint on validation
        swa = SWACallback(start=recipe.swa_start, swa_lr=recipe.swa_lr, update_every=recipe.swa_every,
                          ema_decay=recipe.ema_decay, replace_model=not choose, evaluate=choose)
        callbacks.append(swa)
    if swa is not None and choose:
        callbacks.append(BestOfCallback(recipe.early_stopping_patience, swa))
    elif recipe.selects_checkpoints:
        tracker = EarlyStopping(patience=recipe.early_stopping_patience, mode="max", verbose=False)
        callbacks.append(EarlyStoppingCallback(tracker, metric=recipe.early_stopping_metric, restore=choose))
    return callbacks


@dataclass
class Training:
    """What one run of a recipe needs besides its model and data: ``build_training``'s result."""
    recipe: Recipe
    param_groups: list[dict]
    optimizer: torch.optim.Optimizer
    scheduler: object
    callbacks: list = field(default_factory=list)
    precision: Precision | None = None
    total_steps: int = 0
    warmup_steps: int = 0

    def train_kwargs(self) -> dict:
        """The keywords of ``ftcourse.train.train`` for this run (besides model, loaders and device)."""
        r = self.recipe
        return dict(optimizer=self.optimizer, scheduler=self.scheduler, epochs=r.epochs, max_steps=r.max_steps,
                    evals_per_epoch=r.evals_per_epoch, max_grad_norm=r.max_grad_norm,
                    accumulation_steps=r.accumulation_steps, precision=self.precision, callbacks=self.callbacks)


def build_training(recipe: Recipe, model: torch.nn.Module, *, device=None, train_examples: int | None = None,
                   prepare: Callable | None = None, param_groups: Callable | None = None,
                   optimizer: Callable | None = None, callbacks: Callable | None = None) -> Training:
    """Put ``recipe`` together for ``model`` (on ``device``): change the model, then build the parameter
    groups, the optimizer, the schedule and the callbacks, in that order (the order the seeded RNG is
    drawn in). ``train_examples``: the training rows, when not ``recipe.train_size``.

    The keyword hooks replace one piece with code of your own, as a live run may (a recorder, a teaching
    copy): ``prepare(model)`` runs after the recipe's model changes; ``param_groups(model, lr, weight_decay)``,
    ``optimizer(groups, lr, device)`` and ``callbacks(model, optimizer, total_steps)`` (added after the
    recipe's own callbacks) replace the recipe's.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be an ftcourse.course.Recipe, got {type(recipe).__name__}")
    device = pick_device(device, verbose=False)
    prepare_model(recipe, model)
    if prepare is not None:
        prepare(model)
    groups = (param_groups(model, recipe.lr, recipe.weight_decay) if param_groups is not None
              else param_groups_for(recipe, model))
    opt = (optimizer(groups, recipe.lr, device) if optimizer is not None
           else make_optimizer(recipe.optimizer, groups, recipe.lr, device, **recipe.optimizer_kwargs))
    total = recipe.total_steps(train_examples)
    warmup = round(recipe.warmup_ratio * total)
    scheduler = make_schedule(recipe.schedule, opt, warmup, total, **recipe.schedule_kwargs)
    made = callbacks_for(recipe, model, total)
    if callbacks is not None:
        extra = list(callbacks(model, opt, total))
        if recipe.select == "best" and any(getattr(cb, "replace_model", False) for cb in extra):
            raise ValueError(
                "select='best' with a callback that replaces the model at the end (e.g. SWACallback(replace_model=True)): "
                "the best checkpoint would silently overwrite the average. Put SWA in the recipe (swa_start=...): "
                "then the better of the two on validation is kept; or pass replace_model=False.")
        made = made + extra if made else extra
    return Training(recipe, groups, opt, scheduler, made, Precision(recipe.precision, device), total, warmup)


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
_RUNS_MADE: list[dict] = []  # this process's runs, for the notebook footer (notebook_setup() empties it)


def runs_made() -> list[dict]:
    """The runs this process made since ``notebook_setup()``: label, key, the recipe's changes, custom code,
    sizes and seconds. The notebook footer prints them; CI compares them with the notebook's declaration."""
    return list(_RUNS_MADE)


def forget_runs() -> None:
    _RUNS_MADE.clear()


# fine_tune keywords of the notebooks written before recipes -> recipe fields
_LEGACY_FIELDS = ("lr", "epochs", "train_size", "weight_decay", "warmup_ratio", "schedule", "schedule_kwargs",
                  "evals_per_epoch", "select", "early_stopping_patience", "max_grad_norm", "group_by_length",
                  "accumulation_steps")
# keywords whose None means "the profile's value" (elsewhere None is a value: max_grad_norm=None does not clip)
_PROFILE_DEFAULTED = {"lr", "epochs", "train_size", "weight_decay", "warmup_ratio", "evals_per_epoch", "schedule_kwargs"}


def recipe_from_profile(profile: Profile, seed: int, *, batch_size: int | None = None, amp=True, **keywords) -> Recipe:
    """The recipe ``fine_tune(profile, seed, **keywords)`` runs: the profile's baseline with these changes.
    ``batch_size`` there is the micro-batch (the global batch is it times ``accumulation_steps``); ``amp=True``
    is the profile's precision, False none; None for any keyword means the profile's value."""
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be an ftcourse Profile (get_profile()), got {type(profile).__name__}")
    unknown = sorted(set(keywords) - set(_LEGACY_FIELDS))
    if unknown:
        raise TypeError(f"fine_tune() got unexpected keyword(s) {unknown}")
    changes = {k: v for k, v in keywords.items() if not (v is None and k in _PROFILE_DEFAULTED)}
    k = changes.get("accumulation_steps", 1)
    micro = profile.batch_size if batch_size is None else batch_size
    if isinstance(micro, int) and not isinstance(micro, bool) and isinstance(k, int) and not isinstance(k, bool):
        changes["batch_size"] = micro * k
    else:
        raise ValueError(f"batch_size and accumulation_steps must be ints >= 1, got {micro!r} and {k!r}")
    changes["precision"] = profile.amp if amp is True else (None if amp is False else amp)
    return baseline_recipe(profile).replace(seed=seed, **changes)


def _per_process_loader(loader, batch_size: int):
    """``loader`` (``make_loader``'s, batched for one process) with ``batch_size`` rows a batch, the same sampler
    (order, generator), collator and generator: P processes sharding it (accelerate: process r gets batches
    r, r + P, ...) see, round by round, the rows of ``loader``'s batches when ``batch_size`` is its batch ÷ P.
    (A length-grouped sampler's order depends on the batch size it was made for: it is kept, not remade.)"""
    return torch.utils.data.DataLoader(loader.dataset, batch_size=batch_size, sampler=loader.sampler,
                                       collate_fn=loader.collate_fn, generator=loader.generator)


def fine_tune(recipe, seed: int | None = None, *, keep_model: bool = False, progress=True, device=None,
              model_factory: Callable | None = None, label: str | None = None, prepare_model: Callable | None = None,
              param_groups: Callable | None = None, optimizer: Callable | None = None,
              callbacks: Callable | None = None, record: bool = False, outputs: tuple[str, ...] = (),
              accelerator=None, checkpoint_dir=None, checkpoint_every: int | None = None, resume_from=None,
              **profile_keywords) -> RunResult:
    """Run one recipe on SST-2 and score it: ``fine_tune(recipe)``.

    ``fine_tune(profile, seed, **keywords)`` (the older signature) runs ``recipe_from_profile(profile, seed,
    **keywords)``. ``model_factory(model_id) -> model``: how to load the model (default: the course's
    offline MiniLM or the hub). ``prepare_model``, ``param_groups``, ``optimizer``, ``callbacks``: code of
    your own for this live run (see :func:`build_training`). ``label``: what the run is, for the footer.
    ``record=True``: also score the test set at every evaluation and keep every evaluation's predictions, the
    named ``outputs`` (``EXTRA_OUTPUTS``, e.g. ``"no_attention_mask"``; and ``swa`` where the recipe averages)
    and the step traces in ``result.record``: what the seed bank stores. Recording changes no number of the run.

    The row holds: seed, test/val accuracy and loss, best_val_accuracy, steps, stopped_early, diverged,
    collapsed (>= 95% of test predictions one class), timing (``train_time_s`` training only,
    ``eval_time_s`` the in-loop validation, ``callback_time_s``, ``final_eval_time_s``; ``samples_per_s``
    over training time only), peak memory, and the per-example arrays of ``ARRAY_COLUMNS`` in dataset row
    order. Validation and test are scored with the run's precision, like the in-loop validation.

    ``accelerator`` (an ``accelerate.Accelerator``; run the script in every process, e.g. ``torchrun
    --nproc-per-node 2``): data parallel training (``ftcourse.train.train``, which prepares the model, the
    optimizer and the loaders). ``recipe.batch_size`` stays the global batch: each process's loader has
    batch_size ÷ (processes × accumulation_steps) rows a batch (a ValueError if that does not divide), drawn
    in the order one process would draw them, so P processes train on the rows of one process's steps.
    The final validation and test passes run whole in every process (the same numbers everywhere). Not with
    gradual unfreezing (DDP fixes the trained parameters when it wraps the model) or ``record=True``.

    ``checkpoint_dir`` and ``checkpoint_every=N``: save the run every N optimizer steps
    (``ftcourse.train.train``); ``resume_from=<a checkpoint folder>`` (``ftcourse.train.latest_checkpoint``)
    goes on from one: the same recipe then ends with the same weights as a run never interrupted (on CPU,
    bit for bit). Recipes with callbacks of their own (SWA, early stopping, best-checkpoint selection,
    gradual unfreezing) and ``record=True`` cannot be checkpointed yet: their callbacks' state is not saved.
    """
    if isinstance(recipe, Profile):
        if seed is None:
            raise TypeError("fine_tune(profile, seed, ...) needs the seed")
        recipe = recipe_from_profile(recipe, seed, **profile_keywords)
    elif profile_keywords or seed is not None:
        raise TypeError(f"fine_tune(recipe) takes no seed or sizes beside the recipe (change the recipe with "
                        f"recipe.replace(...)); got {sorted(profile_keywords) + (['seed'] if seed is not None else [])}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"fine_tune needs a Recipe (or a profile and a seed), got {type(recipe).__name__}")
    unknown = sorted(set(outputs) - set(EXTRA_OUTPUTS))
    if unknown or (outputs and not record):
        raise ValueError(f"outputs must be names of {sorted(EXTRA_OUTPUTS)}, with record=True; got {list(outputs)}")
    custom = tuple(name for name, hook in (("prepare_model", prepare_model), ("param_groups", param_groups),
                                           ("optimizer", optimizer), ("callbacks", callbacks)) if hook is not None)
    r = recipe
    processes = 1 if accelerator is None else accelerator.num_processes
    if r.batch_size % (processes * r.accumulation_steps):
        raise ValueError(f"fine_tune: the global batch_size {r.batch_size} must be divisible by processes × "
                         f"accumulation_steps = {processes} × {r.accumulation_steps} (each process's batch is "
                         f"batch_size ÷ ({processes} × {r.accumulation_steps}))")
    if processes > 1 and (r.gradual_unfreezing is not None or record):
        raise ValueError("fine_tune(accelerator=...) with several processes: not with gradual unfreezing (DDP fixes "
                         "the parameters it trains when it wraps the model) nor record=True")
    checkpointing = checkpoint_every is not None or resume_from is not None
    if checkpointing and (r.gradual_unfreezing is not None or r.swa_start is not None or r.selects_checkpoints or record):
        raise ValueError("fine_tune: checkpoints and resume cover the model, optimizer, schedule, scaler, random "
                         "states and data position, not yet the state of the recipe's callbacks (SWA, early "
                         "stopping, best-checkpoint selection, gradual unfreezing) or of record=True")
    started = time.perf_counter()
    device = accelerator.device if accelerator is not None else pick_device(device, verbose=False)
    splits = ftdata.tokenized_splits(r.model_id, r.max_length, r.train_size, r.data_seed, val_size=r.val_size,
                                     test_size=r.test_size)
    tokenizer = ftdata.cached_tokenizer(r.model_id)
    set_seed(r.seed)  # before the model: the new classifier head is drawn from this seed
    model = (model_factory or load_model)(r.model_id).to(device)
    train_loader = ftdata.make_loader(splits["train"], tokenizer, r.micro_batch_size, shuffle=True, seed=r.seed,
                                      group_by_length=r.group_by_length)
    if processes > 1:  # batch_size ÷ (processes × accumulation_steps) rows a batch, in one process's order
        train_loader = _per_process_loader(train_loader, r.micro_batch_size // processes)
    val_loader = ftdata.make_loader(splits["validation"], tokenizer, r.eval_batch_size, shuffle=False,
                                    group_by_length=r.group_by_length)
    test_loader = ftdata.make_loader(splits["test"], tokenizer, r.eval_batch_size, shuffle=False,
                                     group_by_length=r.group_by_length)
    training = build_training(r, model, device=device, train_examples=len(splits["train"]), prepare=prepare_model,
                              param_groups=param_groups, optimizer=optimizer, callbacks=callbacks)
    loop = training.train_kwargs()
    recorder = RunRecorder(test_loader, training.precision, training.callbacks) if record else None
    if recorder is not None:
        loop["callbacks"] = [*training.callbacks, recorder]
    history = train(model, train_loader, eval_loader=val_loader, device=device, progress=progress,
                    accelerator=accelerator, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                    resume_from=resume_from, **loop)
    t0 = time.perf_counter()
    precision = training.precision
    test = evaluate(model, test_loader, device, precision, return_predictions=True)
    evals = history.evals_frame()
    last = history.last_eval
    steps_taken = sum(1 for s in history.steps if s.get("stepped", True))  # a window the GradScaler skipped is no step
    if not training.callbacks and last is not None and last["step"] == steps_taken:
        # the loop evaluated these very weights after its last step (only callbacks change them afterwards)
        val = {"accuracy": evals["val_accuracy"].iloc[-1], "loss": evals["val_loss"].iloc[-1],
               "predictions": last["predictions"], "labels": last["labels"]}
    else:
        val = evaluate(model, val_loader, device, precision, return_predictions=True)
    row = {
        "seed": r.seed, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "val_accuracy": val["accuracy"], "val_loss": val["loss"],
        "best_val_accuracy": evals["val_accuracy"].max() if len(evals) else float("nan"),
        "steps": steps_taken, "stopped_early": history.stopped_early, "diverged": history.diverged,
        "collapsed": collapsed(test["predictions"]), "failed": failed(history.diverged, test["accuracy"], test["labels"]),
        "train_time_s": history.train_time_s, "eval_time_s": history.eval_time_s,
        "callback_time_s": history.callback_time_s, "final_eval_time_s": time.perf_counter() - t0,
        "samples_per_s": history.samples_per_s, "peak_memory_mb": history.peak_memory_mb,
        "val_predictions": val["predictions"], "test_predictions": test["predictions"],
        "val_correct": val["predictions"] == val["labels"], "test_correct": test["predictions"] == test["labels"],
    }
    _RUNS_MADE.append({"label": label, "key": r.key(), "recipe": r.changes(), "custom": list(custom),
                       "train_examples": len(splits["train"]), "epochs": r.epochs, "evals_per_epoch": r.evals_per_epoch,
                       "steps": row["steps"], "evaluations": len(history.evals), "precision": precision.name,
                       "train_time_s": history.train_time_s, "eval_time_s": history.eval_time_s + row["final_eval_time_s"],
                       "total_s": time.perf_counter() - started})
    kept = None
    if recorder is not None:
        from .bank import pack_predictions

        final = {"val_predictions": pack_predictions(val["predictions"]), "test_predictions": pack_predictions(test["predictions"])}
        extra = {name: _scored(model, EXTRA_OUTPUTS[name](val_loader), EXTRA_OUTPUTS[name](test_loader), device, precision)
                 for name in outputs}
        kept = {"evaluations": recorder.evaluations, "outputs": {"final": final, **recorder.outputs, **extra},
                "steps": _step_traces(history, training.optimizer)}
    return RunResult(row, history, model if keep_model else None, val["labels"], test["labels"], r, custom, kept)


def run_seeds(profile_or_recipe, label: str = "baseline", seeds=None, keep_histories: bool = True,
              progress: bool = True, **fine_tune_kwargs):
    """``fine_tune`` once per seed, with one progress bar over the runs: a recipe's run at each of ``seeds``
    (default: its own seed), or ``fine_tune(profile, seed, **keywords)`` at each (default: the profile's seeds).

    Returns ``(results, histories)``: a DataFrame with one row per seed (column ``label`` names the
    configuration, so several calls concatenate into one comparison; the per-example arrays of
    ``ARRAY_COLUMNS`` ride along, in dataset row order) and the seeds' histories.
    """
    import pandas as pd

    if isinstance(profile_or_recipe, Recipe):
        seeds = [profile_or_recipe.seed] if seeds is None else list(seeds)
        start = lambda seed, **kw: fine_tune(profile_or_recipe.replace(seed=seed), **kw)  # noqa: E731
    else:
        seeds = list(profile_or_recipe.seeds if seeds is None else seeds)
        start = lambda seed, **kw: fine_tune(profile_or_recipe, seed, **kw)  # noqa: E731
    rows, histories = [], {}
    # on stdout, with the per-run lines it writes: saved notebooks keep them in order, bar last
    bar = tqdm(seeds, desc=label, unit="run", disable=not progress, leave=True, file=sys.stdout)
    # In a notebook the step counter goes on the runs' bar (one line: Jupyter cannot redraw nested
    # text bars); in a terminal each run draws its own step bar below it.
    inner = bar if progress and _in_notebook() else progress
    for seed in bar:
        result = start(seed, progress=inner, label=label, **fine_tune_kwargs)
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
    return "ipykernel" in sys.modules
