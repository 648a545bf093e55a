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
``profile.early_stopping`` (10), ``profile.combined`` (11, the combined recipe's table), ``profile.lora`` (12)
and ``profile.data_parallel`` (13).

``profile.replace(epochs=1)`` changes a shared field; ``profile.replace(llrd={"decays": (0.9,)})``
or ``profile.replace(**{"llrd.decays": (0.9,)})`` one field of a group.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .pretrained import MINILM_ID


@dataclass(frozen=True)
class Accumulation:
    """02: effective batch ``large_batch`` reached by accumulating micro-batches of the profile's batch size
    (k = large_batch / batch_size) against the profile's batch itself, at equal epochs (``train_size`` x ``epochs``),
    each at its own validated lr: the batch's is notebook 12's sweep of full fine-tuning (``lora.full_lrs``, the same
    runs), the large batch's is swept over ``large_lrs`` on ``selection_seed`` (a seed the comparison never reuses),
    ``chosen_large_lr`` being the sweep's choice (the notebook recomputes it and says whether it agrees). Then both
    over ``seeds`` (the batch's: the stored baseline where the sizes match); the large batch's runs validate
    ``evals_per_epoch`` times an epoch. Demonstrations: the float64 proof's window of ``proof_accumulation``
    micro-batches of ``proof_micro_batch`` sentences; ``sweep_steps`` optimizer steps per micro-batch size in the
    memory and time sweep."""
    large_batch: int = 32
    large_lrs: tuple[float, ...] = (2e-4,)
    chosen_large_lr: float = 2e-4
    selection_seed: int = 100
    seeds: tuple[int, ...] = (0, 1)
    train_size: int = 1000
    epochs: int = 1
    evals_per_epoch: int = 1
    proof_micro_batch: int = 2
    proof_accumulation: int = 4
    sweep_steps: int = 4


@dataclass(frozen=True)
class Freezing:
    """03: full fine-tuning against the embeddings and the bottom n blocks frozen, n in
    ``frozen_layers``, over ``seeds`` on ``train_size`` examples for ``epochs``; gradual unfreezing
    over ``gradual_seeds``; the linear probe (everything below the head frozen) trained on cached
    features over the lrs ``probe_lrs`` and the epoch counts ``probe_epochs`` (plus ``epochs``);
    per-block gradient norms over the first ``grad_norm_steps`` steps of full fine-tuning; the
    optimizer steps of one interleaved timing round (``timing_steps``)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 1
    train_size: int = 1600
    frozen_layers: tuple[int, ...] = (3,)
    gradual_seeds: tuple[int, ...] = (0, 1, 2)
    probe_lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    probe_epochs: tuple[int, ...] = (10,)
    grad_norm_steps: int = 40
    timing_steps: int = 3
    # the probe's lr x epochs grid on ``probe_selection_seeds`` (never reused), then ``probe_seeds`` at its choice (paired
    # with full fine-tuning's stored seeds); the per-block gradient norms over ``grad_norm_seeds``
    probe_selection_seeds: tuple[int, ...] = (100, 101, 102)
    probe_seeds: tuple[int, ...] = tuple(range(8))
    grad_norm_seeds: tuple[int, ...] = (0, 1)
    # the seed bank's design (issue 26): freezing the bottom ``frozen_layers`` blocks against full fine-tuning on the
    # converged baseline runs (06's linear arm: the same recipe, so the same stored runs) over ``compared_seeds``, an
    # equivalence claim within ``margin``; gradual unfreezing in ULMFiT's regime, ``gradual_train_size`` examples x
    # ``gradual_epochs`` epochs (one unit unfrozen an epoch: 6 blocks, then the embeddings), against full
    # fine-tuning of the same length, over ``compared_seeds``
    compared_seeds: tuple[int, ...] = tuple(range(8))
    margin: float = 0.02
    gradual_train_size: int = 320
    gradual_epochs: int = 7


@dataclass(frozen=True)
class MixedPrecision:
    """04: optimizer steps of the fp16 loss-scale trace; optimizer steps timed per precision (after
    one warm-up step: on a CPU that emulates bf16 each costs ~16 fp32 steps, so keep it small); the
    fp32-vs-low-precision accuracy comparison over ``seeds`` on ``train_size`` examples for
    ``epochs`` (run only where the low precision measured at least ``min_speed_ratio`` of fp32's
    speed); ``replay_steps`` steps of the article's AMP loop that never zeroes gradients."""
    trace_steps: int = 40
    timing_steps: int = 3
    train_size: int = 1600
    epochs: int = 1
    seeds: tuple[int, ...] = (0, 1, 2)
    min_speed_ratio: float = 0.5
    replay_steps: int = 6


@dataclass(frozen=True)
class Optimizers:
    """05. Main comparison (BERTAdam against bias-corrected Adam, Zhang et al. 2021's few-sample regime):
    ``few_sample_size`` examples for ``few_sample_epochs``, every lr of ``few_sample_lrs`` with the seeds
    ``few_sample_sweep_seeds``, then each optimizer's chosen lr with all of ``few_sample_seeds``.
    Seven-optimizer comparison: each lr chosen on validation from ``lr_grid`` ((name, lrs) pairs), one
    run per lr and seed of ``sweep_seeds`` on ``sweep_train_size`` examples, then ``seeds`` at the
    chosen lr on ``train_size`` examples; ``epochs`` and ``evals_per_epoch`` for both. With the same
    sizes and AdamW's grid equal to ``few_sample_lrs``, the comparison reuses the main runs of AdamW."""
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
    few_sample_sweep_seeds: tuple[int, ...] = (0, 1)
    few_sample_seeds: tuple[int, ...] = (0, 1, 2)
    # The seed bank's design (issue 26), scored on fixed stratified subsets of ``val_size`` validation and
    # ``test_size`` test sentences:
    # 1. BERTAdam against AdamW (Zhang et al. 2021) in the few-sample regime, ``bank_few_size`` examples x
    #    ``bank_few_epochs`` epochs with the baseline's warmup: a pilot over ``pilot_lrs`` (BERTAdam's grid reaches
    #    down: its early steps are 3-6.6x Adam's) on ``pilot_seeds`` (never reused) finds ``failure_lr``, where the
    #    failure rates are compared over ``failure_seeds`` (runs per arm sized by power from the pilot), and each
    #    optimizer's own lr on validation (``chosen``: AdamW's, BERTAdam's), compared over ``compared_seeds``;
    # 2. lr sensitivity: each of the seven optimizers at every lr of ``sensitivity_grid`` over ``sensitivity_seeds``,
    #    ``sensitivity_size`` examples x ``sensitivity_epochs`` epochs (past MiniLM's majority-class plateau).
    #    The pilot (built): AdamW failed 4/4 at 1e-5 (100 steps too few to leave the plateau) and 0/4 at 3e-5..3e-4;
    #    BERTAdam 0/4 at 1e-5..1e-4 and 4/4 at 3e-4. So ``failure_lr`` = 3e-4 (the largest gap where AdamW never
    #    failed). ``failure_seeds``: 24 an arm, what the bank's 120 minutes leave (45-60 s a run measured): at 5% they
    #    detect a rise to 39% with 80% power (0% -> 27%); Zhang et al.'s kind of difference (5% -> 30%) needs 39, the
    #    pilot's 0/4 -> 4/4 far fewer. BERTAdam's best pilot lr (1e-5) sat at the grid's lower edge: ``pilot_extra``
    #    extends its grid by one step down. ``chosen``: each one's best pilot lr on validation (AdamW's, BERTAdam's).
    #    ``gradient_seeds``: the live reruns of both arms at ``failure_lr`` with per-block gradient norms.
    bank_few_size: int = 320
    bank_few_epochs: int = 5
    pilot_lrs: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4)
    pilot_extra: tuple[tuple[str, float], ...] = (("BERTAdam", 3e-6),)
    pilot_seeds: tuple[int, ...] = tuple(range(100, 104))
    failure_lr: float = 3e-4
    failure_seeds: tuple[int, ...] = tuple(range(24))
    chosen: tuple[float, float] = (1e-4, 1e-5)
    compared_seeds: tuple[int, ...] = tuple(range(8))
    gradient_seeds: tuple[int, ...] = (0,)
    # 3 lrs each (the bank's budget), a factor ~3 apart; RMSprop's grid is Adagrad's / 10, where the curves
    # should coincide (for t << 1/(1 - alpha), RMSprop at lr g ~ Adagrad at g / sqrt(1 - alpha))
    sensitivity_grid: tuple[tuple[str, tuple[float, ...]], ...] = (
        ("SGD", (0.03, 0.1, 0.3)), ("RMSprop", (3e-5, 1e-4, 3e-4)), ("Adagrad", (3e-4, 1e-3, 3e-3)),
        ("Adam", (3e-5, 1e-4, 3e-4)), ("AdamW", (3e-5, 1e-4, 3e-4)), ("LARS", (0.3, 1.0, 3.0)),
        ("LAMB", (3e-4, 1e-3, 3e-3)))
    # 2 seeds an lr (3 declared first): the curves are the secondary arm, cut first to fit the failure arms in the budget
    sensitivity_seeds: tuple[int, ...] = (0, 1)
    sensitivity_size: int = 960
    sensitivity_epochs: int = 2
    val_size: int | None = 256
    test_size: int | None = 512


