"""What each notebook runs, counted from the profile: the one place that declares a notebook's work.

Course harness (not a technique module).

``plan(notebook, profile)`` lists a notebook's fine-tuning runs (how many, of how many training
examples, epochs and validation passes) and its other work (``extra_s``: seconds of the cells that
are not fine-tuning runs, as measured on the reference machine, scaled by the measured speed).
Three things read it:

* ``python -m ftcourse estimate`` turns it into predicted minutes per notebook on this device;
* a notebook's long experiment cells print what they are about to run (``announce``);
* ``notebook_footer(notebook)`` compares the runs the notebook really made (``ftcourse.experiment.RUN_LOG``)
  with the plan, and fails if they differ; tests/test_plan.py compares every committed notebook's footer with
  its plan, so the plan cannot drift from the notebooks.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
CI_TOTAL_BUDGET_MIN = 20


def budget_minutes(notebook: str, profile_name: str) -> float:
    """The budget of ``notebook`` ("07" or "07_llrd") in the profile named ``profile_name``."""
    if profile_name not in BUDGET_MIN:
        raise ValueError(f"profile_name must be one of {sorted(BUDGET_MIN)}, got {profile_name!r}")
    budgets = BUDGET_MIN[profile_name]
    return budgets.get(notebook[:2], budgets["*"])


@dataclass(frozen=True)
class Runs:
    """``count`` fine-tuning runs alike: ``train_examples`` × ``epochs``, ``evals_per_epoch`` validation
    passes an epoch (plus the final test pass and, when weights change after the loop, a validation pass)."""
    label: str
    count: int
    train_examples: int
    epochs: int
    evals_per_epoch: int
    extra_val_pass: bool = False
    val_examples: int | None = None  # validation sentences a pass, when not the profile's (08's learning curves)

    def key(self) -> tuple:
        return (self.train_examples, self.epochs, self.evals_per_epoch)


@dataclass(frozen=True)
class Plan:
    notebook: str
    runs: tuple[Runs, ...]
    extra_s: float = 0.0  # other cells, seconds on the reference machine
    note: str = ""
    labels: tuple[str, ...] = ()  # every group the notebook declares, with those this profile switches off

    def __post_init__(self):
        # a profile can switch a group off (no plateau runs, no control): it stays a known label, not a run
        object.__setattr__(self, "labels", tuple(dict.fromkeys((*self.labels, *(r.label for r in self.runs)))))
        object.__setattr__(self, "runs", tuple(r for r in self.runs if r.count > 0))

    @property
    def n_runs(self) -> int:
        return sum(r.count for r in self.runs)

    def group(self, *labels: str) -> tuple[Runs, ...]:
        """The run groups with these labels (those a profile switches off are absent: an empty tuple)."""
        unknown = [label for label in labels if label not in self.labels]
        if unknown:
            raise KeyError(f"{self.notebook} declares no run group {unknown}; its groups: {list(self.labels)}")
        return tuple(r for r in self.runs if r.label in labels)

    def counts(self) -> Counter:
        """Runs by (train_examples, epochs, evals_per_epoch): what the footer checks."""
        c = Counter()
        for r in self.runs:
            c[r.key()] += r.count
        return c


def run_seconds(runs: Runs, val_examples: int, test_examples: int, train_per_s: float, eval_per_s: float,
                overhead_s: float) -> float:
    """Seconds for one run of ``runs`` at the given throughputs."""
    passes = runs.epochs * runs.evals_per_epoch + (1 if runs.extra_val_pass else 0)
    val_examples = runs.val_examples or val_examples
    return (runs.train_examples * runs.epochs / train_per_s + (passes * val_examples + test_examples) / eval_per_s
            + overhead_s)


def eval_sizes(profile) -> tuple[int, int]:
    return profile.val_size or 872, profile.test_size or 1821


def seconds(plan: Plan, profile, train_per_s: float = REFERENCE_TRAIN_PER_S, eval_per_s: float = REFERENCE_EVAL_PER_S,
            overhead_s: float = REFERENCE_RUN_OVERHEAD_S) -> float:
    """Predicted wall time of a notebook at these throughputs (extra work scaled by the training speed)."""
    val_n, test_n = eval_sizes(profile)
    total = sum(r.count * run_seconds(r, val_n, test_n, train_per_s, eval_per_s, overhead_s) for r in plan.runs)
    return total + plan.extra_s * REFERENCE_TRAIN_PER_S / train_per_s + NOTEBOOK_STARTUP_S


def announce(runs, profile, train_per_s: float = REFERENCE_TRAIN_PER_S, eval_per_s: float = REFERENCE_EVAL_PER_S) -> None:
    """The line a long experiment cell prints first: what it runs (``runs``: a :class:`Runs` or several, e.g.
    ``plan("06", profile).group("schedules", "constant lr")``) and about how long that takes on the 2-core
    reference machine. The figure comes from the plan, so a cell cannot announce other work than it makes
    (tests/test_plan.py checks each committed notebook's footer against its plan). It returns nothing, so that a cell ending with it does not
    show the line twice."""
    groups = (runs,) if isinstance(runs, Runs) else tuple(runs)
    val_n, test_n = eval_sizes(profile)
    count = sum(r.count for r in groups)
    s = sum(r.count * run_seconds(r, val_n, test_n, train_per_s, eval_per_s, REFERENCE_RUN_OVERHEAD_S) for r in groups)
    if count == 0:
        print("this cell runs no new fine-tuning run (the plan reuses earlier runs, or the profile switches these off)")
        return
    sizes = ", ".join(dict.fromkeys(f"{r.train_examples} examples x {r.epochs} epoch{'s' * (r.epochs != 1)}" for r in groups))
    text = (f"this cell runs {count} fine-tuning run{'s' * (count != 1)}" + (f" ({sizes})" if sizes else "")
            + f", about {max(1, round(s / 60))} min on the 2-core reference machine"
            + " (`python -m ftcourse estimate` predicts this machine)")
    print(text)


# ---------------------------------------------------------------------------------------------
# The plans, one function a notebook: its fine_tune calls, counted from the profile as the notebook's code
# makes them. Keys are what fine_tune logs: len(train split) (= the train_size passed), the epochs and the
# evals_per_epoch passed (the profile's when a notebook passes none: only 01). extra_s: elapsed minus the
# runs' minutes of the notebook's cpu footer where one exists, else a guess; the ci profile has its own (_extra).
# ---------------------------------------------------------------------------------------------


def _extra(p, cpu: float, ci: float) -> float:
    """A notebook's other work in seconds on the reference machine: ``cpu`` measured in the cpu profile (elapsed minus
    the runs of its footer), ``ci`` in the ci profile (its nbval time minus the planned runs, CI run of 2026-12-01:
    a negative remainder, where the per-run overhead of tiny runs is overstated, counts 0). The gpu profile has no
    measurement: it takes the cpu figure (scaled by the measured training speed, like every extra)."""
    return ci if p.name == "ci" else cpu


def _runs(*runs: Runs) -> tuple[Runs, ...]:
    """The notebook's groups (Plan keeps those with runs and remembers every label)."""
    return runs


