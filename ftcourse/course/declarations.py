"""What each notebook runs, declared once as recipes: the arms, the comparisons, the canaries.

Course harness (not a technique module).

``declaration(notebook, profile)`` gives a notebook's :class:`Declaration`, built from the profile:

* **arms**: labelled recipes x seeds (:class:`Arm`). Identical recipes are one run (one key), within
  a notebook and across notebooks. An arm whose value is chosen while the notebook runs (an lr
  chosen on validation) names that field and its grid (:class:`Choice`); an arm whose runs also take
  code of the notebook's own (a recorder, a teaching copy of a callback) says which (``custom``):
  its recipe alone does not reproduce it, so it is run live, never banked;
* **comparisons**: which arms are compared, and how (:class:`Comparison`: paired over seeds,
  failure rates, equivalence within a margin stated here, before any run);
* **canaries**: two recipes of at most 60 optimizer steps on the notebook's own code paths, for quick
  re-runs (:func:`ftcourse.course.recipes.canary`);
* ``other_work_s``: the seconds of the cells that are not fine-tuning runs, on the reference machine.

Nothing else restates how many runs a notebook makes: ``python -m ftcourse estimate`` reads these
declarations (profile -> declaration -> throughput -> table), the test that holds every ``gpu``
notebook to its 20-minute slot reads them, long cells print what they are about to run from them
(:func:`announce`), and CI checks that what each notebook ran matches its declaration
(:func:`check_runs`, on the records ``notebook_footer`` writes). A learner's notebook never checks
itself: changing a seed or an lr there is what the course is for.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .recipes import Recipe, baseline_recipe, canary

# The reference machine: the 2-core development machine of the cpu profile (Intel Xeon, AVX-512),
# quiet, MiniLM, batch 16, length-grouped: training examples/s and evaluation sentences/s.
REFERENCE_TRAIN_PER_S = 106.0
REFERENCE_EVAL_PER_S = 300.0
REFERENCE_RUN_OVERHEAD_S = 4.0  # model load, optimizer, loaders
NOTEBOOK_STARTUP_S = 15.0

# The gpu profile's sizing device, a Colab T4, unmeasured here (no T4 was available): roberta-base, fp16 autocast,
# batch 32, length-grouped SST-2 batches (training batches pad to ~14 tokens on average, evaluation batches of 128
# to ~28: measured with the course's loaders). Published T4 figures are for 128-token sequences:
# * training: ModernBERT-base, batch 32, max_length 128, fp16: 0.30 s a batch, ~107 sequences/s ("Your T4 Training
#   Is 4x Slower Than It Should Be", earino.github.io/applied-deep-learning, blog post 05); bert-base-uncased on
#   SST-2, batch 16, padded to 128, fp32: 20,000 examples x 2 epochs in 14.6 min, ~46/s (KyriakosTop/
#   bert-distilbert-compression, notebooks/n8_bert_qlora_gpu_t4.ipynb);
# * inference: BERT-base, sequence 128, batch 8, fp16: 532.56 sequences/s (NVIDIA DeepLearningExamples,
#   TensorFlow2/LanguageModeling/BERT/README.md, "Fine-tuning inference performance ... on NVIDIA Tesla T4").
# Scaled to the shorter batches by tokens, those would be ~980 training examples/s and ~2,400 evaluation
# sentences/s; short sequences are bound by kernel launches and Python, not arithmetic, so the sizing assumes a
# third of that: 300 and 1,000 (2.8x and 1.9x the 128-token figures), and 6 s a run to load the model.
# `python -m ftcourse estimate --profile gpu` on the runtime replaces all three with measurements.
T4_TRAIN_PER_S = 300.0
T4_EVAL_PER_S = 1000.0
T4_RUN_OVERHEAD_S = 6.0

# A notebook's time budget in minutes, per profile: the one place the footer table (README), the nbval report
# (conftest.py) and the estimate read. ci: nbval on 2 cores (all notebooks together: CI_TOTAL_BUDGET_MIN);
# cpu: the 2-core laptop; gpu: a workshop slot of compute on a Colab T4 (installs and downloads not counted).
BUDGET_MIN = {"ci": {"*": 2}, "cpu": {"*": 10, "05": 15, "11": 15}, "gpu": {"*": 20}}
# a notebook's seed bank, minutes on the 2 cores of the reference machine (the course's: BANK_TOTAL_BUDGET_MIN)
BANK_BUDGET_MIN = {"*": 90, "05": 120, "11": 120, "12": 120}
BANK_TOTAL_BUDGET_MIN = 16 * 60
CI_TOTAL_BUDGET_MIN = 20
CANARY_MAX_STEPS = 60
COMPARISON_KINDS = ("paired", "failures", "equivalence", "mcnemar")


SOLUTIONS_BUDGET_MIN = {"ci": 1}  # a solutions notebook (solutions/NN_name_solutions.ipynb) in ci


def budget_minutes(notebook: str, profile_name: str) -> float:
    """The budget of ``notebook`` ("07" or "07_llrd"; "01_baseline_solutions": its solutions) in the profile named
    ``profile_name``."""
    if profile_name not in BUDGET_MIN:
        raise ValueError(f"profile_name must be one of {sorted(BUDGET_MIN)}, got {profile_name!r}")
    if notebook.endswith("_solutions") and profile_name in SOLUTIONS_BUDGET_MIN:
        return SOLUTIONS_BUDGET_MIN[profile_name]
    budgets = BUDGET_MIN[profile_name]
    return budgets.get(notebook[:2], budgets["*"])


@dataclass(frozen=True)
class Choice:
    """A recipe field chosen while the notebook runs (on validation, from the runs of another arm): any of
    ``values``. The declaration holds the first value as a stand-in, which counts the runs right."""
    field: str
    values: tuple
    on: str = "validation"


@dataclass(frozen=True)
class Arm:
    """``recipe`` at each of ``seeds`` (each run is ``recipe.replace(seed=s)``), labelled ``label``.
    ``choice``: a field the notebook chooses while it runs. ``custom``: the code the notebook passes beside
    the recipe, in words ("" when the recipe is the whole run). ``outputs``: extra evaluations of the final weights
    the bank stores with each run (``ftcourse.course.runner.EXTRA_OUTPUTS``). ``extra_val_pass``: whether a validation pass
    follows the loop (callbacks may change the weights; None: derive it from the recipe). ``cell``: the
    notebook cell that runs it, for :func:`announce` (default: the label)."""
    label: str
    recipe: Recipe
    seeds: tuple[int, ...]
    choice: Choice | None = None
    custom: str = ""
    extra_val_pass: bool | None = None
    cell: str = ""
    outputs: tuple[str, ...] = ()  # extra evaluations of the final weights to store (runner.EXTRA_OUTPUTS)

    @property
    def cell_name(self) -> str:
        return self.cell or self.label

    def runs(self) -> list["DeclaredRun"]:
        return [DeclaredRun(self.label, self.recipe.replace(seed=s), self.choice, self.custom, self.val_pass)
                for s in self.seeds]

    @property
    def val_pass(self) -> bool:
        if self.extra_val_pass is not None:
            return self.extra_val_pass
        r = self.recipe
        return r.selects_checkpoints or r.swa_start is not None or r.gradual_unfreezing is not None


@dataclass(frozen=True)
class DeclaredRun:
    label: str
    recipe: Recipe
    choice: Choice | None
    custom: str
    extra_val_pass: bool

    @property
    def identity(self) -> tuple:
        """Identical recipes (and the same custom code) are one run."""
        return self.recipe.key(), self.custom


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b``, by ``kind``: "paired" (paired t over seeds), "failures" (Fisher's exact
    test on failure counts), "equivalence" (TOST within ``margin``, stated here before any run) or
    "mcnemar" (the same models of ``a`` evaluated two ways, ``what`` says which: then ``a`` may be ``b``)."""
    a: str
    b: str
    kind: str = "paired"
    margin: float | None = None
    what: str = ""

    def __post_init__(self):
        if self.kind not in COMPARISON_KINDS:
            raise ValueError(f"Comparison kind must be one of {', '.join(COMPARISON_KINDS)}, got {self.kind!r}")
        if (self.kind == "equivalence") != (self.margin is not None):
            raise ValueError("an equivalence comparison needs its margin (> 0), and only it takes one")
        if self.margin is not None and not self.margin > 0:
            raise ValueError(f"margin must be > 0, got {self.margin!r}")