@dataclass(frozen=True)
class Schedules:
    """06: constant lr (no warmup), constant lr after warmup and linear warmup-decay (the course baseline), each at
    its own peak lr chosen on validation: ``sweep_lrs`` on ``selection_seed`` (a seed the comparison never reuses;
    linear's sweep is notebook 12's of full fine-tuning, ``lora.full_lrs``, the same runs where the sizes match), then
    over ``seeds`` at ``chosen`` (constant's and constant-with-warmup's lrs, the sweep's choice; linear runs at
    ``lora.chosen[0]``). ``compared``: the articles' other schedules, at linear's lr with its warmup (each differs from
    it by its decay only), over ``compared_seeds``; ``step_gamma``: the step schedule's factor (one drop, halfway
    through the decay); ``exponential_final``: the exponential schedule's last multiplier; ``restart_cycles``: cosine
    cycles of ``cosine_with_restarts``. ``train_size`` x ``epochs``: every run's length; ``evals_per_epoch``: validation
    passes of the constant-lr runs (``ReduceLROnPlateau`` is replayed on them; the others validate once an epoch).
    ``plateau_patience``, ``plateau_factor``: ``ReduceLROnPlateau``'s; ``plateau_runs``: real plateau runs (on the first
    seeds) checked against the replay. ``lr_finder_steps``: steps of the LR range test; ``warm_steps``: steps trained
    at the baseline's lr before the second range test (past the majority-class plateau)."""
    train_size: int = 3000
    epochs: int = 2
    evals_per_epoch: int = 2
    selection_seed: int = 100
    sweep_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    seeds: tuple[int, ...] = (0, 1, 2)
    chosen: tuple[float, float] = (1e-4, 1e-4)
    compared: tuple[str, ...] = ("cosine", "step", "exponential")
    compared_seeds: tuple[int, ...] = (0, 1, 2)
    step_gamma: float = 0.1
    exponential_final: float = 0.01
    restart_cycles: int = 2
    plateau_patience: int = 0
    plateau_factor: float = 0.3
    plateau_runs: int = 0
    lr_finder_steps: int = 100
    warm_steps: int = 60