def fast_low_precision() -> bool:
    """Whether 04 is expected to run its fp32-vs-low-precision comparison here. The notebook decides on a
    measurement (low precision at >= ``mixed_precision.min_speed_ratio`` of fp32's speed); a plan is made
    before it, so this stands in for it: a CUDA GPU, or a CPU with native bf16 (AVX512-BF16, AMX: the
    reference machine measured above the ratio). A CPU without them emulates bf16 at ~0.06x fp32 (measured on
    an AVX2 machine), and 04 then trains one fp32 model only; MPS and machines without /proc/cpuinfo are
    planned that way too (unmeasured). Where the guess and the measurement disagree, the footer's check fails."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _baseline(p) -> Plan:
    # no sizes passed: the profile's train_size, epochs and evals_per_epoch. Other work (data statistics, one model
    # load, the no-mask test pass of every seed's model): 404 s - 5.7 min of the cpu footer of 2026-12-01
    return Plan("01_baseline", _runs(Runs("baseline", p.n_seeds, p.train_size, p.epochs, p.evals_per_epoch)), extra_s=_extra(p, 62, ci=10))


def _accumulation(p) -> Plan:
    a = p.accumulation
    size = (a.train_size, a.epochs, a.evals_per_epoch)
    # every lr of every grid on sweep_seed; then each effective batch at its chosen lr on the other seeds
    # (the sweep_seed run is reused)
    other_seeds = [s for s in a.seeds if s != a.sweep_seed]
    # other work (the float64 proof, Trainer's 3 one-step runs, the micro-batch sweep, the batch-size finder): 490 s -
    # 7.4 min of the cpu footer of 2026-12-01
    return Plan("02_gradient_accumulation", _runs(
        Runs("lr sweep", sum(len(lrs) for _, lrs in a.lr_grids), *size),
        Runs("more seeds at the chosen lrs", len(a.lr_grids) * len(other_seeds), *size)), extra_s=_extra(p, 46, ci=30))


def _freezing(p) -> Plan:
    f = p.freezing
    size = (f.train_size, f.epochs, 1)
    configurations = len({0, *f.frozen_layers})  # full fine-tuning and each frozen depth (a dict by label)
    # the linear probes train on cached features, not through fine_tune. Other work (probes, gradient norms,
    # timing): 547 s - 7.9 min of the cpu footer of 2026-12-01
    return Plan("03_freezing", _runs(
        Runs("full fine-tuning and frozen blocks", configurations * len(f.seeds), *size),
        Runs("gradual unfreezing", len(f.gradual_seeds), *size, extra_val_pass=True)), extra_s=_extra(p, 73, ci=20))


def _mixed_precision(p, fast: bool | None = None) -> Plan:
    """``fast``: whether low precision trains at speed here (None: :func:`fast_low_precision` guesses)."""
    m = p.mixed_precision
    size = (m.train_size, m.epochs, 1)
    fast = fast_low_precision() if fast is None else fast
    # both precisions over the seeds where low precision is fast enough, else one fp32 run (section 8's model).
    # Other work: 378 s - 5.7 min of the cpu footer (reference machine, native bf16); emulated bf16 adds ~150 s
    # (the timed bf16 steps and the bf16 test pass at ~16x fp32's cost)
    if fast:
        return Plan("04_mixed_precision", _runs(Runs("fp32 and low precision", 2 * len(m.seeds), *size)),
                    extra_s=_extra(p, 36, ci=20))
    return Plan("04_mixed_precision", _runs(Runs("fp32 only (low precision too slow here)", min(1, len(m.seeds)), *size)),
                extra_s=_extra(p, 36 + 150, ci=20 + 40), note="low precision expected too slow to train here (fast_low_precision)")


def _optimizers(p) -> Plan:
    o = p.optimizers
    few, sweep, main = (o.few_sample_size, o.few_sample_epochs), (o.sweep_train_size, o.epochs), (o.train_size, o.epochs)
    grid = dict(o.lr_grid)
    # The notebook runs each (optimizer, lr, seed, examples, epochs) once and reuses it wherever it recurs. Which lr
    # a choice lands on does not change the count as long as section 5 chooses AdamW's lr as section 4 did (the
    # same runs choose it when the sizes match, AdamW's grid is few_sample_lrs and sweep_seeds lie within
    # few_sample_sweep_seeds: every profile), so any lr of a grid stands in for the chosen one here.
    few_lr = o.few_sample_lrs[0]
    chosen = {name: few_lr if name == "AdamW" and few_lr in lrs else lrs[0] for name, lrs in grid.items()}
    stages = {
        "BERTAdam vs AdamW, lr sweep and seeds": (
            [(name, lr, seed, *few) for name in ("AdamW", "BERTAdam") for lr in o.few_sample_lrs
             for seed in o.few_sample_sweep_seeds]
            + [(name, few_lr, seed, *few) for name in ("AdamW", "BERTAdam") for seed in o.few_sample_seeds]),
        "seven optimizers, lr sweep": [(name, lr, seed, *sweep) for name, lrs in grid.items() for lr in lrs
                                       for seed in o.sweep_seeds],
        "seven optimizers at their chosen lrs": [(name, chosen[name], seed, *main) for name in grid for seed in o.seeds],
    }
    made, runs = set(), []
    for label, keys in stages.items():
        new = set(keys) - made
        made |= new
        for (examples, epochs), count in Counter(key[3:] for key in new).items():
            runs.append(Runs(label, count, examples, epochs, o.evals_per_epoch))
    # other work: 803 s - 13.2 min of the cpu footer
    # labels: a stage whose runs are all reused (ci: every stage has the same sizes) is still a known group
    return Plan("05_optimizers_from_scratch", _runs(*runs), extra_s=_extra(p, 11, ci=0), labels=tuple(stages))


def _schedules(p) -> Plan:
    s = p.schedules
    names = ["linear", *s.compared]  # linear warmup-decay is the baseline
    constant = names.count("constant")  # constant lr validates evals_per_epoch times (ReduceLROnPlateau's replay)
    extra_lrs = [lr for lr in s.sweep_lrs if not math.isclose(lr, p.lr)]  # the profile's lr is reused from the runs
    once, often = (s.train_size, s.epochs, 1), (s.train_size, s.epochs, s.evals_per_epoch)
    # the LR range test is not a fine_tune run. Other work: 602 s - 9.6 min of the cpu footer
    return Plan("06_lr_schedules", _runs(
        Runs("schedules", (len(names) - constant) * len(s.seeds), *once),
        Runs("constant lr", constant * len(s.seeds), *often),
        Runs("lr sweep of linear and constant", 2 * len(extra_lrs), *once),
        Runs("ReduceLROnPlateau", len(s.seeds[:s.plateau_runs]), *often, extra_val_pass=True)), extra_s=_extra(p, 26, ci=0))


def _llrd(p) -> Plan:
    l = p.llrd
    size = (l.train_size, l.epochs, 1)
    configurations = 2 + l.grouped + l.article_lrs  # plain and LLRD at the chosen decay, then the optional ones
    # other work (model loads, lr tables): 527 s - 8.7 min of the cpu footer
    return Plan("07_llrd", _runs(
        Runs("decay selection", len(l.decays) * len(l.selection_seeds), *size),
        Runs("comparison", configurations * len(l.seeds), *size),
        Runs("same-mean-rate control", len(l.control_seeds), *size)), extra_s=_extra(p, 5, ci=0))


def _reinit(p) -> Plan:
    r = p.reinit
    # the runs validate on curve_val_size sentences (a profile.replace(val_size=...)); other work (model loads, the
    # noise split and head initialisers): 573 s - 9.4 min of the cpu footer of 2026-12-01
    return Plan("08_reinit", _runs(Runs("re-initialised top layers", len(r.layers) * len(r.seeds), r.train_size, r.epochs, 1,
                                        val_examples=r.curve_val_size)), extra_s=_extra(p, 9, ci=5))


def _swa(p) -> Plan:
    w = p.swa
    # per seed: the normal schedule (a callback averages its tail) and SWA. Other work (the plain-PyTorch demo
    # runs, scoring the averages): 444 s - 5.7 min of the cpu footer
    return Plan("09_swa", _runs(Runs("normal schedule and SWA", 2 * len(w.seeds), w.train_size, w.epochs, w.evals_per_epoch,
                                     extra_val_pass=True)), extra_s=_extra(p, 102, ci=30))


def _early_stopping(p) -> Plan:
    e = p.early_stopping
    size = (e.train_size, e.epochs, e.evals_per_epoch)
    # one full run a seed (the rules are replayed on it), then one real early-stopped run of the first seed that
    # stops (it logs the planned epochs; it trains fewer steps). Other work (testing each rule's checkpoint):
    # 375 s - 5.4 min of the cpu footer
    return Plan("10_early_stopping", _runs(
        Runs("watched runs", len(e.seeds), *size, extra_val_pass=True),
        Runs("real early stopping", min(1, len(e.seeds)), *size, extra_val_pass=True)), extra_s=_extra(p, 51, ci=5))


def _recipe(p) -> Plan:
    r = p.recipe
    seeds = len(r.seeds)
    once, often = (r.train_size, r.epochs, 1), (r.train_size, r.epochs, p.evals_per_epoch)
    # cumulative rows: baseline, + LLRD, + warmup, + re-init validate once an epoch (no callbacks), + SWA too (its
    # callbacks add a validation pass); + frequent eval (the full recipe) and its grouped-LLRD variant evaluate
    # evals_per_epoch times.
    # Other work: 781 s - 12.7 min of the cpu footer
    return Plan("11_putting_it_together", _runs(
        Runs("baseline, + LLRD, + warmup, + re-init", 4 * seeds, *once),
        Runs("+ SWA", seeds, *once, extra_val_pass=True),
        Runs("full recipe (and its grouped-LLRD variant where the profile has it)", (1 + r.grouped_llrd) * seeds, *often,
             extra_val_pass=True),
        Runs("run-length control (+ LLRD, + warmup)", 2 * seeds, r.train_size, r.control_epochs, 1)), extra_s=_extra(p, 19, ci=0))


PLANS: dict = {  # notebook number ("07") -> function(profile) -> Plan
    "01": _baseline, "02": _accumulation, "03": _freezing, "04": _mixed_precision, "05": _optimizers,
    "06": _schedules, "07": _llrd, "08": _reinit, "09": _swa, "10": _early_stopping, "11": _recipe,
}


def plan(notebook: str, profile, **options) -> Plan | None:
    """The plan of ``notebook`` ("07" or "07_llrd") in ``profile``; None if it has none yet. ``options`` go to the
    notebook's plan function (04: ``fast``, whether low precision trains at speed, once the notebook has measured it)."""
    make = PLANS.get(notebook[:2])
    return None if make is None else make(profile, **options)


def check_runs(notebook: str, profile, run_log: list[dict], **options) -> str:
    """Compare the runs a notebook made with its plan (``plan(notebook, profile, **options)``): a one-line report;
    AssertionError if they differ."""
    expected = plan(notebook, profile, **options)
    made = Counter((r["train_examples"], r["epochs"], r["evals_per_epoch"]) for r in run_log)
    if expected is None:
        return f"{len(run_log)} fine-tuning runs (no plan declared for {notebook})"
    if made != expected.counts():
        raise AssertionError(
            f"{notebook} ran {sum(made.values())} fine-tuning runs {dict(made)}, but ftcourse/plan.py plans "
            f"{expected.n_runs} {dict(expected.counts())} (keys: train examples, epochs, evaluations an epoch): "
            "update the plan with the notebook")
    return f"{len(run_log)} fine-tuning runs, as planned in ftcourse/plan.py"