@dataclass(frozen=True)
class Declaration:
    notebook: str
    arms: tuple[Arm, ...]
    comparisons: tuple[Comparison, ...] = ()
    canaries: tuple[Recipe, ...] = ()
    other_work_s: float = 0.0  # other cells, seconds on the reference machine
    note: str = ""
    cells: tuple[str, ...] = field(default=())  # every cell that runs arms, with those this profile switches off
    banked: bool = False  # the notebook takes its runs from the seed bank (bank.declared_runs) and reruns its canaries

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(dict.fromkeys((*self.cells, *(a.cell_name for a in self.arms)))))
        known = {a.label for a in self.arms}
        object.__setattr__(self, "arms", tuple(a for a in self.arms if a.seeds))
        for c in self.comparisons:
            missing = {c.a, c.b} - known
            if missing:
                raise ValueError(f"{self.notebook}: comparison of undeclared arm(s) {sorted(missing)}")
        for recipe in self.canaries:
            if recipe.total_steps() > CANARY_MAX_STEPS:
                raise ValueError(f"{self.notebook}: a canary runs {recipe.total_steps()} optimizer steps, "
                                 f"more than {CANARY_MAX_STEPS}")

    def runs(self, arms=None) -> list[DeclaredRun]:
        """The distinct runs of ``arms`` (default: all), in declaration order: identical recipes are one run."""
        seen, out = set(), []
        for arm in self.arms if arms is None else arms:
            for run in arm.runs():
                if run.identity not in seen:
                    seen.add(run.identity)
                    out.append(run)
        return out

    def new_runs(self, *cells: str) -> list[DeclaredRun]:
        """The runs the arms of ``cells`` add to the arms declared before them (what those cells run)."""
        arms = self.group(*cells)
        first = min(self.arms.index(a) for a in arms) if arms else len(self.arms)
        before = {r.identity for r in self.runs(self.arms[:first])}
        return [r for r in self.runs(self.arms[:first] + arms) if r.identity not in before]

    @property
    def n_runs(self) -> int:
        return len(self.runs())

    def recipes(self, *cells: str) -> dict[str, Recipe]:
        """The recipe of each arm of ``cells`` (seed: the arm's recipe's), by label, in declaration order."""
        return {arm.label: arm.recipe for arm in self.group(*cells)}

    def group(self, *cells: str) -> tuple[Arm, ...]:
        """The arms of these cells (those a profile switches off are absent: an empty tuple)."""
        unknown = [cell for cell in cells if cell not in self.cells]
        if unknown:
            raise KeyError(f"{self.notebook} declares no cell {unknown}; its cells: {list(self.cells)}")
        return tuple(a for a in self.arms if a.cell_name in cells)


# ---------------------------------------------------------------------------------------------
# Cost: what estimate, announce and the gpu-slot test compute from a declaration
# ---------------------------------------------------------------------------------------------
def eval_sizes(recipe: Recipe) -> tuple[int, int]:
    return recipe.val_size or 872, recipe.test_size or 1821


def run_seconds(run: DeclaredRun, train_per_s: float, eval_per_s: float, overhead_s: float) -> float:
    """Seconds for one run at the given throughputs: its training examples, its validation passes (and the
    one after the loop where callbacks may change the weights), the test pass and the per-run overhead."""
    r = run.recipe
    steps = r.total_steps()
    passes = min(r.epochs * r.evals_per_epoch, steps) + run.extra_val_pass
    val_n, test_n = eval_sizes(r)
    return steps * r.batch_size / train_per_s + (passes * val_n + test_n) / eval_per_s + overhead_s


def train_examples(run: DeclaredRun) -> int:
    return run.recipe.total_steps() * run.recipe.batch_size


def seconds(declared: Declaration, train_per_s: float = REFERENCE_TRAIN_PER_S,
            eval_per_s: float = REFERENCE_EVAL_PER_S, overhead_s: float = REFERENCE_RUN_OVERHEAD_S) -> float:
    """Predicted wall time of a notebook at these throughputs (its other work scaled by the training speed)."""
    total = sum(run_seconds(r, train_per_s, eval_per_s, overhead_s) for r in declared.runs())
    return total + declared.other_work_s * REFERENCE_TRAIN_PER_S / train_per_s + NOTEBOOK_STARTUP_S


def announce(declared: Declaration, *cells: str) -> None:
    """The line a long experiment cell prints first: how many new runs its arms (those of ``cells``; none: every
    arm) add, of which sizes, and about how long that takes on the 2-core reference machine
    (``python -m ftcourse estimate`` predicts this machine). It returns nothing, so that a cell ending
    with it does not show the line twice."""
    runs = declared.new_runs(*cells) if cells else declared.runs()
    if not runs:
        print("this cell runs no new fine-tuning run (the declaration reuses earlier runs, or the profile switches "
              "these arms off)")
        return
    s = sum(run_seconds(r, REFERENCE_TRAIN_PER_S, REFERENCE_EVAL_PER_S, REFERENCE_RUN_OVERHEAD_S) for r in runs)
    sizes = ", ".join(dict.fromkeys(f"{r.recipe.train_size} examples x {r.recipe.epochs} epoch{'s' * (r.recipe.epochs != 1)}"
                                    for r in runs))
    print(f"this cell runs {len(runs)} fine-tuning run{'s' * (len(runs) != 1)} ({sizes}), about "
          f"{max(1, round(s / 60))} min on the 2-core reference machine (`python -m ftcourse estimate` predicts this machine)")