@dataclass(frozen=True)
class LLRD:
    """07: LLRD against plain fine-tuning, each at its own peak lr chosen on validation (Zhang et al. 2021's
    comparison). The LLRD sweep crosses ``lrs`` with ``decays`` on ``selection_seed`` (a seed the comparison never
    reuses); plain fine-tuning's lr comes from notebook 12's sweep of full fine-tuning (``lora.full_lrs``, the same
    runs when the sizes match). Then plain (at ``lora.chosen[0]``) and LLRD (at ``chosen``: the peak lr and decay
    the bank's sweep chose; the notebook recomputes the choice and says whether it agrees) over ``seeds``;
    ``grouped``: also grouped LLRD (the article's three groups, 1 : 1.75 : 3.5, head 3.6 / 3.5) at LLRD's chosen lr.
    ``train_size`` x ``epochs``: every run's length (``evals_per_epoch`` validation passes of the LLRD runs)."""
    decays: tuple[float, ...] = (0.9,)
    lrs: tuple[float, ...] = (1e-4, 3e-4)
    selection_seed: int = 100
    seeds: tuple[int, ...] = (0, 1, 2)
    train_size: int = 3000
    epochs: int = 2
    evals_per_epoch: int = 1
    chosen: tuple[float, float] = (1e-4, 0.9)
    grouped: bool = False


@dataclass(frozen=True)
class Reinit:
    """08: the top ``layers`` blocks re-initialised with the pooler (0 = plain fine-tuning), in two regimes, every run
    scored on fixed stratified subsets of ``val_size`` validation and ``test_size`` test sentences (nothing is chosen
    on validation):

    1. **failures** (Mosbach et al. 2021; Zhang et al. 2021): ``failure_train_size`` examples x ``failure_epochs``
       epochs without warmup. A pilot over ``failure_lrs`` on ``pilot_seeds`` (seeds the comparison never reuses) finds
       an lr at which plain fine-tuning fails often (``failure_lr``: the pilot's choice; the notebook recomputes it);
       then each k over ``failure_seeds`` (runs per arm sized by power, ``stats.runs_for_failure_rates``);
    2. **training longer** (Zhang et al. 2021): ``train_size`` examples x ``epochs`` epochs at ``lr`` with the
       baseline's warmup, evaluated once an epoch (the learning curves), over ``seeds``."""
    layers: tuple[int, ...] = (0, 2)
    seeds: tuple[int, ...] = tuple(range(8))
    epochs: int = 10
    lr: float = 1e-4
    train_size: int = 320
    failure_train_size: int = 320
    failure_epochs: int = 3
    failure_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    failure_lr: float = 1e-3
    pilot_seeds: tuple[int, ...] = tuple(range(100, 104))
    failure_seeds: tuple[int, ...] = tuple(range(40))
    val_size: int | None = 256
    test_size: int | None = 512


