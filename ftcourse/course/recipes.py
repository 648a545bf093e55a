"""One fine-tuning run as plain data: a :class:`Recipe`.

Course harness (not a technique module).

A recipe holds every value that decides a run: data and model, batches and length, optimizer,
schedule, the layer-wise techniques (LLRD, freezing, re-initialisation), weight averaging, early
stopping and checkpoint selection, precision, and the seed. It holds no code: what each field
means in code is ``ftcourse.course.runner.build_training``, the one function that puts a recipe
together. So a run can be stored, compared, found again and re-run from its record::

    from ftcourse.course import baseline_recipe, fine_tune

    recipe = baseline_recipe(profile).replace(lr=3e-5, llrd_decay=0.9, seed=1)
    run = fine_tune(recipe)
    Recipe.from_dict(recipe.to_dict()) == recipe      # True: a record re-runs the same run
    recipe.key()                                       # 'r1-5c0f2a9e41d7b6c3': the same run, anywhere

``key()`` hashes the canonical JSON of the fields that differ from their defaults, with
:data:`SEMANTICS_VERSION`. Two consequences, both on purpose:

* adding a field with a default leaves every existing key unchanged (a recipe that does not use
  the new field does not mention it), so the defaults below never change once published
  (``tests/test_recipes.py`` pins them);
* a change to the training code that changes the numbers a recipe gives bumps
  :data:`SEMANTICS_VERSION`, and only such a change does: every stored run made before it then has
  another key, and is recognisably stale.

Units: ``batch_size`` is the **global** batch, the examples of one optimizer step; with
``accumulation_steps=k`` the loader's micro-batch is ``batch_size // k``. ``warmup_ratio`` is a
fraction of the optimizer steps. ``swa_start`` is a fraction of them. ``evals_per_epoch`` is the
number of validation passes in each epoch (the last at its end).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field

from .pretrained import MINILM_ID

# Bump when a change to the loop or to build_training changes the numbers an unchanged recipe gives.
SEMANTICS_VERSION = 1

# The optimizers a recipe can name: torch's fused AdamW (the course default), and the from-scratch
# ones of ftcourse.optim (BERTAdam is its AdamW without bias correction).
OPTIMIZERS = ("torch.AdamW", "SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "BERTAdam", "LARS", "LAMB")
SELECTIONS = ("final", "best")
PRECISIONS = (None, "fp16", "bf16", "auto")
EARLY_STOPPING_METRICS = ("accuracy",)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides one fine-tuning run (see the module docstring). Build one with
    :func:`ftcourse.course.baseline_recipe` and change it with :meth:`replace`."""

    # data and model
    model_id: str = MINILM_ID
    train_size: int = 3000  # training examples drawn from SST-2's 67,349 with data_seed
    data_seed: int = 1234
    max_length: int = 64  # tokens
    val_size: int | None = None  # validation sentences (None: all 872)
    test_size: int | None = None  # test sentences (None: all 1,821)
    group_by_length: bool = True
    # batches and length
    batch_size: int = 16  # the global batch: examples per optimizer step
    accumulation_steps: int = 1
    eval_batch_size: int = 128
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule spans them)
    evals_per_epoch: int = 4
    # optimizer and schedule
    optimizer: str = "torch.AdamW"
    optimizer_kwargs: dict = field(default_factory=dict)
    lr: float = 1e-4
    weight_decay: float = 0.01
    schedule: str = "linear"
    schedule_kwargs: dict = field(default_factory=dict)
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    precision: str | None = None
    # layer-wise learning rates: LLRD (one decay per layer) or grouped LLRD (a ratio per group of layers)
    llrd_decay: float | None = None
    llrd_group_ratios: tuple[float, ...] | None = None
    head_lr_ratio: float = 1.0  # grouped LLRD: the head's lr over the base lr
    # freezing: the embeddings and the bottom n blocks; or gradual unfreezing within a fraction of the run
    freeze_layers: int = 0
    gradual_unfreezing: float | None = None
    # re-initialisation of the top n blocks (and the pooler with them)
    reinit_layers: int = 0
    reinit_pooler: bool = True
    # weight averaging (SWA; an EMA with ema_decay) from a fraction of the run on
    swa_start: float | None = None
    swa_lr: float | None = None  # None: each group keeps its lr at the start (LLRD ratios survive)
    swa_every: int = 1  # optimizer steps between snapshots
    ema_decay: float | None = None
    # LoRA (ftcourse.lora): rank r adapters on the target Linear layers, everything else frozen but the head
    lora_rank: int | None = None
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("query", "value")
    # early stopping and checkpoint selection
    early_stopping_patience: int | None = None  # evaluations without improvement
    early_stopping_metric: str = "accuracy"
    select: str = "final"  # the final weights, or the best validation checkpoint
    seed: int = 0

    def __post_init__(self):
        problems = list(_problems(self))
        if problems:
            raise ValueError("Recipe: " + "; ".join(problems))
        # canonical types, so that 2 and 2.0, [0.5] and (0.5,) are one recipe with one key
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _FLOAT_FIELDS and value is not None:
                object.__setattr__(self, f.name, float(value))
            elif f.name in _INT_FIELDS and value is not None:
                object.__setattr__(self, f.name, int(value))
        if self.llrd_group_ratios is not None:
            object.__setattr__(self, "llrd_group_ratios", tuple(float(r) for r in self.llrd_group_ratios))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        for name in ("optimizer_kwargs", "schedule_kwargs"):
            object.__setattr__(self, name, json.loads(json.dumps(dict(getattr(self, name)), sort_keys=True)))

    # -- derived sizes ------------------------------------------------------------------------------
    @property
    def micro_batch_size(self) -> int:
        """Examples per forward pass: the global batch over the accumulation steps."""
        return self.batch_size // self.accumulation_steps

    def steps_per_epoch(self, train_examples: int | None = None) -> int:
        """Optimizer steps in one epoch (a short last window is a step of its own)."""
        n = self.train_size if train_examples is None else train_examples
        micro_batches = -(-n // self.micro_batch_size)
        return -(-micro_batches // self.accumulation_steps)

    def total_steps(self, train_examples: int | None = None) -> int:
        """Optimizer steps of the run: every epoch, or ``max_steps`` if that is fewer."""
        steps = self.steps_per_epoch(train_examples) * self.epochs
        return steps if self.max_steps is None else min(steps, self.max_steps)

    @property
    def selects_checkpoints(self) -> bool:
        """Whether validation passes decide which weights the run ends with (not only report them)."""
        return self.select == "best" or self.early_stopping_patience is not None

    # -- records ------------------------------------------------------------------------------------
    def replace(self, **changes) -> "Recipe":
        """A copy with ``changes``; unknown names raise ValueError listing the fields."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(f"Recipe.replace: unknown field(s) {unknown}; fields: {', '.join(FIELD_NAMES)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field, as JSON-ready values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        """The recipe of a record (``to_dict``'s output, or only its non-default fields). Unknown keys raise
        ValueError naming them: a record from a newer version of the course is not silently misread."""
        if not isinstance(values, dict):
            raise TypeError(f"Recipe.from_dict needs a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Recipe.from_dict: unknown key(s) {unknown}; fields: {', '.join(sorted(known))}")
        return cls(**values)

    def changes(self) -> dict:
        """The fields that differ from their defaults (JSON-ready): what :meth:`key` hashes."""
        full = self.to_dict()
        return {f.name: full[f.name] for f in dataclasses.fields(self) if full[f.name] != _default_json(f)}

    def key(self) -> str:
        """A stable identity: ``r<SEMANTICS_VERSION>-`` and 16 hex digits of the SHA-256 of the canonical JSON
        of :meth:`changes`. Equal keys are the same run, in any notebook and any process."""
        text = json.dumps(self.changes(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha256(f"{SEMANTICS_VERSION}:{text}".encode()).hexdigest()[:16]
        return f"r{SEMANTICS_VERSION}-{digest}"

    def __hash__(self):
        return hash(self.key())

    def describe(self) -> str:
        """One line: the fields that differ from the defaults."""
        return ", ".join(f"{k}={v}" for k, v in self.changes().items()) or "the defaults"


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Recipe))
_FLOAT_FIELDS = {"lr", "weight_decay", "warmup_ratio", "max_grad_norm", "llrd_decay", "head_lr_ratio",
                 "gradual_unfreezing", "swa_start", "swa_lr", "ema_decay", "lora_alpha", "lora_dropout"}
_INT_FIELDS = {"train_size", "data_seed", "max_length", "val_size", "test_size", "batch_size", "accumulation_steps",
               "eval_batch_size", "epochs", "max_steps", "evals_per_epoch", "freeze_layers", "reinit_layers",
               "swa_every", "early_stopping_patience", "seed", "lora_rank"}


def _default_json(f: dataclasses.Field):
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return json.loads(json.dumps(value))


def _problems(r: Recipe):
    """What is wrong with a recipe, one phrase per field, naming the allowed values."""
    def integer(name, minimum, optional=False):
        value = getattr(r, name)
        if value is None and optional:
            return
        if not _is_int(value) or value < minimum:
            yield f"{name} must be an int >= {minimum}{' or None' if optional else ''}, got {value!r}"

    def real(name, low, high, *, low_open=False, high_open=False, optional=False):
        value = getattr(r, name)
        if value is None and optional:
            return
        ok = _is_real(value) and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            yield f"{name} must be a number in {interval}{' or None' if optional else ''}, got {value!r}"

    def choice(name, allowed):
        value = getattr(r, name)
        if value not in allowed:
            yield f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"

    def flag(name):
        if not isinstance(getattr(r, name), bool):
            yield f"{name} must be True or False, got {getattr(r, name)!r}"

    if not isinstance(r.model_id, str) or not r.model_id:
        yield f"model_id must be a hub id or a local folder (a non-empty str), got {r.model_id!r}"
    yield from integer("train_size", 1)
    yield from integer("data_seed", 0)
    yield from integer("max_length", 1)
    yield from integer("val_size", 1, optional=True)
    yield from integer("test_size", 1, optional=True)
    yield from flag("group_by_length")
    yield from integer("batch_size", 1)
    yield from integer("accumulation_steps", 1)
    if _is_int(r.batch_size) and _is_int(r.accumulation_steps) and r.accumulation_steps >= 1 \
            and r.batch_size % r.accumulation_steps:
        yield (f"batch_size (the global batch, {r.batch_size}) must be a multiple of accumulation_steps "
               f"({r.accumulation_steps}): the micro-batch is batch_size // accumulation_steps")
    yield from integer("eval_batch_size", 1)
    yield from integer("epochs", 1)
    yield from integer("max_steps", 1, optional=True)
    yield from integer("evals_per_epoch", 1)
    yield from choice("optimizer", OPTIMIZERS)
    for name in ("optimizer_kwargs", "schedule_kwargs"):
        value = getattr(r, name)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            yield f"{name} must be a dict of keyword arguments, got {value!r}"
        else:
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                yield f"{name} must hold plain JSON values (numbers, strings, lists), got {value!r}"
    yield from real("lr", 0, math.inf, low_open=True, high_open=True)
    yield from real("weight_decay", 0, math.inf, high_open=True)
    if not isinstance(r.schedule, str) or not r.schedule:
        yield f"schedule must be a schedule name of ftcourse.schedules, got {r.schedule!r}"
    yield from real("warmup_ratio", 0, 1, high_open=True)
    yield from real("max_grad_norm", 0, math.inf, low_open=True, high_open=True, optional=True)
    yield from choice("precision", PRECISIONS)
    yield from real("llrd_decay", 0, 1, low_open=True, optional=True)
    if r.llrd_group_ratios is not None:
        ratios = r.llrd_group_ratios
        if isinstance(ratios, (str, bytes, dict)) or not hasattr(ratios, "__len__") or not len(ratios) \
                or not all(_is_real(x) and x > 0 for x in ratios):
            yield f"llrd_group_ratios must be None or a non-empty sequence of numbers > 0, got {ratios!r}"
    if r.llrd_decay is not None and r.llrd_group_ratios is not None:
        yield "give llrd_decay (LLRD) or llrd_group_ratios (grouped LLRD), not both"
    yield from real("head_lr_ratio", 0, math.inf, low_open=True, high_open=True)
    yield from integer("freeze_layers", 0)
    yield from real("gradual_unfreezing", 0, 1, low_open=True, optional=True)
    if _is_int(r.freeze_layers) and r.freeze_layers and r.gradual_unfreezing is not None:
        yield "give freeze_layers or gradual_unfreezing, not both (gradual unfreezing starts from everything frozen)"
    yield from integer("reinit_layers", 0)
    yield from flag("reinit_pooler")
    yield from real("swa_start", 0, 1, low_open=True, optional=True)
    yield from real("swa_lr", 0, math.inf, high_open=True, optional=True)
    yield from integer("swa_every", 1)
    yield from real("ema_decay", 0, 1, low_open=True, high_open=True, optional=True)
    if r.ema_decay is not None and r.swa_start is None:
        yield "ema_decay needs swa_start (the fraction of the run from which the EMA averages)"
    yield from integer("lora_rank", 1, optional=True)
    yield from real("lora_alpha", 0, math.inf, low_open=True, high_open=True)
    yield from real("lora_dropout", 0, 1, high_open=True)
    targets = r.lora_targets
    if isinstance(targets, (str, bytes)) or not hasattr(targets, "__len__") or not len(targets) \
            or not all(isinstance(t, str) for t in targets):
        yield f"lora_targets must be a non-empty sequence of target names (ftcourse.models.LINEAR_ROLES), got {targets!r}"
    if r.lora_rank is not None and (r.freeze_layers or r.gradual_unfreezing is not None):
        yield "lora_rank freezes the whole backbone already: give it without freeze_layers or gradual_unfreezing"
    yield from integer("early_stopping_patience", 1, optional=True)
    yield from choice("early_stopping_metric", EARLY_STOPPING_METRICS)
    yield from choice("select", SELECTIONS)
    yield from integer("seed", 0)


def baseline_recipe(profile) -> Recipe:
    """The baseline run of ``profile`` (``ftcourse.course.profiles``): its model, sizes, lr, warmup,
    weight decay and precision, with AdamW and linear warmup-decay; the seed is the profile's first."""
    return Recipe(
        model_id=profile.model_id, train_size=profile.train_size, data_seed=profile.data_seed,
        max_length=profile.max_length, val_size=profile.val_size, test_size=profile.test_size,
        batch_size=profile.batch_size, eval_batch_size=profile.eval_batch_size, epochs=profile.epochs,
        evals_per_epoch=profile.evals_per_epoch, lr=profile.lr, weight_decay=profile.weight_decay,
        warmup_ratio=profile.warmup_ratio, precision=profile.amp, seed=profile.seeds[0])


CANARY_VAL_SIZE, CANARY_TEST_SIZE = 256, 512


def canary(recipe: Recipe, steps: int = 60) -> Recipe:
    """A short run on the same code paths as ``recipe``, for quick re-runs that check a stored bank: one epoch
    of at most ``steps`` optimizer steps (the training set cut to ``steps`` global batches), scored on fixed
    stratified subsets of 256 validation and 512 test sentences (a canary checks that runs reproduce, not
    accuracy, so its evaluations need not cost more than its training)."""
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return recipe.replace(train_size=min(recipe.train_size, steps * recipe.batch_size), epochs=1, max_steps=None,
                          val_size=min(recipe.val_size or 872, CANARY_VAL_SIZE),
                          test_size=min(recipe.test_size or 1821, CANARY_TEST_SIZE))