# ---------------------------------------------------------------------------------------------
# The check: what a notebook ran against what it declares (CI runs it on the footer's records)
# ---------------------------------------------------------------------------------------------
def expected_live_runs(declared: Declaration, stored_keys: set[str], bank_profile: str, profile_name: str) -> Declaration:
    """What a notebook runs live in ``profile_name``: every declared run, unless it takes its runs from the bank
    (``banked``); then its canaries, the runs the bank cannot hold (code of its own, or a choice made while it runs),
    and, in the bank's own profile only, the bankable runs the bank does not hold yet (other profiles list them)."""
    if not declared.banked:
        return declared
    arms = []
    for arm in declared.arms:
        bankable = not arm.custom and arm.choice is None
        seeds = tuple(s for s in arm.seeds if not bankable or (profile_name == bank_profile
                                                             and arm.recipe.replace(seed=s).key() not in stored_keys))
        arms.append(Arm(arm.label, arm.recipe, seeds, arm.choice, arm.custom, arm.extra_val_pass, arm.cell, arm.outputs))
    arms += [Arm(f"canary {i + 1}", c, (c.seed,), cell="canaries") for i, c in enumerate(declared.canaries)]
    return Declaration(declared.notebook, tuple(arms), other_work_s=declared.other_work_s, note=declared.note)


def _modulo(changes: dict, name: str) -> dict:
    return {k: v for k, v in changes.items() if k not in (name, "seed")} | {"seed": changes.get("seed", 0)}


def check_runs(declared: Declaration, made: list[dict]) -> list[str]:
    """What differs between the runs a notebook made (records of ``ftcourse.course.runner.runs_made``: key,
    recipe changes, custom code) and its declaration: one line per run declared and not made, or made and not
    declared. Empty: they match. A run matches a declared run with the same key and the same kind (custom code
    or none); a run of an arm with a :class:`Choice` matches where only the chosen field differs, within its grid."""
    pending = list(declared.runs())
    unmatched = []
    for record in made:
        custom = bool(record.get("custom"))
        exact = next((d for d in pending if d.recipe.key() == record["key"] and bool(d.custom) == custom), None)
        if exact is None:
            exact = next((d for d in pending if d.choice is not None and bool(d.custom) == custom
                          and record["recipe"].get(d.choice.field, _default(d.choice.field)) in d.choice.values
                          and _modulo(record["recipe"], d.choice.field) == _modulo(d.recipe.changes(), d.choice.field)),
                         None)
        if exact is None:
            unmatched.append(record)
        else:
            pending.remove(exact)
    lines = [f"declared, not run: {d.label} ({d.recipe.describe()}{', custom: ' + d.custom if d.custom else ''})"
             for d in pending]
    lines += [f"run, not declared: {r.get('label') or '?'} ({Recipe.from_dict(r['recipe']).describe()}"
              f"{', custom: ' + ', '.join(r['custom']) if r.get('custom') else ''})" for r in unmatched]
    return lines


def _default(name: str):
    return Recipe().to_dict()[name]


# ---------------------------------------------------------------------------------------------
# The declarations, one function a notebook, built from the profile as the notebook's code runs them.
# other_work_s: elapsed minus the runs' minutes of the notebook's cpu footer, else a guess; ci has its own.
# ---------------------------------------------------------------------------------------------
def _other(p, cpu: float, ci: float) -> float:
    """A notebook's other work in seconds on the reference machine: ``cpu`` measured in the cpu profile (elapsed
    minus the runs of its footer), ``ci`` in the ci profile (nbval time minus the declared runs). The gpu profile
    has no measurement: it takes the cpu figure (scaled by the measured training speed, like every other work)."""
    return ci if p.name == "ci" else cpu


def fast_low_precision() -> bool:
    """Whether 04 is expected to run its fp32-vs-low-precision comparison here. The notebook decides on a
    measurement (low precision at >= ``mixed_precision.min_speed_ratio`` of fp32's speed); a declaration is made
    before it, so this stands in for it: a CUDA GPU, or a CPU with native bf16 (AVX512-BF16, AMX: the
    reference machine measured above the ratio). A CPU without them emulates bf16 at ~0.06x fp32 (measured on
    an AVX2 machine), and 04 then trains one fp32 model only; MPS and machines without /proc/cpuinfo are
    declared that way too (unmeasured)."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _canaries(*recipes: Recipe) -> tuple[Recipe, ...]:
    return tuple(canary(r.replace(seed=i), CANARY_MAX_STEPS) for i, r in enumerate(recipes))


def _baseline(p) -> Declaration:
    base = baseline_recipe(p)
    # other work (data statistics, one model load, the no-mask test pass of every seed's model): 404 s - 5.7 min
    # the loop of "八个建议" builds AdamW with betas (0.9, 0.99): the same seeds, paired
    betas = base.replace(optimizer_kwargs={"betas": [0.9, 0.99]})
    return Declaration("01_baseline", (Arm("baseline", base, p.seeds, outputs=("no_attention_mask",)),
                                       Arm("AdamW betas (0.9, 0.99)", betas, p.seeds)), banked=True,
                       comparisons=(Comparison("baseline", "baseline", "mcnemar",
                                               what="evaluated with and without attention_mask"),
                                    Comparison("AdamW betas (0.9, 0.99)", "baseline")),
                       canaries=_canaries(base, base), other_work_s=_other(p, 62, ci=10))


def accumulation_recipes(p) -> dict[str, Recipe]:
    """02's recipes by arm (seed 0): the profile's batch (the baseline's recipe at the accumulation group's length, at
    12's chosen full fine-tuning lr: in the cpu profile, the bank's stored baseline) and the large effective batch,
    micro-batches of the profile's batch accumulated k times, at its chosen lr (validated ``evals_per_epoch`` times an
    epoch: evaluation never changes training)."""
    a = p.accumulation
    small = baseline_recipe(p).replace(train_size=a.train_size, epochs=a.epochs, lr=p.lora.chosen[0])
    k = -(-a.large_batch // p.batch_size)
    large = small.replace(batch_size=p.batch_size * k, accumulation_steps=k, evals_per_epoch=a.evals_per_epoch,
                          lr=a.chosen_large_lr)
    return {f"effective batch {small.batch_size}": small, f"effective batch {large.batch_size} (k = {k})": large}


def _accumulation(p) -> Declaration:
    a = p.accumulation
    recipes = accumulation_recipes(p)
    (small_label, small), (large_label, large) = recipes.items()
    # 1. each batch's lr on validation, one selection seed (never reused): the profile's batch reuses 12's sweep of full
    # fine-tuning (the same runs), the large batch sweeps its own grid (the linear and square-root scaling rules' lrs)
    arms = [Arm(f"{small_label}, lr {lr:g} (sweep)", small.replace(lr=lr, evals_per_epoch=p.lora.evals_per_epoch),
                (p.lora.selection_seed,), cell="lr sweep") for lr in p.lora.full_lrs]
    arms += [Arm(f"{large_label}, lr {lr:g} (sweep)", large.replace(lr=lr), (a.selection_seed,), cell="lr sweep")
             for lr in a.large_lrs]
    # 2. both at their chosen lr over fresh seeds, equal epochs. "A bigger batch (by accumulation) is the most effective
    # suggestion" and "a large batch overfits" ("八个建议"): paired differences
    arms += [Arm(label, recipe, a.seeds, cell="comparison") for label, recipe in recipes.items()]
    # other work (the float64 proof, Trainer's 3 one-step runs, the micro-batch sweep, the batch-size finder): 46 s
    return Declaration("02_gradient_accumulation", tuple(arms), comparisons=(Comparison(large_label, small_label),),
                       banked=True, canaries=_canaries(large, small), other_work_s=_other(p, 46, ci=30))


def freezing_recipes(p) -> dict[str, Recipe]:
    """03's recipes (seed 0): full fine-tuning at the converged baseline (06's linear arm), the same with the bottom
    blocks frozen, and ULMFiT's regime (few examples, one unit unfrozen an epoch) with its full fine-tuning."""
    f = p.freezing
    full = schedule_recipes(p)["linear"]
    few = baseline_recipe(p).replace(train_size=f.gradual_train_size, epochs=f.gradual_epochs, evals_per_epoch=1)
    return {"full fine-tuning": full, f"bottom {max(f.frozen_layers)} blocks frozen": full.replace(freeze_layers=max(f.frozen_layers)),
            "full fine-tuning, few examples": few,
            # every = gradual_unfreezing x steps / (blocks + 1) = one epoch: a unit after each epoch, top block first
            "gradual unfreezing": few.replace(gradual_unfreezing=1.0)}