@dataclass(frozen=True)
class SWA:
    """09: SWA against the normal schedule, where Izmailov et al. (2018) apply it: the normal schedule (linear warmup
    and decay, at 12's validated full fine-tuning lr ``lora.chosen[0]``) until ``start`` of the run, then a constant
    ``swa_lr`` and an equal average of the weights after every step. ``swa_lrs`` are swept on ``selection_seed``
    (a seed the comparison never reuses), each run scored by its average's validation accuracy; ``chosen_swa_lr``
    is the sweep's choice (the notebook recomputes it and says whether it agrees). Then SWA from ``start`` and from
    ``other_start`` (None: none) at ``chosen_swa_lr``, and the normal schedule, over ``seeds``. ``train_size`` x
    ``epochs``: every run's length, validated ``evals_per_epoch`` times an epoch. ``demo_train_size`` examples (one
    epoch): the plain-PyTorch-vs-callback check, whose LLRD groups decay by ``llrd_decay`` per layer."""
    train_size: int = 3000
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 2
    evals_per_epoch: int = 1
    start: float = 0.75
    other_start: float | None = 0.5
    selection_seed: int = 100
    swa_lrs: tuple[float, ...] = (1e-5, 3e-5, 1e-4)
    chosen_swa_lr: float = 3e-5
    demo_train_size: int = 480
    llrd_decay: float = 0.9


@dataclass(frozen=True)
class EarlyStopping:
    """10: a regime where validation peaks before the end of training (few examples, many epochs, a constant lr after
    warmup: ``schedule``, at the baseline's lr), evaluated ``evals_per_epoch`` times an epoch over ``seeds``. Every
    rule is replayed from those runs' stored evaluations (evaluating never changes training): best-checkpoint
    selection at each of ``frequencies`` evaluations an epoch (each divides ``evals_per_epoch``: the steps of a run
    evaluated k times an epoch are a subset of those of one evaluated ``evals_per_epoch`` times), and early stopping
    after ``patience`` evaluations without improvement."""
    train_size: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    evals_per_epoch: int = 8
    patience: int = 2
    schedule: str = "constant_with_warmup"
    frequencies: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self):
        bad = [k for k in self.frequencies if not (isinstance(k, int) and k >= 1 and self.evals_per_epoch % k == 0)]
        if bad:
            raise ValueError(f"early_stopping.frequencies must divide early_stopping.evals_per_epoch "
                             f"({self.evals_per_epoch}): {bad} do not")


@dataclass(frozen=True)
class Combined:
    """11: the article's cumulative table on runs that converge (07's length: in the cpu profile the baseline's 3,000
    examples x 2 epochs, 376 steps), one technique added a row, every row over ``seeds``:

    1. the baseline without warmup, at its own lr chosen on validation (``selection_seed``, never reused) from
       ``no_warmup_lrs``; ``chosen_no_warmup_lr``: the sweep's choice (the notebook recomputes it);
    2. + warmup: the baseline (12's validated lr; in the cpu profile the bank's stored baseline);
    3. + LLRD: 07's chosen peak lr and decay (07's stored runs);
    4. + re-initialisation of the top ``reinit_layers`` blocks and the pooler;
    5. + SWA from ``swa_start`` of the run, each group's lr at the start held (``swa_lr=None``: LLRD's ratios stay;
       09's validated swa_lr was ~1.07x the schedule's lr at 75%), validated ``evals_per_epoch`` times an epoch;
    6. + frequent evaluation: the best of those evaluations and the average on validation, replayed from row 5's stored
       evaluations (evaluating never changes training), no run of its own."""
    seeds: tuple[int, ...] = (0, 1, 2)
    reinit_layers: int = 2
    swa_start: float = 0.75
    evals_per_epoch: int = 4
    selection_seed: int = 100
    no_warmup_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    chosen_no_warmup_lr: float = 1e-4


