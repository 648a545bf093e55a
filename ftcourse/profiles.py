"""Run sizes: every number a notebook uses comes from one of these profiles.

Course harness (not a technique module).

``ci``  the smallest run in which the loss still falls (nbval in CI, <= 2 min a notebook on 2 cores).
``cpu`` self-study on a laptop: <= 10 min a notebook on 2 cores (05 and 11: <= 15).
``gpu`` Colab: a standard fine-tuning model from the hub, more data, more seeds, mixed precision.

``FTCOURSE_PROFILE`` selects one; the default is ``gpu`` when CUDA is available, else ``cpu``.

A :class:`Profile` holds the sizes every notebook shares (model, lengths, data, batches, epochs,
evaluation frequency, lr, warmup, weight decay, seeds, precision, the accuracy bar) and one small
group per notebook for what only that notebook uses: ``profile.accumulation`` (02),
``profile.freezing`` (03), ``profile.mixed_precision`` (04), ``profile.optimizers`` (05),
``profile.schedules`` (06), ``profile.llrd`` (07), ``profile.reinit`` (08), ``profile.swa`` (09),
``profile.early_stopping`` (10) and ``profile.recipe`` (11).

``profile.replace(epochs=1)`` changes a shared field; ``profile.replace(llrd={"decays": (0.9,)})``
or ``profile.replace(**{"llrd.decays": (0.9,)})`` one field of a group.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .models import MINILM_ID


@dataclass(frozen=True)
class Accumulation:
    """02: effective batch sizes compared (micro-batch = the profile's batch size), the lr grid each
    is swept over on validation, seeds and training examples of that comparison."""
    effective_batches: tuple[int, ...] = (16, 64)
    lr_grid: tuple[float, ...] = (1e-4,)
    seeds: tuple[int, ...] = (0, 1)
    train_size: int = 1000
    epochs: int = 1


@dataclass(frozen=True)
class Freezing:
    """03: seeds and epochs of the frozen-layer comparison; the head's lr when everything else is frozen."""
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 2
    train_size: int = 1000
    frozen_layers: tuple[int, ...] = (0, 3, 6)
    head_lr: float = 3e-3


@dataclass(frozen=True)
class MixedPrecision:
    """04: optimizer steps of the fp16 loss-scale trace, steps timed per precision, and the training
    examples of the fp32-vs-low-precision accuracy comparison."""
    trace_steps: int = 40
    timing_steps: int = 6
    train_size: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Optimizers:
    """05: each optimizer's lr is chosen on validation from ``lr_grid`` ((name, lrs) pairs), one run
    per lr and seed of ``sweep_seeds`` on ``sweep_train_size`` examples; the comparison then runs
    over ``seeds`` on ``train_size`` examples for ``epochs``, evaluating ``evals_per_epoch`` times an
    epoch. ``few_sample_size``, ``few_sample_epochs``, ``few_sample_lrs`` and ``few_sample_seeds``:
    Zhang et al.'s few-sample regime for BERTAdam against bias-corrected Adam."""
    lr_grid: tuple[tuple[str, tuple[float, ...]], ...] = ()
    sweep_train_size: int = 320
    sweep_seeds: tuple[int, ...] = (0,)
    train_size: int = 640
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 1
    evals_per_epoch: int = 1
    few_sample_size: int = 300
    few_sample_epochs: int = 3
    few_sample_lrs: tuple[float, ...] = (1e-4,)
    few_sample_seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class Schedules:
    """06: training examples, seeds and epochs of the schedule comparison; steps of the LR range test."""
    train_size: int = 640
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 1
    evals_per_epoch: int = 4
    lr_finder_steps: int = 100


@dataclass(frozen=True)
class LLRD:
    """07: the decay grid (chosen on validation), the seeds and training examples of the comparison,
    and whether to also run the article's exact roberta-base lrs (meant for roberta-base)."""
    decays: tuple[float, ...] = (0.9,)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_size: int = 2000
    article_lrs: bool = False


@dataclass(frozen=True)
class Reinit:
    """08, few-sample setting: top layers re-initialised, seeds (the spread across them is the
    result), epochs (re-initialised layers learn from scratch: Zhang et al. 2021 train longer), lr,
    training examples."""
    layers: tuple[int, ...] = (0, 1, 2, 3)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    lr: float = 1e-4
    train_size: int = 300


@dataclass(frozen=True)
class SWA:
    """09: training examples, seeds and epochs of its runs (the normal schedule and SWA per seed)."""
    train_size: int = 3000
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 2


@dataclass(frozen=True)
class EarlyStopping:
    """10: a regime where validation peaks before the end of training."""
    train_size: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    evals_per_epoch: int = 4
    patience: int = 2


@dataclass(frozen=True)
class Recipe:
    """11 (cumulative recipe table): every row runs once per seed on ``train_size`` examples for
    ``epochs``; ``reinit_layers`` top layers are re-initialised (the article: 5 of roberta-base's 12);
    early stopping waits ``patience`` evaluations; ``grouped_llrd`` adds the full recipe with grouped
    LLRD as one more row."""
    train_size: int = 2000
    seeds: tuple[int, ...] = (0, 1, 2)
    reinit_layers: int = 2
    patience: int = 3
    grouped_llrd: bool = False
    epochs: int = 2
    llrd_decay: float = 0.9


GROUPS = {"accumulation": Accumulation, "freezing": Freezing, "mixed_precision": MixedPrecision,
          "optimizers": Optimizers, "schedules": Schedules, "llrd": LLRD, "reinit": Reinit, "swa": SWA,
          "early_stopping": EarlyStopping, "recipe": Recipe}


@dataclass(frozen=True)
class Profile:
    name: str
    model_id: str
    max_length: int  # tokens; SST-2 sentences are short, so this rarely truncates
    train_size: int  # training examples drawn (reproducibly) from the 67,349 SST-2 rows
    batch_size: int
    eval_batch_size: int
    epochs: int
    evals_per_epoch: int  # "frequent evaluation": validation runs this many times an epoch
    lr: float  # peak learning rate of the baseline (AdamW)
    warmup_ratio: float
    weight_decay: float
    seeds: tuple[int, ...]
    amp: str | None  # "fp16", "bf16", "auto" or None (full precision)
    min_test_accuracy: float  # the bar the baseline must clear
    val_size: int | None = None  # rows of validation evaluated (None: all 872)
    test_size: int | None = None  # rows of test evaluated (None: all 1,821)
    data_seed: int = 1234  # fixes the train subset, so runs differ only in their training seed
    accumulation: Accumulation = field(default_factory=Accumulation)
    freezing: Freezing = field(default_factory=Freezing)
    mixed_precision: MixedPrecision = field(default_factory=MixedPrecision)
    optimizers: Optimizers = field(default_factory=Optimizers)
    schedules: Schedules = field(default_factory=Schedules)
    llrd: LLRD = field(default_factory=LLRD)
    reinit: Reinit = field(default_factory=Reinit)
    swa: SWA = field(default_factory=SWA)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    recipe: Recipe = field(default_factory=Recipe)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed: ``replace(epochs=1)``, ``replace(llrd={"decays": (0.9,)})``
        or ``replace(**{"llrd.decays": (0.9,)})``. Unknown names raise ValueError listing the valid ones."""
        top, nested = {}, {}
        for key, value in changes.items():
            group, _, name = key.partition(".")
            if name:
                nested.setdefault(group, {})[name] = value
            elif key in GROUPS and isinstance(value, dict):
                nested.setdefault(key, {}).update(value)
            else:
                top[key] = value
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(top) - valid) + sorted(set(nested) - set(GROUPS))
        if unknown:
            raise ValueError(f"Profile.replace: unknown field(s) {unknown}; valid: {', '.join(sorted(valid))}")
        for group, values in nested.items():
            current = getattr(self, group)
            names = {f.name for f in dataclasses.fields(current)}
            bad = sorted(set(values) - names)
            if bad:
                raise ValueError(f"Profile.replace: {group} has no field(s) {bad}; valid: {', '.join(sorted(names))}")
            top[group] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict:
        """Every field, groups as nested dicts (for summaries)."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci", model_id=MINILM_ID, max_length=64, train_size=320,
        batch_size=16, eval_batch_size=64, epochs=2, evals_per_epoch=2, lr=1e-4,
        warmup_ratio=0.1, weight_decay=0.01, seeds=(0, 1), amp=None,
        # SST-2 test is 50% positive: 0.6 is clearly above the majority class.
        min_test_accuracy=0.60, val_size=128, test_size=256,
        accumulation=Accumulation(effective_batches=(16, 32), lr_grid=(1e-4,), seeds=(0, 1), train_size=160, epochs=1),
        freezing=Freezing(seeds=(0, 1), epochs=2, train_size=160, frozen_layers=(0, 6), head_lr=3e-3),
        mixed_precision=MixedPrecision(trace_steps=20, timing_steps=3, train_size=160, seeds=(0, 1)),
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.03,)), ("RMSprop", (3e-5,)), ("Adam", (1e-4,)), ("AdamW", (1e-4,)),
                     ("LARS", (0.2,)), ("LAMB", (1e-3,))),
            sweep_train_size=64, sweep_seeds=(0,), train_size=64, seeds=(0, 1), epochs=1, evals_per_epoch=1,
            few_sample_size=64, few_sample_epochs=1, few_sample_lrs=(1e-4,), few_sample_seeds=(0, 1)),
        schedules=Schedules(train_size=64, seeds=(0, 1), epochs=1, evals_per_epoch=1, lr_finder_steps=20),
        llrd=LLRD(decays=(0.8,), seeds=(0, 1), train_size=160),
        reinit=Reinit(layers=(0, 2), seeds=(0, 1), epochs=1, lr=1e-4, train_size=160),
        swa=SWA(train_size=320, seeds=(0, 1), epochs=2),
        early_stopping=EarlyStopping(train_size=320, seeds=(0, 1), epochs=2, evals_per_epoch=2, patience=2),
        recipe=Recipe(train_size=64, seeds=(0, 1), reinit_layers=2, patience=2, epochs=1, llrd_decay=0.8),
    ),
    "cpu": Profile(
        name="cpu", model_id=MINILM_ID, max_length=64, train_size=3000,
        batch_size=16, eval_batch_size=128, epochs=2, evals_per_epoch=4, lr=1e-4,
        warmup_ratio=0.1, weight_decay=0.01, seeds=(0, 1, 2), amp=None,
        min_test_accuracy=0.82,
        accumulation=Accumulation(effective_batches=(16, 64), lr_grid=(1e-4,), seeds=(0, 1, 2), train_size=1000, epochs=1),
        freezing=Freezing(seeds=(0, 1, 2), epochs=1, train_size=3000, frozen_layers=(0, 3, 6), head_lr=3e-3),
        mixed_precision=MixedPrecision(trace_steps=40, timing_steps=6, train_size=1000, seeds=(0, 1, 2)),
        # 60 steps a run (960 examples, 1 epoch): with 20-40 steps (320-640 examples) every optimizer but
        # LAMB stayed at the majority class, which compares nothing.
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.1, 0.3)), ("RMSprop", (2e-5, 5e-5)), ("Adam", (1e-4, 3e-4)),
                     ("AdamW", (1e-4, 3e-4)), ("LARS", (0.2, 0.5)), ("LAMB", (1e-3, 3e-3))),
            sweep_train_size=960, sweep_seeds=(0,), train_size=960, seeds=(0, 1, 2), epochs=1, evals_per_epoch=1,
            few_sample_size=300, few_sample_epochs=3, few_sample_lrs=(1e-4,), few_sample_seeds=(0, 1, 2)),
        schedules=Schedules(train_size=960, seeds=(0, 1, 2), epochs=1, evals_per_epoch=4, lr_finder_steps=100),
        llrd=LLRD(decays=(0.9, 0.75), seeds=(0, 1, 2), train_size=640),
        reinit=Reinit(layers=(0, 1, 2, 3), seeds=(0, 1, 2), epochs=2, lr=1e-4, train_size=300),
        swa=SWA(train_size=2000, seeds=(0, 1, 2), epochs=2),
        early_stopping=EarlyStopping(train_size=3000, seeds=(0, 1, 2), epochs=2, evals_per_epoch=4, patience=2),
        recipe=Recipe(train_size=640, seeds=(0, 1, 2), reinit_layers=2, patience=3, epochs=2, llrd_decay=0.75),
    ),
    "gpu": Profile(
        name="gpu", model_id="roberta-base", max_length=128, train_size=8000,
        batch_size=32, eval_batch_size=128, epochs=2, evals_per_epoch=4, lr=2e-5,
        warmup_ratio=0.1, weight_decay=0.01, seeds=(0, 1, 2, 3, 4), amp="auto",
        min_test_accuracy=0.88,
        accumulation=Accumulation(effective_batches=(32, 128), lr_grid=(2e-5,), seeds=(0, 1, 2, 3, 4), train_size=4000, epochs=1),
        freezing=Freezing(seeds=(0, 1, 2, 3, 4), epochs=2, train_size=8000, frozen_layers=(0, 6, 12), head_lr=1e-3),
        mixed_precision=MixedPrecision(trace_steps=60, timing_steps=20, train_size=8000, seeds=(0, 1, 2, 3, 4)),
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.003, 0.01, 0.03, 0.1)), ("RMSprop", (3e-6, 1e-5, 3e-5)),
                     ("Adam", (1e-5, 2e-5, 5e-5)), ("AdamW", (1e-5, 2e-5, 5e-5)), ("LARS", (0.02, 0.1, 0.5)),
                     ("LAMB", (3e-4, 1e-3, 3e-3))),
            sweep_train_size=2000, sweep_seeds=(0,), train_size=4000, seeds=(0, 1, 2, 3, 4), epochs=2,
            evals_per_epoch=2, few_sample_size=500, few_sample_epochs=5, few_sample_lrs=(2e-5,),
            few_sample_seeds=(0, 1, 2, 3, 4)),
        schedules=Schedules(train_size=4000, seeds=(0, 1, 2, 3, 4), epochs=2, evals_per_epoch=4, lr_finder_steps=200),
        llrd=LLRD(decays=(0.95, 0.9, 0.8), seeds=(0, 1, 2, 3, 4), train_size=8000, article_lrs=True),
        reinit=Reinit(layers=(0, 1, 2, 3, 5), seeds=(0, 1, 2, 3, 4), epochs=10, lr=2e-5, train_size=500),
        swa=SWA(train_size=8000, seeds=(0, 1, 2, 3, 4), epochs=2),
        early_stopping=EarlyStopping(train_size=8000, seeds=(0, 1, 2, 3, 4), epochs=2, evals_per_epoch=4, patience=2),
        recipe=Recipe(train_size=8000, seeds=(0, 1, 2, 3, 4), reinit_layers=5, patience=3, grouped_llrd=True,
                      epochs=2, llrd_decay=0.9),
    ),
}
PROFILE_NAMES = tuple(PROFILES)


def default_profile_name() -> str:
    """``FTCOURSE_PROFILE`` if set, else ``gpu`` with CUDA and ``cpu`` without."""
    name = os.environ.get("FTCOURSE_PROFILE")
    if name:
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name`` (default: see :func:`default_profile_name`)."""
    name = default_profile_name() if name is None else name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: FTCOURSE_PROFILE / profile must be one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