def _freezing(p) -> Declaration:
    f = p.freezing
    recipes = freezing_recipes(p)
    labels = list(recipes)
    arms = tuple(Arm(label, recipe, f.compared_seeds, cell="frozen blocks" if i < 2 else "gradual unfreezing")
                 for i, (label, recipe) in enumerate(recipes.items()))
    # "freezing the bottom blocks costs little" (the project README): equivalence, its margin set before the build;
    # gradual unfreezing against full fine-tuning of the same length: paired over seeds (mde)
    comparisons = (Comparison(labels[1], labels[0], "equivalence", margin=f.margin), Comparison(labels[3], labels[2]))
    # other work (probes on cached features, gradient norms, timing): 73 s
    return Declaration("03_freezing", arms, comparisons=comparisons, banked=True,
                       canaries=_canaries(recipes[labels[1]], recipes[labels[3]]), other_work_s=_other(p, 73, ci=20))


def _mixed_precision(p, fast: bool | None = None) -> Declaration:
    """``fast``: whether low precision trains at speed here (None: :func:`fast_low_precision` guesses)."""
    m = p.mixed_precision
    fp32 = baseline_recipe(p).replace(train_size=m.train_size, epochs=m.epochs, evals_per_epoch=1, precision=None)
    fast = fast_low_precision() if fast is None else fast
    import torch

    low = fp32.replace(precision="auto" if torch.cuda.is_available() else "bf16")
    # other work: 36 s (reference machine, native bf16); emulated bf16 adds ~150 s (timed bf16 steps, its test pass)
    canaries = _canaries(fp32, low)
    if fast:
        return Declaration("04_mixed_precision", (Arm("fp32", fp32, m.seeds), Arm("low precision", low, m.seeds)),
                           # "mixed precision matches fp32" (Micikevicius et al. 2018; Kalamkar et al. 2019) is an
                           # equivalence claim: TOST, its margin set here before any run (same seeds, same data order,
                           # only the rounding differs, so the paired differences are small)
                           comparisons=(Comparison("low precision", "fp32", "equivalence", margin=0.01),),
                           canaries=canaries,
                           other_work_s=_other(p, 36, ci=20))
    return Declaration("04_mixed_precision", (Arm("fp32", fp32, m.seeds[:1]),), canaries=canaries[:1] + canaries[:1],
                       other_work_s=_other(p, 36 + 150, ci=20 + 40), cells=("fp32", "low precision"),
                       note="low precision expected too slow to train here (fast_low_precision)")


_OPTIMIZER_KWARGS = {"SGD": {"momentum": 0.9}, "LARS": {"momentum": 0.9}}


def _optimizers(p) -> Declaration:
    o = p.optimizers
    base = baseline_recipe(p).replace(evals_per_epoch=o.evals_per_epoch)
    few = base.replace(train_size=o.few_sample_size, epochs=o.few_sample_epochs)
    sweep = base.replace(train_size=o.sweep_train_size, epochs=o.epochs)
    main = base.replace(train_size=o.train_size, epochs=o.epochs)
    grid = dict(o.lr_grid)

    def custom(name):
        return f"ftcourse.optim {name} factory"

    arms = []
    for name in ("AdamW", "BERTAdam"):
        arms += [Arm("BERTAdam vs AdamW, lr sweep and seeds", few.replace(lr=lr), o.few_sample_sweep_seeds, custom=custom(name))
                 for lr in o.few_sample_lrs]
        arms.append(Arm("BERTAdam vs AdamW, lr sweep and seeds", few.replace(lr=o.few_sample_lrs[0]), o.few_sample_seeds,
                        custom=custom(name), choice=Choice("lr", tuple(o.few_sample_lrs))))
    for name, lrs in grid.items():
        arms += [Arm("seven optimizers, lr sweep", sweep.replace(lr=lr), o.sweep_seeds, custom=custom(name)) for lr in lrs]
    for name, lrs in grid.items():
        # AdamW's choice comes from the few-sample runs where the sizes match (every profile): any lr of the grid
        # stands in for the chosen one, as long as the same choice is made in both places
        stand_in = o.few_sample_lrs[0] if name == "AdamW" and o.few_sample_lrs[0] in lrs else lrs[0]
        arms.append(Arm("seven optimizers at their chosen lrs", main.replace(lr=stand_in), o.seeds, custom=custom(name),
                        choice=Choice("lr", tuple(lrs))))
    # other work: 11 s
    return Declaration("05_optimizers_from_scratch", tuple(arms),
                       canaries=_canaries(few.replace(optimizer="BERTAdam"), few.replace(optimizer="AdamW")),
                       other_work_s=_other(p, 11, ci=0))