@dataclass(frozen=True)
class LoRA:
    """12: LoRA (``ftcourse.lora``) against full fine-tuning and the frozen backbone with a head, each at its own
    lr chosen on validation (``selection_seed``, a seed the comparison never reuses) from its grid
    (``full_lrs``, ``lora_lrs``, ``head_lrs``), then compared over ``seeds`` at ``chosen`` (the lrs, full / LoRA /
    head, that the bank's sweep chose; the notebook recomputes the choice from the sweep and says whether it
    agrees). ``ranks``: the LoRA ranks compared, the first the one whose lr is swept (alpha fixed: the paper's
    alpha / r keeps the update's scale across ranks); ``train_size`` x ``epochs``: every run's length;
    ``evals_per_epoch``: of the LoRA, head and sweep runs (evaluation never changes training, so full
    fine-tuning's seeds keep the baseline's recipe and the bank's stored baseline runs);
    ``checkpoint_length``: the sequence length of the gradient-checkpointing measurement, ``timing_steps`` its
    steps."""
    train_size: int = 3000
    epochs: int = 2
    evals_per_epoch: int = 1
    selection_seed: int = 100
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    ranks: tuple[int, ...] = (16, 4)
    full_lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
    lora_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    head_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    chosen: tuple[float, float, float] = (1e-4, 1e-3, 3e-3)
    checkpoint_length: int = 256
    timing_steps: int = 3
    layers: int = 6  # the model's blocks: freeze_layers=layers leaves only the head (pooler + classifier) training


@dataclass(frozen=True)
class DataParallel:
    """13: the baseline recipe at ``train_size`` x ``epochs`` (one evaluation, at the end; fp32), on one process and
    on ``processes`` CPU processes (gloo) at the same global batch, over ``seeds`` with dropout on, and for the first
    seed also with dropout off. ``cpu_baseline``: take the recipe from the cpu profile's baseline (MiniLM), for a
    runtime whose one GPU cannot be split (Colab), where the ranks are CPU processes."""
    train_size: int = 1600
    epochs: int = 1
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    processes: int = 2
    cpu_baseline: bool = False