def optimizer_recipes(p) -> dict[str, Recipe]:
    """05's bank regimes (seed 0, AdamW from scratch): "few-sample", Zhang et al.'s regime (few examples, several
    epochs, the baseline's warmup), and "sensitivity", long enough to leave MiniLM's majority-class plateau; both
    evaluated once an epoch on the group's validation and test subsets."""
    o = p.optimizers
    base = baseline_recipe(p).replace(evals_per_epoch=1, val_size=o.val_size, test_size=o.test_size, optimizer="AdamW")
    return {"few-sample": base.replace(train_size=o.bank_few_size, epochs=o.bank_few_epochs, lr=o.failure_lr),
            "sensitivity": base.replace(train_size=o.sensitivity_size, epochs=o.sensitivity_epochs)}


def _optimizers_bank(p) -> Declaration:
    o = p.optimizers
    recipes = optimizer_recipes(p)
    few, sensitivity = recipes["few-sample"], recipes["sensitivity"]
    pair = ("AdamW", "BERTAdam")
    # 1. the pilot: both at every lr of the grid, on seeds the comparisons never reuse
    arms = [Arm(f"{name}, lr {lr:g} (pilot)", few.replace(optimizer=name, lr=lr), o.pilot_seeds, cell="pilot")
            for lr in o.pilot_lrs for name in pair]
    arms += [Arm(f"{name}, lr {lr:g} (pilot)", few.replace(optimizer=name, lr=lr), o.pilot_seeds, cell="pilot")
             for name, lr in o.pilot_extra]
    # 2. the seven optimizers' lr sensitivity curves (no verdicts: curves over seeds), before the arms the pilot sizes
    # SGD and LARS with momentum 0.9 (their papers' and the usual setting; the classes default to 0, as torch's SGD)
    momentum = {"SGD": {"momentum": 0.9}, "LARS": {"momentum": 0.9}}
    arms += [Arm(f"{name}, lr {lr:g}", sensitivity.replace(optimizer=name, lr=lr, optimizer_kwargs=momentum.get(name, {})),
                 o.sensitivity_seeds, cell="lr sweep")
             for name, lrs in o.sensitivity_grid for lr in lrs]
    # 3. failures at the pilot's lr (runs per arm sized by power); 4. each at its own lr chosen on the pilot's validation
    arms += [Arm(name, few.replace(optimizer=name), o.failure_seeds, cell="failures") for name in pair]
    arms += [Arm(f"{name}, own lr", few.replace(optimizer=name, lr=lr), o.compared_seeds, cell="own lrs")
             for name, lr in zip(pair, o.chosen)]
    # 5. live: both at the failure lr again, with every block's gradient norm recorded (optimizer hooks)
    arms += [Arm(f"{name}, per-block gradients", few.replace(optimizer=name), o.gradient_seeds,
                 custom="BlockNorms on the optimizer (ftcourse.grad_norms)", cell="per-block gradients") for name in pair]
    # "BERTAdam fails more often" (Zhang et al. 2021): Fisher's exact test on the counts; "it ends worse": paired over
    # seeds, each at its own validated lr
    comparisons = (Comparison("BERTAdam", "AdamW", "failures"), Comparison("BERTAdam, own lr", "AdamW, own lr"))
    # other work (the lesson's trajectories and checks, LARS replay, the gradient-norm reruns): 120 s
    return Declaration("05_optimizers_from_scratch", tuple(arms), comparisons=comparisons, banked=True,
                       canaries=_canaries(few.replace(optimizer="BERTAdam"), sensitivity.replace(optimizer="LAMB", lr=1e-3)),
                       other_work_s=_other(p, 120, ci=20))


def schedule_recipes(p) -> dict[str, Recipe]:
    """06's recipes by arm at their chosen lrs (seed 0): linear warmup-decay (the baseline's recipe at the schedules
    group's length and 12's chosen lr: in the cpu profile, the bank's stored baseline), constant (no warmup; it
    validates ``evals_per_epoch`` times an epoch, for the ReduceLROnPlateau replay), constant after warmup, and the
    articles' other schedules at linear's lr with its warmup."""
    s = p.schedules
    linear = baseline_recipe(p).replace(train_size=s.train_size, epochs=s.epochs, lr=p.lora.chosen[0])
    lighter = linear.replace(evals_per_epoch=1)
    steps = linear.total_steps()
    decay = steps - max(1, round(p.warmup_ratio * steps))
    kwargs = {"cosine": {}, "cosine_with_restarts": {"num_cycles": s.restart_cycles},
              "step": {"step_size": math.ceil(decay / 2), "gamma": s.step_gamma},
              "exponential": {"gamma": s.exponential_final ** (1 / decay)}}
    constant_lr, warm_lr = s.chosen
    recipes = {"linear": linear,
               "constant": lighter.replace(schedule="constant", warmup_ratio=0.0, lr=constant_lr,
                                           evals_per_epoch=s.evals_per_epoch),
               "constant_with_warmup": lighter.replace(schedule="constant_with_warmup", lr=warm_lr)}
    recipes |= {name: lighter.replace(schedule=name, schedule_kwargs=kwargs[name]) for name in s.compared}
    return recipes


def _schedules(p) -> Declaration:
    s = p.schedules
    recipes = schedule_recipes(p)
    # 1. each main configuration's lr on validation, one selection seed (never reused); linear's grid is 12's sweep of
    # full fine-tuning (the same runs)
    sweep_of = {"linear": (recipes["linear"].replace(evals_per_epoch=1), p.lora.full_lrs),
                "constant": (recipes["constant"].replace(evals_per_epoch=1), s.sweep_lrs),
                "constant_with_warmup": (recipes["constant_with_warmup"], s.sweep_lrs)}
    arms = [Arm(f"{name}, lr {lr:g} (sweep)", recipe.replace(lr=lr), (s.selection_seed,), cell="lr sweep")
            for name, (recipe, lrs) in sweep_of.items() for lr in lrs]
    # 2. the articles' other schedules at linear's lr (they need no choice: declared, and built, first); each main
    # configuration at its chosen lr over fresh seeds
    arms += [Arm(name, recipes[name], s.compared_seeds, cell="comparison") for name in s.compared]
    arms += [Arm(name, recipes[name], s.seeds, cell="comparison") for name in ("linear", "constant", "constant_with_warmup")]
    arms.append(Arm("ReduceLROnPlateau", recipes["constant"], s.seeds[:s.plateau_runs],
                    custom="PlateauOnValidation callback", cell="ReduceLROnPlateau"))
    # a cycle, so that each arm leads one difference: the schedule against a constant lr, the decay after the same
    # warmup, the warmup at a constant lr
    comparisons = [Comparison("constant", "linear"), Comparison("linear", "constant_with_warmup"),
                   Comparison("constant_with_warmup", "constant")]
    comparisons += [Comparison(name, "linear") for name in s.compared]
    # other work (the lesson, the schedules' figures, two LR range tests and the 60 steps before the second): 60 s
    return Declaration("06_lr_schedules", tuple(arms), comparisons=tuple(comparisons), banked=True,
                       canaries=_canaries(recipes["linear"], recipes["constant"]), other_work_s=_other(p, 60, ci=10),
                       cells=("ReduceLROnPlateau",))


# grouped LLRD as the "Advanced Techniques for Fine-tuning Transformers" article sets it for roberta-base: three groups at
# 1e-6, 1.75e-6, 3.5e-6 (bottom to top) and the head at 3.6e-6, as ratios of the top group's (the peak) lr
ARTICLE_GROUP_RATIOS = (1 / 3.5, 1.75 / 3.5, 1.0)
ARTICLE_HEAD_RATIO = 3.6 / 3.5


def llrd_recipes(p) -> dict[str, Recipe]:
    """07's recipes by arm at their chosen lrs (seed 0): plain fine-tuning (the baseline's recipe at the LLRD group's
    length, at 12's chosen full fine-tuning lr: in the cpu profile, the bank's stored baseline), LLRD at the chosen
    peak lr and decay, and grouped LLRD (the article's ratios) at that peak lr. LLRD runs validate ``evals_per_epoch``
    times an epoch (evaluation never changes training)."""
    l = p.llrd
    full = baseline_recipe(p).replace(train_size=l.train_size, epochs=l.epochs)
    lighter = full.replace(evals_per_epoch=l.evals_per_epoch)
    lr, decay = l.chosen
    recipes = {"plain": full.replace(lr=p.lora.chosen[0]), f"LLRD ({decay:g})": lighter.replace(lr=lr, llrd_decay=decay)}
    if l.grouped:
        recipes["grouped LLRD"] = lighter.replace(lr=lr, llrd_group_ratios=ARTICLE_GROUP_RATIOS,
                                                  head_lr_ratio=ARTICLE_HEAD_RATIO)
    return recipes


def _llrd(p) -> Declaration:
    l = p.llrd
    full = baseline_recipe(p).replace(train_size=l.train_size, epochs=l.epochs, evals_per_epoch=l.evals_per_epoch)
    # 1. each configuration's lr on validation, one selection seed (never reused): plain's grid is 12's sweep of full
    # fine-tuning (the same runs), LLRD's crosses the peak lr with the decay
    arms = [Arm(f"plain, lr {lr:g} (sweep)", full.replace(lr=lr), (l.selection_seed,), cell="lr sweep")
            for lr in p.lora.full_lrs]
    arms += [Arm(f"LLRD ({decay:g}), lr {lr:g} (sweep)", full.replace(lr=lr, llrd_decay=decay), (l.selection_seed,),
                 cell="lr sweep") for decay in l.decays for lr in l.lrs]
    # 2. every configuration at its chosen lr over fresh seeds
    recipes = llrd_recipes(p)
    arms += [Arm(label, recipe, l.seeds, cell="comparison") for label, recipe in recipes.items()]
    llrd_label = list(recipes)[1]
    # "LLRD adds little once Adam is bias-corrected" (Zhang et al. 2021): an equivalence claim, its margin stated here,
    # before any run; the article's "LLRD improves" and "grouped LLRD improves": paired differences
    comparisons = [Comparison(llrd_label, "plain"), Comparison(llrd_label, "plain", "equivalence", margin=0.02)]
    if l.grouped:
        comparisons.append(Comparison("grouped LLRD", "plain"))
    # other work (model loads, the lesson, lr tables and figures): 5 s
    return Declaration("07_llrd", tuple(arms), comparisons=tuple(comparisons), banked=True,
                       canaries=_canaries(recipes[llrd_label], recipes["plain"]), other_work_s=_other(p, 5, ci=0))


def reinit_recipes(p) -> dict[str, Recipe]:
    """08's two regimes (seed 0, plain fine-tuning: ``reinit_layers=0``): "failures", the few-sample regime without warmup
    at the pilot's chosen lr, and "longer", the few-sample regime trained for many epochs with the baseline's warmup,
    evaluated once an epoch; both scored on the group's validation and test subsets."""
    r = p.reinit
    base = baseline_recipe(p).replace(evals_per_epoch=1, val_size=r.val_size, test_size=r.test_size)
    return {"failures": base.replace(train_size=r.failure_train_size, epochs=r.failure_epochs, warmup_ratio=0.0,
                                     lr=r.failure_lr),
            "longer": base.replace(train_size=r.train_size, epochs=r.epochs, lr=r.lr)}


def _reinit(p) -> Declaration:
    r = p.reinit
    recipes = reinit_recipes(p)
    failures, longer = recipes["failures"], recipes["longer"]
    # 1. the pilot: plain and each k at every lr of the grid, on seeds the comparison never reuses
    arms = [Arm(f"re-init {k}, lr {lr:g} (pilot)", failures.replace(lr=lr, reinit_layers=k), r.pilot_seeds, cell="pilot")
            for lr in r.failure_lrs for k in r.layers]
    # 2. failures at the pilot's lr, runs per arm sized by power; 3. training longer, the learning curves
    arms += [Arm(f"re-init {k}", failures.replace(reinit_layers=k), r.failure_seeds, cell="failures") for k in r.layers]
    arms += [Arm(f"re-init {k}, {r.epochs} epochs", longer.replace(reinit_layers=k), r.seeds, cell="longer") for k in r.layers]
    top = max(r.layers)
    # "re-init makes failed runs rarer" (Zhang et al. 2021): Fisher's exact test on the counts; "trained longer it
    # catches up": paired over seeds
    comparisons = (Comparison(f"re-init {top}", "re-init 0", "failures"),
                   Comparison(f"re-init {top}, {r.epochs} epochs", f"re-init 0, {r.epochs} epochs"))
    # other work (model loads, the lesson's checks, the head initialisers): 20 s
    return Declaration("08_reinit", tuple(arms), comparisons=comparisons, banked=True,
                       canaries=_canaries(failures.replace(reinit_layers=top), longer),
                       other_work_s=_other(p, 20, ci=10))


def swa_recipes(p) -> dict[str, Recipe]:
    """09's recipes by arm (seed 0): the normal schedule (the baseline's recipe at the SWA group's length, at 12's
    chosen full fine-tuning lr: in the cpu profile, the bank's stored baseline) and SWA from each start at the chosen
    swa_lr, which keeps the normal schedule's peak lr before its start (SWA runs validate ``evals_per_epoch`` times an
    epoch: evaluation never changes training)."""
    w = p.swa
    normal = baseline_recipe(p).replace(train_size=w.train_size, epochs=w.epochs, lr=p.lora.chosen[0])
    lighter = normal.replace(evals_per_epoch=w.evals_per_epoch)  # evaluation never changes training
    starts = (w.start,) if w.other_start is None else (w.start, w.other_start)
    return {"normal schedule": normal} | {f"SWA from {s:.0%}": lighter.replace(swa_start=s, swa_lr=w.chosen_swa_lr)
                                          for s in starts}