GROUPS = {"accumulation": Accumulation, "freezing": Freezing, "mixed_precision": MixedPrecision,
          "optimizers": Optimizers, "schedules": Schedules, "llrd": LLRD, "reinit": Reinit, "swa": SWA,
          "early_stopping": EarlyStopping, "combined": Combined, "lora": LoRA, "data_parallel": DataParallel}


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
    combined: Combined = field(default_factory=Combined)
    lora: LoRA = field(default_factory=LoRA)
    data_parallel: DataParallel = field(default_factory=DataParallel)

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
        accumulation=Accumulation(seeds=(0, 1), train_size=160, epochs=1,
                                  sweep_steps=2),
        freezing=Freezing(seeds=(0, 1), epochs=2, train_size=160, frozen_layers=(3,), gradual_seeds=(0, 1),
                          probe_lrs=(1e-4, 1e-2), probe_epochs=(10,), grad_norm_steps=20, timing_steps=2,
                          probe_selection_seeds=(100,), probe_seeds=(0, 1, 2), grad_norm_seeds=(0,)),
        mixed_precision=MixedPrecision(trace_steps=20, timing_steps=2, train_size=160, epochs=2, seeds=(0, 1),
                                       replay_steps=8),
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.1,)), ("RMSprop", (1e-4,)), ("Adagrad", (1e-3,)), ("Adam", (1e-4,)),
                     ("AdamW", (1e-4,)), ("LARS", (1.0,)), ("LAMB", (3e-3,))),
            sweep_train_size=64, sweep_seeds=(0,), train_size=64, seeds=(0,), epochs=1, evals_per_epoch=1,
            few_sample_size=64, few_sample_epochs=1, few_sample_lrs=(1e-4,), few_sample_sweep_seeds=(0, 1),
            few_sample_seeds=(0, 1)),
        # 06 in ci analyses the cpu bank: these sizes are its canaries', its plateau run's and its range tests'
        schedules=Schedules(train_size=96, seeds=(0, 1), epochs=1, evals_per_epoch=2, plateau_runs=1,
                            sweep_lrs=(1e-4,), compared_seeds=(0, 1), lr_finder_steps=20, warm_steps=6),
        # 07 in ci analyses the cpu bank: these sizes are its canaries'
        llrd=LLRD(decays=(0.8,), lrs=(1e-4,), seeds=(0, 1), train_size=160, epochs=1, chosen=(1e-4, 0.8)),
        # 08 in ci analyses the cpu bank: these sizes are its canaries'
        reinit=Reinit(seeds=(0, 1), epochs=2, train_size=160, failure_train_size=160, failure_epochs=1,
                      failure_lrs=(1e-3,), pilot_seeds=(100,), failure_seeds=(0, 1), val_size=128, test_size=128),
        swa=SWA(train_size=192, seeds=(0, 1), epochs=2, demo_train_size=160, swa_lrs=(3e-5,), other_start=None),
        # 10 in ci analyses the cpu bank: these sizes are its canaries'
        early_stopping=EarlyStopping(train_size=256, seeds=(0, 1), epochs=1, evals_per_epoch=4, patience=1,
                                     frequencies=(1, 2, 4)),
        # 11 in ci analyses the cpu bank: these sizes are its canaries'
        combined=Combined(seeds=(0, 1), reinit_layers=2, evals_per_epoch=2, no_warmup_lrs=(1e-4,)),
        # 12 in ci analyses the cpu bank: these sizes are its canaries' and the lesson's
        lora=LoRA(train_size=160, epochs=1, seeds=(0, 1), full_lrs=(1e-4,), lora_lrs=(3e-3,), head_lrs=(1e-3,),
                  chosen=(1e-4, 3e-3, 1e-3), checkpoint_length=128, timing_steps=2),
        data_parallel=DataParallel(train_size=96, seeds=(0, 1, 2)),  # 6 steps a run: the mechanics, not a measurement
    ),
    "cpu": Profile(
        name="cpu", model_id=MINILM_ID, max_length=64, train_size=3000,
        batch_size=16, eval_batch_size=128, epochs=2, evals_per_epoch=4, lr=1e-4,
        warmup_ratio=0.1, weight_decay=0.01, seeds=(0, 1, 2), amp=None,
        min_test_accuracy=0.82,
        # 1,700 examples, 1 epoch: 107 steps at batch 16, 27 at batch 64 (k = 4, the last window short); the
        # larger batch's grid is the smaller's times k (linear scaling; it holds the square-root rule's lr too).
        # 14 runs of ~33 s in the notebook (6 seeds at 2,000 examples ran 10.1 min).
        accumulation=Accumulation(large_batch=64, large_lrs=(1e-4, 2e-4, 4e-4, 8e-4), chosen_large_lr=2e-4,
                                  seeds=tuple(range(8)), train_size=3000, epochs=2, sweep_steps=3),
        # 140 steps a run (2,240 examples, 1 epoch): at 100 steps two of five full fine-tuning seeds were still
        # ~0.06 below the others, which made the paired interval +-0.04. Gradual unfreezing (not the main
        # comparison) runs 3 seeds to stay within the 10 minutes.
        # the probe's grids reach past the old choice (lr 1e-2 and 5 epochs, both at the edges of their grids); a first
        # run chose 1e-3 (inside) with 5 epochs (mean pooling) and 20 (the [CLS] probe), both at the epoch grid's edges
        # again: epochs now 2..40, at 4 lrs and 2 selection seeds (the same probe time)
        freezing=Freezing(seeds=(0, 1, 2, 3, 4), epochs=1, train_size=2240, frozen_layers=(3,),
                          gradual_seeds=(0, 1, 2), probe_lrs=(1e-4, 1e-3, 1e-2, 1e-1),
                          probe_epochs=(2, 5, 10, 20, 40), probe_selection_seeds=(100, 101), grad_norm_steps=40,
                          timing_steps=3),
        mixed_precision=MixedPrecision(trace_steps=40, timing_steps=4, train_size=1600, epochs=1,
                                       seeds=(0, 1, 2, 3, 4), replay_steps=8),
        # 60 steps a run (960 examples, 1 epoch): with 20-40 steps (320-640 examples) every optimizer but
        # LAMB stayed at the majority class, which compares nothing.
        # One regime for both experiments, so the comparison reuses the main runs of AdamW: 960 examples (fewer
        # than Zhang et al.'s few-thousand-example datasets), 1 epoch = 60 steps, past MiniLM's ~40-step plateau at
        # the chosen lrs. 12 main runs + 18 comparison runs (~25 s each) fill the 15 minutes; grids from a 40-step pilot.
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.1, 0.3)), ("RMSprop", (5e-5, 1e-4)), ("Adagrad", (1e-3, 3e-3)),
                     ("Adam", (1e-4, 3e-4)), ("AdamW", (1e-4, 3e-4)), ("LARS", (1.0, 3.0)), ("LAMB", (1e-3, 3e-3))),
            sweep_train_size=960, sweep_seeds=(0,), train_size=960, seeds=(0, 1), epochs=1, evals_per_epoch=1,
            few_sample_size=960, few_sample_epochs=1, few_sample_lrs=(1e-4, 3e-4), few_sample_sweep_seeds=(0, 1),
            few_sample_seeds=(0, 1, 2, 3)),
        # 06: the baseline's length (3,000 examples x 2 epochs = 376 steps), so linear at the baseline lr is the bank's
        # stored baseline and its lr sweep is notebook 12's; constant and constant-with-warmup swept on seed 100, then 8
        # seeds each (mde <= 0.02 at a paired sd ~0.014); the articles' cosine, step and exponential at linear's lr, 3
        # seeds (secondary: cut first). The sweep chose 3e-5, its lowest lr, for both constant schedules: the grid was
        # extended down by one step (1e-5)
        # chosen: the extended sweep's choice on validation (3e-5 for both), now inside the grid
        schedules=Schedules(seeds=tuple(range(8)), sweep_lrs=(1e-5, 3e-5, 1e-4, 3e-4), chosen=(3e-5, 3e-5),
                            lr_finder_steps=50),
        # 07: the baseline's length (3,000 examples x 2 epochs = 376 steps), so plain fine-tuning at the baseline lr is
        # the bank's stored baseline and its lr sweep is notebook 12's; LLRD's peak lr x decay swept on seed 100, then
        # 8 seeds a configuration for the +-0.02 equivalence margin (a paired sd ~0.014 needs 7-8 for 80% power).
        # chosen: the sweep's choice on validation (peak lr 2e-4, decay 0.9), inside both grids
        llrd=LLRD(decays=(0.95, 0.9, 0.75), lrs=(1e-4, 2e-4, 4e-4), seeds=tuple(range(8)), chosen=(2e-4, 0.9),
                  grouped=True),
        # 08: the failure regime (320 examples x 3 epochs = 60 steps, no warmup, tested on 512 sentences): a pilot of 4
        # seeds at each of 3 lrs, plain and k = 2 (24 runs), then each k over failure_seeds at the pilot's lr; training
        # longer: 320 examples x 10 epochs = 200 steps, 8 seeds an arm, evaluated once an epoch. The pilot's lr and the runs
        # an arm are stand-ins until the pilot is built.
        reinit=Reinit(),
        swa=SWA(seeds=tuple(range(8)), swa_lrs=(1e-5, 3e-5, 1e-4, 3e-4), chosen_swa_lr=3e-5),
        # 10: 1,000 examples x 3 epochs at a constant 1e-4 after warmup, 189 steps, evaluated 8 times an epoch (24
        # evaluations: 1, 2, 4 and 8 an epoch are replayed from them). Pilot (seed 100, 4 an epoch, a 512-sentence test
        # subset): the run leaves the plateau at step 35 (189 steps: 5.4x), validation peaks at step 63 (0.798), falls to
        # 0.704 at step 126 and ends at 0.798: a regime where selection can matter. 8 seeds: a paired sd ~0.02 (the old
        # 4-seed runs) resolves ~0.017. 8 runs + 2 canaries: 32 min (`bank status`; each evaluation scores 2,693
        # sentences; 11's build ran ~1.5x its estimate, so up to ~50).
        early_stopping=EarlyStopping(train_size=1000, seeds=tuple(range(8)), epochs=3, evals_per_epoch=8, patience=2),
        # 11: 07's length (the baseline's 376 steps), so rows 2 and 3 are the stored baseline and 07's stored LLRD runs;
        # new: the no-warmup sweep (3 runs on seed 100), then no warmup, + re-init and + SWA over the same 8 seeds (24
        # runs) and 2 canaries: 29 runs, 43 min on the 2-core reference machine (`bank status`). 8 seeds: a paired sd
        # ~0.01 gives an mde ~0.012. Re-init: 2 of MiniLM's 6 blocks (the article: 5 of roberta-base's 12).
        # chosen_no_warmup_lr: the sweep's choice on validation (1e-4, validation 0.815 against 0.806 and 0.772), inside the grid
        combined=Combined(seeds=tuple(range(8)), reinit_layers=2, no_warmup_lrs=(3e-5, 1e-4, 3e-4), chosen_no_warmup_lr=1e-4),
        # 12: the baseline's length (3,000 examples x 2 epochs = 376 steps, well past MiniLM's plateau), so full
        # fine-tuning at the baseline lr is the bank's stored baseline; 5 fresh seeds for a +-0.02 equivalence margin
        # (01's seed std ~0.01; the notebook prints what the margin needs at the measured spread). The bank: 11 sweep
        # runs + 22 new comparison runs, 38 min.
        # grids extended where the sweep chose an edge (LoRA 3e-3 of 3e-4..3e-3, the head 1e-3 of 1e-3..1e-2); chosen: the
        # sweep's choice on validation (full 1e-4, LoRA 3e-3, the head 1e-3), each now inside its grid
        lora=LoRA(lora_lrs=(3e-4, 1e-3, 3e-3, 1e-2), head_lrs=(3e-4, 1e-3, 3e-3, 1e-2), chosen=(1e-4, 3e-3, 1e-3)),
        # 13: 1,600 examples x 1 epoch = 100 steps (past MiniLM's plateau); 4 seeds x (1 + 2 processes) + dropout off
        data_parallel=DataParallel(),
    ),
    # Sized so that every notebook's plan fits a 20-minute workshop slot of compute on a Colab T4 at the throughput
    # ftcourse.plan.T4_* assumes (300 training examples/s, 1,000 evaluation sentences/s, 6 s a run: derived there
    # from published T4 figures; tests/test_plan.py holds each notebook to 20 minutes at them). Run
    # `python -m ftcourse estimate --profile gpu` on the runtime to replace the assumption with a measurement.
    "gpu": Profile(
        name="gpu", model_id="roberta-base", max_length=128, train_size=8000,
        batch_size=32, eval_batch_size=128, epochs=2, evals_per_epoch=4, lr=2e-5,
        warmup_ratio=0.1, weight_decay=0.01, seeds=(0, 1, 2, 3, 4), amp="auto",
        min_test_accuracy=0.88,
        accumulation=Accumulation(large_batch=128, large_lrs=(4e-5, 8e-5, 1.6e-4), chosen_large_lr=8e-5,
                                  seeds=(0, 1, 2, 3, 4), train_size=8000, epochs=2, sweep_steps=8),
        freezing=Freezing(seeds=(0, 1, 2, 3, 4), epochs=2, train_size=6000, frozen_layers=(4, 8),
                          gradual_seeds=(0, 1, 2, 3, 4), probe_lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                          probe_epochs=(10,), grad_norm_steps=100, timing_steps=5),
        mixed_precision=MixedPrecision(trace_steps=60, timing_steps=20, train_size=8000, epochs=2,
                                       seeds=(0, 1, 2, 3, 4), replay_steps=8),
        optimizers=Optimizers(
            lr_grid=(("SGD", (0.01, 0.03, 0.1)), ("RMSprop", (3e-6, 1e-5, 3e-5)), ("Adagrad", (1e-4, 3e-4, 1e-3)),
                     ("Adam", (1e-5, 2e-5, 5e-5)), ("AdamW", (1e-5, 2e-5, 5e-5)), ("LARS", (0.3, 1.0, 3.0)),
                     ("LAMB", (3e-4, 1e-3, 3e-3))),
            sweep_train_size=1000, sweep_seeds=(0,), train_size=1000, seeds=(0, 1), epochs=3,
            evals_per_epoch=1, few_sample_size=1000, few_sample_epochs=3, few_sample_lrs=(1e-5, 2e-5, 5e-5),
            few_sample_sweep_seeds=(0, 1), few_sample_seeds=tuple(range(8))),
        # 06 analyses the cpu bank (no gpu bank yet); these sizes are its canaries', its plateau run's and range tests'
        schedules=Schedules(train_size=8000, seeds=(0, 1, 2, 3, 4), evals_per_epoch=4, plateau_runs=1,
                            sweep_lrs=(1e-5, 2e-5, 5e-5), chosen=(2e-5, 2e-5), lr_finder_steps=200, warm_steps=150),
        # 07 analyses the cpu bank (no gpu bank yet); these sizes are its canaries'
        llrd=LLRD(decays=(0.95, 0.9, 0.8), lrs=(2e-5, 4e-5), seeds=tuple(range(5)), train_size=8000, chosen=(4e-5, 0.9)),
        # 08 analyses the cpu bank (no gpu bank yet); these sizes are its canaries' (roberta-base, at its own lrs)
        reinit=Reinit(lr=2e-5, failure_lrs=(1e-4,), failure_lr=1e-4),
        swa=SWA(train_size=8000, seeds=(0, 1, 2, 3, 4), epochs=2, demo_train_size=640, swa_lrs=(2e-6, 6e-6, 2e-5),
                chosen_swa_lr=6e-6),
        # 10 analyses the cpu bank (no gpu bank yet); these sizes are its canaries'
        early_stopping=EarlyStopping(train_size=1000, seeds=tuple(range(8)), epochs=3, evals_per_epoch=8, patience=2),
        # 11 analyses the cpu bank (no gpu bank yet); these are its canaries' settings (roberta-base: 5 of 12 blocks re-initialised)
        combined=Combined(seeds=(0, 1, 2, 3, 4), reinit_layers=5, no_warmup_lrs=(1e-5, 2e-5, 5e-5), chosen_no_warmup_lr=2e-5),
        # 12 analyses the cpu bank (no gpu bank yet); these sizes are its canaries' and the lesson's
        lora=LoRA(train_size=8000, full_lrs=(1e-5, 2e-5, 5e-5), lora_lrs=(1e-4, 3e-4, 1e-3), chosen=(2e-5, 3e-4, 3e-3),
                  checkpoint_length=512, timing_steps=5, layers=12),
        # 13: Colab's one GPU cannot be split; its ranks are CPU processes, where roberta-base is too slow: MiniLM
        data_parallel=DataParallel(cpu_baseline=True),
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