def _swa(p) -> Declaration:
    w = p.swa
    recipes = swa_recipes(p)
    normal, main = recipes["normal schedule"], f"SWA from {w.start:.0%}"
    # 1. the normal schedule's lr is 12's sweep of full fine-tuning (the same runs); SWA's swa_lr on validation (its
    # average's accuracy), one selection seed (never reused), SWA from the main start
    arms = [Arm(f"normal schedule, lr {lr:g} (sweep)", normal.replace(lr=lr, evals_per_epoch=p.lora.evals_per_epoch),
                (p.lora.selection_seed,), cell="lr sweep") for lr in p.lora.full_lrs]
    arms += [Arm(f"{main}, swa_lr {lr:g} (sweep)", recipes[main].replace(swa_lr=lr), (w.selection_seed,), cell="lr sweep")
             for lr in w.swa_lrs]
    # 2. every arm at its chosen lr over fresh seeds; the average is also compared with its own run's last weights
    # (the last evaluation of the same runs: no run of its own)
    arms += [Arm(label, recipe, w.seeds, cell="comparison") for label, recipe in recipes.items()]
    # "SWA improves generalisation" (Izmailov et al. 2018): a paired difference; "SWA adds little" to fine-tuning: an
    # equivalence, its margin stated here, before any run
    comparisons = [Comparison(main, "normal schedule"), Comparison(main, "normal schedule", "equivalence", margin=0.02)]
    if w.other_start is not None:
        comparisons.append(Comparison(f"SWA from {w.other_start:.0%}", main))
    # other work (the lesson, three one-epoch demo runs, update_bn and the EMA's buffers): 60 s
    return Declaration("09_swa", tuple(arms), comparisons=tuple(comparisons), banked=True,
                       canaries=_canaries(recipes[main], normal), other_work_s=_other(p, 60, ci=30))


def early_stopping_recipe(p) -> Recipe:
    """10's recipe (seed 0): the baseline at the early_stopping group's length and schedule (a constant lr after
    warmup), evaluated ``evals_per_epoch`` times an epoch, trained to the end (``select="final"``): every selection and
    stopping rule is replayed from its stored evaluations."""
    e = p.early_stopping
    return baseline_recipe(p).replace(train_size=e.train_size, epochs=e.epochs, evals_per_epoch=e.evals_per_epoch,
                                      schedule=e.schedule)


def _early_stopping(p) -> Declaration:
    e = p.early_stopping
    base = early_stopping_recipe(p)
    stopped = base.replace(early_stopping_patience=e.patience, select="best")
    # one run a seed, trained to the end and evaluated often; the notebook replays every rule from its stored
    # evaluations (bank.replay_selection, the lesson's rules), no run of their own
    arms = (Arm("watched runs", base, e.seeds, cell="runs"),)
    # "frequent evaluation with best-checkpoint selection is the largest single gain": a paired difference (best against
    # the final weights, per seed); "early stopping does at least as well as training to the end": an equivalence,
    # its margin stated here, before any run. Both are replays of the same runs (a = b).
    comparisons = (Comparison("watched runs", "watched runs", what="best validation checkpoint against the final weights"),
                   Comparison("watched runs", "watched runs", "equivalence", margin=0.02,
                              what=f"early stopping (patience {e.patience}) against the final weights"))
    # the canaries share seed 0: a live early-stopped run against the replay of the same run trained to the end
    canaries = tuple(canary(r.replace(seed=0), CANARY_MAX_STEPS) for r in (stopped, base))
    # other work (the lesson's toy runs, the RNG check, HF's callback): 20 s
    return Declaration("10_early_stopping", arms, comparisons=comparisons, banked=True, canaries=canaries,
                       other_work_s=_other(p, 20, ci=10))


def combined_recipes(p) -> dict[str, Recipe]:
    """11's cumulative rows by arm (seed 0), each adding one technique to the row above, at 07's length: the baseline
    without warmup (at its chosen lr, ``combined.chosen_no_warmup_lr``), + warmup (07's "plain": the baseline at 12's
    validated lr, in the cpu profile the bank's stored baseline), + LLRD (07's chosen peak lr and decay, its stored
    runs), + re-init, + SWA (each group's lr held from its start: ``swa_lr=None``; validated
    ``combined.evals_per_epoch`` times an epoch for the frequent-evaluation replay). The table's last row, + frequent
    evaluation, replays the SWA runs' stored evaluations: no run of its own."""
    c = p.combined
    llrd = llrd_recipes(p)
    plain, with_llrd = llrd["plain"], llrd[f"LLRD ({p.llrd.chosen[1]:g})"]
    reinit = with_llrd.replace(reinit_layers=c.reinit_layers)
    return {"baseline, no warmup": plain.replace(warmup_ratio=0.0, lr=c.chosen_no_warmup_lr,
                                                 evals_per_epoch=p.llrd.evals_per_epoch),
            "+ warmup": plain, "+ LLRD": with_llrd, "+ re-init": reinit,
            "+ SWA": reinit.replace(swa_start=c.swa_start, evals_per_epoch=c.evals_per_epoch)}


def _combined(p) -> Declaration:
    c = p.combined
    recipes = combined_recipes(p)
    labels = list(recipes)
    no_warmup = recipes[labels[0]]
    # 1. the baseline without warmup at its own lr, on validation (one selection seed, never reused); the other rows
    # take the lrs validated where their technique was measured (12: the baseline; 07: LLRD) and add to them
    arms = [Arm(f"{labels[0]}, lr {lr:g} (sweep)", no_warmup.replace(lr=lr), (c.selection_seed,), cell="lr sweep")
            for lr in c.no_warmup_lrs]
    # 2. every row over the same seeds
    arms += [Arm(label, recipe, c.seeds, cell="cumulative table") for label, recipe in recipes.items()]
    # each increment (the article's table, row by row: paired over seeds), and the rows' sum against the article's
    # baseline; + frequent evaluation's increment is a replay of + SWA's runs, compared in the notebook
    comparisons = [Comparison(a, b) for b, a in zip(labels, labels[1:])] + [Comparison(labels[-1], labels[0])]
    canaries = _canaries(recipes["+ SWA"], no_warmup)
    # 3. the model section 5 saves, reloads and serves: the first canary's recipe trained live with the label names in
    # its config (code of the notebook's own, so never banked)
    arms.append(Arm("model to save", canaries[0], (canaries[0].seed,), custom="prepare_model: label names in the config",
                    cell="save and reload"))
    # other work (the lesson, the article's two bugs replayed, save / reload / pipeline): 60 s
    return Declaration("11_putting_it_together", tuple(arms), comparisons=tuple(comparisons), banked=True,
                       canaries=canaries, other_work_s=_other(p, 60, ci=30))


def lora_recipes(p) -> dict[str, Recipe]:
    """12's recipes by arm, before the lr: full fine-tuning (the baseline's recipe at the LoRA group's length, so
    at the baseline lr it is the bank's stored baseline), LoRA at each rank, and the frozen backbone with a head
    (LoRA, head and sweep runs evaluate ``evals_per_epoch`` times an epoch: evaluation never changes training)."""
    l = p.lora
    full = baseline_recipe(p).replace(train_size=l.train_size, epochs=l.epochs)
    lighter = full.replace(evals_per_epoch=l.evals_per_epoch)
    recipes = {"full fine-tuning": full}
    recipes |= {f"LoRA r={r}": lighter.replace(lora_rank=r) for r in l.ranks}
    recipes["frozen backbone + head"] = lighter.replace(freeze_layers=l.layers)
    return recipes


def _lora(p) -> Declaration:
    l = p.lora
    recipes = lora_recipes(p)
    full, lora, head = recipes["full fine-tuning"], recipes[f"LoRA r={l.ranks[0]}"], recipes["frozen backbone + head"]
    sweep_of = {"full fine-tuning": (full.replace(evals_per_epoch=l.evals_per_epoch), l.full_lrs),
                f"LoRA r={l.ranks[0]}": (lora, l.lora_lrs), "frozen backbone + head": (head, l.head_lrs)}
    # 1. each arm's lr on validation, one selection seed (never reused)
    arms = [Arm(f"{name}, lr {lr:g} (sweep)", recipe.replace(lr=lr), (l.selection_seed,), cell="lr sweep")
            for name, (recipe, lrs) in sweep_of.items() for lr in lrs]
    # 2. every arm at its chosen lr over fresh seeds; LoRA also at full fine-tuning's lr (does it need a larger one?)
    full_lr, lora_lr, head_lr = l.chosen
    arms.append(Arm("full fine-tuning", full.replace(lr=full_lr), l.seeds, cell="comparison"))
    arms += [Arm(f"LoRA r={r}", recipes[f"LoRA r={r}"].replace(lr=lora_lr), l.seeds, cell="comparison") for r in l.ranks]
    arms.append(Arm(f"LoRA r={l.ranks[0]} at full fine-tuning's lr", lora.replace(lr=full_lr), l.seeds, cell="comparison"))
    arms.append(Arm("frozen backbone + head", head.replace(lr=head_lr), l.seeds, cell="comparison"))
    lora_label = f"LoRA r={l.ranks[0]}"
    # "LoRA matches full fine-tuning" (Hu et al. 2021) and "the rank matters little": equivalence claims, their margin
    # stated here, before any run
    comparisons = [Comparison(lora_label, "full fine-tuning"),
                   Comparison(lora_label, "full fine-tuning", "equivalence", margin=0.02),
                   Comparison(f"LoRA r={l.ranks[0]} at full fine-tuning's lr", lora_label),
                   Comparison("frozen backbone + head", "full fine-tuning")]
    comparisons += [Comparison(f"LoRA r={r}", lora_label, "equivalence", margin=0.02) for r in l.ranks[1:]]
    # other work (the lesson, parameter counts, memory and step-time measurements, gradient checkpointing): a guess
    return Declaration("12_lora", tuple(arms), comparisons=tuple(comparisons), banked=True,
                       canaries=_canaries(lora.replace(lr=lora_lr), head.replace(lr=head_lr)),
                       other_work_s=_other(p, 120, ci=40))


def data_parallel_recipe(p) -> Recipe:
    """13's recipe (seed: the profile's first): the baseline at the data_parallel group's length, one evaluation at the
    end, fp32 (the ranks are CPU processes); with ``cpu_baseline``, the cpu profile's baseline (MiniLM)."""
    from .profiles import PROFILES

    d = p.data_parallel
    return baseline_recipe(PROFILES["cpu"] if d.cpu_baseline else p).replace(
        train_size=d.train_size, epochs=d.epochs, evals_per_epoch=1, precision=None)


def _data_parallel(p) -> Declaration:
    d = p.data_parallel
    base, off = data_parallel_recipe(p), "without_dropout (prepare_model)"
    ranks = f"Accelerator, {d.processes} processes (ftcourse.course.ddp_lesson, torchrun)"
    arms = (Arm("1 process, dropout off", base, d.seeds[:1], custom=off, cell="one process"),
            Arm("1 process", base, d.seeds, cell="one process"),
            Arm(f"{d.processes} processes, dropout off", base, d.seeds[:1], custom=f"{off}; {ranks}", cell="processes"),
            Arm(f"{d.processes} processes", base, d.seeds, custom=ranks, cell="processes"))
    # "N processes at the same global batch train as one": an equivalence claim, its margin stated here, before any run.
    # Other work (the lesson's, traps' and FSDP's launches, the fine-tuning launch's start, a model load): a guess. The
    # gpu profile's runs are CPU runs too (Colab's CPUs): the T4 throughput does not apply to them.
    return Declaration("13_multi_gpu", arms, comparisons=(Comparison(arms[3].label, "1 process"),
                                                         Comparison(arms[3].label, "1 process", "equivalence", margin=0.02)),
                       canaries=_canaries(base, base), other_work_s=_other(p, 90, ci=50),
                       note="CPU processes in every profile (gpu: Colab's CPUs, not the T4)" if d.cpu_baseline else "")


DECLARATIONS: dict = {  # notebook number ("07") -> function(profile) -> Declaration
    "01": _baseline, "02": _accumulation, "03": _freezing, "04": _mixed_precision, "05": _optimizers,
    "06": _schedules, "07": _llrd, "08": _reinit, "09": _swa, "10": _early_stopping, "11": _combined,
    "12": _lora, "13": _data_parallel,
}


def declaration(notebook: str, profile, **options) -> Declaration | None:
    """The declaration of ``notebook`` ("07" or "07_llrd") in ``profile``; None if it has none. ``options`` go to
    the notebook's function (04: ``fast``, whether low precision trains at speed, once the notebook measured it)."""
    make = DECLARATIONS.get(notebook[:2])
    return None if make is None else make(profile, **options)


def run_counts(declared: Declaration) -> Counter:
    """Runs by (training examples, epochs, evaluations an epoch): a summary for tables."""
    return Counter((r.recipe.train_size, r.recipe.epochs, r.recipe.evals_per_epoch) for r in declared.runs())
