"""CUDA checks: every CUDA branch of ftcourse, on tiny random models, with nothing to download.

Run them on a GPU machine from the repo root with ``bash scripts/gpu_check.sh`` (it also prints a
table of outcomes and runs ``benchmarks/bench_gpu.py``), or directly with
``PYTHONPATH=. python -m pytest -m cuda tests/test_cuda.py -rA``. Without CUDA every test skips.

Only tiny randomly initialised BERT and RoBERTa classifiers built from a config (a few layers, no
weights, no hub) and synthetic batches (``conftest.synthetic_batches``): no data files and no
``datasets`` import. Each test names the CPU test whose expectations it repeats on the GPU:

* fp16 + ``GradScaler`` through ``train()``: a huge initial loss scale forces skipped steps; they are
  counted, leave the weights alone and do not advance the schedule (tests/test_amp.py); 20 in a row
  count as divergence (``History.diverged``);
* bf16 autocast where the GPU has it natively (else ``"bf16"`` falls back to fp16 with a message),
  and ``Precision("auto")`` per compute capability (recorded in the report at the end);
* fused ``torch.optim.AdamW`` against the unfused one; the from-scratch optimizers against
  ``torch.optim`` (LARS and LAMB against their own CPU result) (tests/test_optim.py);
* ``PeakMemory``; ``find_max_batch_size`` past a real out-of-memory error; exact restores by
  ``EarlyStopping`` and ``lr_range_test`` of a CUDA model; SWA's average
  (tests/test_early_stopping.py, test_lr_finder.py, test_swa.py, test_batch_size.py);
* ``evaluate(return_predictions=True)`` in dataset row order under a length-sorted sampler;
* determinism: same seed, ``use_deterministic_algorithms(True)``: identical losses (notebooks 09
  and 10 assert that), also at the gpu profile's sequence length; and where attention's backward
  could differ run to run, the max difference is reported.

Lines for the report (GPU, compute capability, what ``"auto"`` chose, determinism differences) are
printed at the end of the module's tests, without ``-s``, and saved as junit testsuite properties.

Private switch, off by default: ``FTCOURSE_CUDA_TESTS_ON_CPU=1`` runs these tests on the CPU (the
``device`` fixture returns cpu and CUDA-only assertions skip), to check the tests' own logic on a
machine without a GPU. It says nothing about CUDA.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
ON_CPU = os.environ.get("FTCOURSE_CUDA_TESTS_ON_CPU", "") == "1"
if HAS_CUDA and not ON_CPU:
    # cuBLAS reads this once, when CUDA initialises: before any test touches the GPU (pytest imports
    # this module at collection). ftcourse.train.use_deterministic_algorithms sets the same value.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (HAS_CUDA or ON_CPU), reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)"),
]

try:
    from conftest import synthetic_batches
except ImportError:  # imported as tests.test_cuda (python -c ...), not collected by pytest
    from tests.conftest import synthetic_batches

from ftcourse.amp import Precision
from ftcourse.early_stopping import EarlyStopping, EarlyStoppingCallback
from ftcourse.lr_finder import lr_range_test
from ftcourse.memory import PeakMemory
from ftcourse.swa import SWACallback
from ftcourse.train import History, evaluate, set_seed, train, use_deterministic_algorithms

FAMILIES = ("bert", "roberta")
HAS_DIVERGED = hasattr(History(), "diverged")
# A loss scale large enough that fp16 gradients overflow for the first several steps, small enough
# that the scaler (halving per skip) recovers well within train()'s 20 consecutive skips.
OVERFLOW_SCALE = 2.0**28
COURSE_MAX_LENGTH = 128  # the gpu profile's max_length (ftcourse/profiles.py)


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device("cpu") if ON_CPU else torch.device("cuda", torch.cuda.current_device())


def cuda_only(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA-only assertions (FTCOURSE_CUDA_TESTS_ON_CPU=1 runs the rest on the CPU)")


def native_bf16(device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # CPU autocast computes bf16
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


@pytest.fixture(scope="module")
def report(request, record_testsuite_property):
    """``report(key, value)``: a line for the summary printed after this module's tests."""
    lines = []

    def add(key: str, value) -> None:
        lines.append(f"{key}: {value}")
        record_testsuite_property(key, str(value))

    yield add
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or not lines:
        return
    # written past pytest's output capture, so the report shows without -s
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        terminal.write_line("")
        terminal.write_sep("-", "CUDA report (tests/test_cuda.py)")
        for line in lines:
            terminal.write_line(line)


@pytest.fixture
def deterministic():
    """``use_deterministic_algorithms(True)`` for one test; the previous settings come back after."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def tiny(family: str = "bert", *, layers: int = 3, hidden: int = 16, heads: int = 2, dropout: float = 0.0,
         num_labels: int = 2, max_positions: int = 64, init_range: float = 0.02):
    """A random sequence classifier from a config, as ``conftest.tiny_classifier`` (vocabulary 100)."""
    import transformers as tf

    config_cls, model_cls = {
        "bert": (tf.BertConfig, tf.BertForSequenceClassification),
        "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification),
    }[family]
    config = config_cls(vocab_size=100, max_position_embeddings=max_positions, num_labels=num_labels,
                        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, initializer_range=init_range)
    return model_cls(config)


def fp16(device: torch.device, init_scale: float) -> Precision:
    """fp16 autocast with a GradScaler starting at ``init_scale``."""
    precision = Precision("fp16", device, scaler=torch.amp.GradScaler(device.type, init_scale=init_scale),
                          verbose=False)
    if device.type == "cpu":
        # FTCOURSE_CUDA_TESTS_ON_CPU only: Precision runs CPU mixed precision in bf16, whose range
        # never overflows; CPU fp16 autocast overflows as CUDA's does.
        precision.dtype = torch.float16
    return precision


class StepSnapshots:
    """A copy of the parameters after every optimizer step (``on_step_end``)."""

    def __init__(self):
        self.params = []

    def on_step_end(self, state):
        self.params.append([p.detach().clone() for p in state.model.parameters()])


def first_difference(a: list[float], b: list[float]) -> str:
    if a == b:
        return f"identical ({len(a)} steps)"
    diffs = [abs(x - y) if math.isfinite(x) and math.isfinite(y) else math.inf for x, y in zip(a, b)]
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return (f"first differing step {None if first is None else first + 1} of {len(a)}, max |difference| "
            f"{max(diffs, default=0.0):.3e}" + ("" if len(a) == len(b) else f", lengths {len(a)} != {len(b)}"))


# ---------------------------------------------------------------------------------------------
# The device, and Precision("auto") per compute capability
# ---------------------------------------------------------------------------------------------
def test_report_device_and_versions(device, report):
    import transformers

    report("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
    report("transformers", transformers.__version__)
    report("attention implementation of the tiny models", tiny("bert").config._attn_implementation)
    report("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        report("GPU", f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
                      f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB")
    else:
        report("GPU", "none: FTCOURSE_CUDA_TESTS_ON_CPU=1, the tests ran on the CPU")
    x = torch.ones(3, device=device)
    assert (x + x).sum().item() == 6.0


def test_auto_precision_follows_compute_capability(device, report, record_property, capsys):
    """ftcourse/amp.py: "auto" is bf16 at compute capability >= 8.0, else fp16 with a GradScaler
    (tests/test_amp.py checks the CPU side: "auto" is fp32 there)."""
    cuda_only(device)
    major, minor = torch.cuda.get_device_capability(device)
    precision = Precision("auto", device)
    out = capsys.readouterr().out
    expected = "bf16" if (major, minor) >= (8, 0) else "fp16"
    chosen = (f"{precision.name}{' + GradScaler' if precision.scaler is not None else ''} on "
              f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}; "
              f"torch.cuda.is_bf16_supported() = {torch.cuda.is_bf16_supported()})")
    report("Precision('auto', 'cuda')", chosen)
    record_property("auto_precision", chosen)
    assert precision.name == expected, chosen
    assert (precision.scaler is not None) == (expected == "fp16")
    if precision.scaler is not None:
        assert isinstance(precision.scaler, torch.amp.GradScaler) and precision.loss_scale == 2.0**16
    assert "amp='auto' on" in out and f": {expected}" in out, out  # the choice is printed, never silent


def test_explicit_bf16_is_native_or_falls_back_to_fp16_with_a_message(device, capsys):
    """"bf16" on a GPU without native bf16 (a T4) becomes fp16 + GradScaler, with a printed message."""
    cuda_only(device)
    precision = Precision("bf16", device)
    out = capsys.readouterr().out
    if native_bf16(device):
        assert precision.name == "bf16" and precision.scaler is None and out == ""
    else:
        assert precision.name == "fp16" and isinstance(precision.scaler, torch.amp.GradScaler)
        assert "using fp16 instead of bf16" in out, out
    explicit = Precision("fp16", device)
    assert explicit.name == "fp16" and isinstance(explicit.scaler, torch.amp.GradScaler)
    assert capsys.readouterr().out == ""  # an honoured request prints nothing


# ---------------------------------------------------------------------------------------------
# fp16 with a GradScaler through train(): skipped steps
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True], ids=["adamw", "adamw_fused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fp16_skipped_steps_are_counted_and_do_not_advance_the_schedule(device, family, fused):
    """tests/test_amp.py::test_overflow_skips_the_step_in_the_loop, with real fp16 overflow on the GPU:
    a step the scaler skips leaves the weights exactly as they were, halves the scale, is counted
    in ``History.skipped_steps`` (rows with ``stepped == False``), and the next step uses the same lr.
    ``fused=True``: the scaler hands the skip to the fused kernel (``found_inf``) instead."""
    torch.manual_seed(0)
    model = tiny(family).to(device)
    initial = [p.detach().clone() for p in model.parameters()]
    base_lr = 1e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))  # a new lr every step
    precision = fp16(device, OVERFLOW_SCALE)
    if device.type == "cuda":
        assert precision.dtype == torch.float16 and precision.scaler is not None
    batches = synthetic_batches(16)
    with precision.autocast():
        assert model(**{k: v.to(device) for k, v in batches[0].items() if k != "labels"}).logits.dtype == torch.float16
    snaps = StepSnapshots()
    history = train(model, batches, optimizer, scheduler=scheduler, precision=precision, callbacks=[snaps],
                    progress=False)

    rows = history.steps
    stepped = [r["stepped"] for r in rows]
    n_skipped = stepped.count(False)
    # one row per window; callbacks see the steps taken only (a skipped window retries its step: ftcourse.train)
    assert len(rows) == len(batches), "the run stopped early"
    assert history.skipped_steps == n_skipped == precision.skipped_steps
    assert n_skipped >= 1, f"init_scale {OVERFLOW_SCALE} did not overflow fp16: no step was skipped"
    assert stepped[-1], f"the scaler never recovered: {stepped}"
    if HAS_DIVERGED:
        assert history.diverged is False  # skips are the scaler's calibration, not divergence
    assert all(math.isfinite(r["loss"]) for r in rows)  # the loss is fp32; only the gradients overflow

    # the scale halves at each skip and stays put otherwise (growth_interval 2000 is never reached)
    scale = OVERFLOW_SCALE
    for r in rows:
        scale = scale if r["stepped"] else scale / 2
        assert r["loss_scale"] == scale, (r, stepped)
    # the schedule advances on stepped rows only: row i uses base_lr / (1 + steps taken before it)
    taken = 0
    for i, r in enumerate(rows):
        assert r["lr_0"] == pytest.approx(base_lr / (1 + taken)), (i, stepped)
        if not r["stepped"] and i + 1 < len(rows):
            assert rows[i + 1]["lr_0"] == r["lr_0"]  # the lr of the next step is the skipped one's
        taken += r["stepped"]
    assert scheduler.last_epoch == taken == len(rows) - n_skipped
    # on_step_end fires once per step taken, and each taken step moves the parameters (a skipped one left them as
    # they were, so the snapshot after a taken step differs from the one before it)
    assert len(snaps.params) == taken
    for i in range(taken):
        before = initial if i == 0 else snaps.params[i - 1]
        assert not all(torch.equal(a, b) for a, b in zip(before, snaps.params[i])), i
    if fused:  # the fused kernel counts only the steps it took
        step = optimizer.state[next(model.parameters())]["step"]
        assert step.device == next(model.parameters()).device and float(step) == taken


@pytest.mark.xfail(not HAS_DIVERGED, reason="History.diverged (20 consecutive skips) is not implemented yet",
                   strict=False)
def test_fp16_twenty_consecutive_skips_count_as_divergence(device):
    """An fp16 run whose every step overflows: train() stops after MAX_CONSECUTIVE_SKIPS (20) skips in a
    row, says so, and leaves the weights untouched."""
    torch.manual_seed(0)
    model = tiny("bert").to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    precision = fp16(device, 2.0**60)  # 20 halvings leave 2^40: still far beyond fp16's range
    with pytest.warns(RuntimeWarning, match="diverged"):
        history = train(model, synthetic_batches(30), torch.optim.AdamW(model.parameters(), lr=1e-3),
                        precision=precision, progress=False)
    assert history.diverged is True and history.diverged_step == 1  # 20 windows retried step 1, none was taken
    assert len(history.steps) == 20 and history.skipped_steps == 20
    assert not any(r["stepped"] for r in history.steps)
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# bf16 (and fp16) autocast: the loss is finite and falls
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_mixed_precision_training_learns(device, mode):
    """tests/test_train.py::test_loss_falls_on_tiny_model under autocast: finite losses, the loss
    halves, fp32 master weights, and the autocast really computes in the mode's dtype."""
    if mode == "bf16" and not native_bf16(device):
        pytest.skip("no native bf16 on this GPU (compute capability < 8.0): "
                    "test_explicit_bf16_is_native_or_falls_back_to_fp16_with_a_message checks the fallback")
    batches = synthetic_batches(8, seed=1)
    set_seed(0)
    model = tiny("bert").to(device)
    precision = Precision(mode, device, verbose=False)
    if device.type == "cuda":
        assert precision.name == mode and (precision.scaler is not None) == (mode == "fp16")
    with precision.autocast():
        logits = model(**{k: v.to(device) for k, v in batches[0].items() if k != "labels"}).logits
    assert logits.dtype == precision.dtype
    before = evaluate(model, batches)
    history = train(model, batches, torch.optim.AdamW(model.parameters(), lr=3e-3), epochs=15,
                    precision=precision, progress=False)
    losses = [r["loss"] for r in history.steps]
    assert len(losses) == 120 and all(math.isfinite(x) for x in losses)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    after = evaluate(model, batches)
    assert after["loss"] < 0.5 * before["loss"], (before, after)
    assert after["accuracy"] > 0.9
    under_autocast = evaluate(model, batches, precision=precision)
    assert math.isfinite(under_autocast["loss"]) and under_autocast["accuracy"] > 0.9
    if precision.scaler is None:
        assert history.skipped_steps == 0 and "loss_scale" not in history.steps[0]
    else:  # 2^16 may overflow a step or two at the start; no more
        assert history.skipped_steps <= 5


# ---------------------------------------------------------------------------------------------
# Fused AdamW and the from-scratch optimizers on CUDA tensors
# ---------------------------------------------------------------------------------------------
def decay_groups(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_adamw_matches_unfused(device, amsgrad):
    """``torch.optim.AdamW(fused=True)`` (what ftcourse uses on CUDA) against ``foreach=False``: the
    same parameters at float32 tolerances after every one of 6 steps with identical gradients."""
    torch.manual_seed(0)
    plain_model = tiny("bert").to(device)
    fused_model = copy.deepcopy(plain_model)
    initial = [p.detach().clone() for p in plain_model.parameters()]
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=amsgrad)
    plain = torch.optim.AdamW(decay_groups(plain_model), foreach=False, **kw)
    fused = torch.optim.AdamW(decay_groups(fused_model), fused=True, **kw)
    gen = torch.Generator().manual_seed(0)
    names = [n for n, _ in plain_model.named_parameters()]
    for step in range(6):
        for p, q in zip(plain_model.parameters(), fused_model.parameters()):
            g = torch.randn(p.shape, generator=gen).to(device)
            p.grad, q.grad = g.clone(), g.clone()
        plain.step()
        fused.step()
        for name, p, q in zip(names, plain_model.parameters(), fused_model.parameters()):
            torch.testing.assert_close(q.detach(), p.detach(), msg=lambda m: f"step {step + 1}, {name}: {m}")
    assert all(not torch.equal(a, p) for a, p in zip(initial, plain_model.parameters()))


SHAPES = [(5, 4), (4,), (2, 2), (3,), (3, 5), (3,), (64, 33)]
W1, B1, FROZEN, LATE, W2, B2, BIG = range(7)  # B1, B2: zero-initialised biases
STEPS = 6


def make_params(device) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter((torch.zeros(s) if i in (B1, B2) else torch.randn(s, generator=gen)).to(device))
            for i, s in enumerate(SHAPES)]


def make_grads(step: int, device) -> list[torch.Tensor | None]:
    """As tests/test_optim.py: FROZEN never has a gradient, LATE only from step 2, W1's is 0 on step 3."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = []
    for i, s in enumerate(SHAPES):
        g = torch.randn(s, generator=gen)
        if i == FROZEN or (i == LATE and step < 2):
            g = None
        elif i == W1 and step == 3:
            g = torch.zeros_like(g)
        grads.append(None if g is None else g.to(device))
    return grads


def make_groups(params, lr, group1=None):
    return [{"params": params[:4]}, {"params": params[4:], "lr": lr * 0.3, **(group1 or {})}]


def run_pair(make_a, make_b, device_a, device_b, what):
    """Step two optimizers on identical float32 data (on two devices); compare after each step."""
    pa, pb = make_params(device_a), make_params(device_b)
    initial = [p.detach().clone() for p in pa]
    a, b = make_a(pa), make_b(pb)
    for step in range(STEPS):
        ga, gb = make_grads(step, device_a), make_grads(step, device_b)
        for p, q, g, h in zip(pa, pb, ga, gb):
            p.grad, q.grad = g, h
        a.step()
        b.step()
        for i, (p, q) in enumerate(zip(pa, pb)):
            assert p.device.type == device_a.type
            torch.testing.assert_close(p.detach().cpu(), q.detach().cpu(),
                                       msg=lambda m: f"{what}: step {step + 1}, parameter {i}: {m}")
    torch.testing.assert_close(pa[FROZEN].detach(), initial[FROZEN], rtol=0, atol=0)  # no gradient: untouched
    assert pa[FROZEN] not in a.state
    assert not torch.equal(pa[BIG].detach(), initial[BIG])
    return a


TORCH_CASES = [
    pytest.param("SGD", dict(lr=0.05), id="SGD-plain"),
    pytest.param("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.1), id="SGD-momentum-decay"),
    pytest.param("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), id="SGD-nesterov"),
    pytest.param("RMSprop", dict(lr=0.01, alpha=0.9), id="RMSprop-plain"),
    pytest.param("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.1),
                 id="RMSprop-centered-momentum-decay"),
    pytest.param("Adagrad", dict(lr=0.05), id="Adagrad-plain"),
    pytest.param("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1),
                 id="Adagrad-lr_decay-decay-initial"),
    pytest.param("Adam", dict(lr=0.01), id="Adam-plain"),
    pytest.param("Adam", dict(lr=0.01, betas=(0.5, 0.9), amsgrad=True, weight_decay=0.1), id="Adam-amsgrad-decay"),
    pytest.param("AdamW", dict(lr=0.01), id="AdamW-plain"),
    pytest.param("AdamW", dict(lr=0.01, betas=(0.5, 0.9), amsgrad=True, weight_decay=0.1), id="AdamW-amsgrad-decay"),
]


def ours(name):
    import ftcourse.optim  # imported here: the from-scratch optimizers may be rewritten independently

    cls = getattr(ftcourse.optim, name, None)
    if cls is None:
        pytest.skip(f"ftcourse.optim has no {name}")
    return cls


@pytest.mark.parametrize("name,kw", TORCH_CASES)
def test_from_scratch_optimizer_matches_torch_on_cuda(device, name, kw):
    """tests/test_optim.py's parity on CUDA float32 tensors: ours against torch.optim (foreach=False) on
    the same device, at assert_close's float32 tolerances, after every step."""
    cls, reference = ours(name), getattr(torch.optim, name)
    lr = kw["lr"]
    run_pair(lambda p: cls(make_groups(p, lr), **kw), lambda p: reference(make_groups(p, lr), **kw, foreach=False),
             device, device, f"{name}{kw}")


LAYERWISE_CASES = [
    pytest.param("LARS", dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02), id="LARS-momentum"),
    pytest.param("LARS", dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.02, nesterov=True,
                              trust_clip=True), id="LARS-nesterov-trust_clip"),
    pytest.param("LARS", dict(lr=0.5, weight_decay=1e-4), id="LARS-plain"),
    pytest.param("LAMB", dict(lr=0.01, weight_decay=0.01), id="LAMB-decay"),
    pytest.param("LAMB", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.3), id="LAMB-low_betas-big_decay"),
    pytest.param("LAMB", dict(lr=0.01, weight_decay=0.0), id="LAMB-no_decay"),
]


@pytest.mark.parametrize("name,kw", LAYERWISE_CASES)
def test_lars_and_lamb_on_cuda_match_their_cpu_result(device, name, kw):
    """LARS and LAMB (per-tensor norms, trust ratios as 0-dim device tensors) on CUDA against the same
    optimizer on the CPU, on the same float32 data; group 1 has no weight decay, as biases would."""
    cls, lr = ours(name), kw["lr"]
    run_pair(lambda p: cls(make_groups(p, lr, {"weight_decay": 0.0}), **kw),
             lambda p: cls(make_groups(p, lr, {"weight_decay": 0.0}), **kw),
             device, torch.device("cpu"), f"{name}{kw}")


# ---------------------------------------------------------------------------------------------
# PeakMemory
# ---------------------------------------------------------------------------------------------
def test_peak_memory_reports_at_least_a_known_allocation(device):
    """ftcourse/memory.py on CUDA: a block allocating 64 MiB reports at least 64 MiB; the next block
    starts from a reset peak (it does not report the earlier one); train() records a peak too."""
    mib = 64
    with PeakMemory(device) as block:
        x = torch.ones(mib * 2**20 // 4, device=device)  # float32: 4 bytes each
        assert x.sum().item() == x.numel()
    assert block.peak_mb >= mib, block.peak_mb
    del x
    model = tiny("bert").to(device)
    history = train(model, synthetic_batches(2), torch.optim.AdamW(model.parameters()), progress=False)
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    assert history.peak_memory_mb >= weights_mb
    if device.type != "cuda":
        return
    baseline = torch.cuda.memory_allocated(device) / 2**20
    with PeakMemory(device) as small:
        y = torch.ones(2**20 // 4, device=device)  # 1 MiB
    assert small.peak_mb >= 1
    # the caching allocator rounds blocks up; the 64 MiB of the first block must not show here
    assert small.peak_mb <= baseline + 1 + 2, (small.peak_mb, baseline)
    del y


def test_find_max_batch_size_halves_past_a_real_out_of_memory_and_restores(device):
    """ftcourse/batch_size.py's CUDA branch (tests/test_batch_size.py covers the CPU one): a trial that
    raises torch.cuda.OutOfMemoryError does not fit and the next is half as big; the model and the
    optimizer come back exactly, and nothing of the failed trials stays allocated. With a budget, a
    trial fits when its peak allocated memory (PeakMemory) stays within it."""
    cuda_only(device)
    import gc

    from ftcourse.batch_size import find_max_batch_size

    torch.manual_seed(0)
    model = tiny("bert").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    too_big = 2 * torch.cuda.get_device_properties(device).total_memory
    tried = []

    def try_batch(b):
        tried.append(b)
        batch = {k: v.to(device) for k, v in synthetic_batches(1, batch_size=b)[0].items()}
        labels = batch.pop("labels")
        torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
        if b > 4:  # more than the GPU has: a real OutOfMemoryError, with the trial's tensors alive
            torch.empty(too_big, dtype=torch.uint8, device=device)

    try_batch(1)  # warm-up (cuBLAS workspace, ...), then back to the state to be restored
    tried.clear()
    optimizer.state.clear()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    gc.collect()
    torch.cuda.empty_cache()
    allocated_before = torch.cuda.memory_allocated(device)
    assert find_max_batch_size(try_batch, 16, device, model=model, optimizer=optimizer, verbose=False) == 4
    assert tried == [16, 8, 4]
    for k, v in model.state_dict().items():
        assert v.device.type == "cuda" and torch.equal(v, weights[k]), k
    assert len(optimizer.state) == 0 and all(p.grad is None for p in model.parameters())
    left = torch.cuda.memory_allocated(device) - allocated_before
    assert left <= 2**20, f"{left / 2**20:.1f} MiB of the trials are still allocated"

    base = torch.cuda.memory_allocated(device) / 2**20

    def allocate(b):
        torch.ones(b * 2**18, device=device)  # b MiB of float32

    assert find_max_batch_size(allocate, 16, device, memory_budget_mb=base + 6, verbose=False) == 4


# ---------------------------------------------------------------------------------------------
# Exact restores of a CUDA model: early stopping, lr_range_test
# ---------------------------------------------------------------------------------------------
class ScriptedLoss:
    """Before the early-stopping callback: replaces the validation loss it sees, so the best evaluation
    is known in advance whatever the GPU's numerics."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def on_evaluate(self, state, metrics):
        metrics["loss"] = self.values[self.calls]
        self.calls += 1


class EvalSnapshots:
    def __init__(self):
        self.states = []

    def on_evaluate(self, state, metrics):
        self.states.append({k: v.detach().clone() for k, v in state.model.state_dict().items()})


@pytest.mark.parametrize("on_disk", [False, True], ids=["in_memory", "on_disk"])
def test_early_stopping_restores_the_best_cuda_weights_exactly(device, tmp_path, on_disk):
    """tests/test_early_stopping.py::test_restore_best_loads_exactly_the_best_evaluations_weights on a
    CUDA model: the weights kept (a CPU copy or a file) go back bit for bit, onto the GPU."""
    set_seed(0)
    model = tiny("bert", dropout=0.1).to(device)
    path = tmp_path / "best.pt" if on_disk else None
    es = EarlyStopping(patience=None, mode="min", checkpoint_path=path, verbose=False)
    losses = [0.9, 0.5, 0.7, 0.8, 0.6, 0.95]  # the best is evaluation 1, not the last
    snaps = EvalSnapshots()
    history = train(model, synthetic_batches(4, seed=1), torch.optim.AdamW(model.parameters(), lr=1e-2), epochs=3,
                    eval_loader=synthetic_batches(2, seed=2), eval_every=2,
                    callbacks=[ScriptedLoss(losses), EarlyStoppingCallback(es, metric="loss"), snaps], progress=False)
    assert len(history.evals) == len(losses) == len(snaps.states)
    assert es.best_index == 1 and es.best_score == 0.5
    assert path is None or path.is_file()
    best, final = snaps.states[1], snaps.states[-1]
    for k, v in model.state_dict().items():
        assert v.device.type == device.type, k  # restored onto the GPU, not moved to the CPU
        assert torch.equal(v, best[k]), k
    assert any(not torch.equal(final[k], best[k]) for k in final)


@pytest.mark.parametrize("fused", [False, True], ids=["adamw", "adamw_fused"])
def test_lr_range_test_restores_a_cuda_model_and_optimizer_exactly(device, fused):
    """tests/test_lr_finder.py::test_model_and_optimizer_are_restored on CUDA: every state_dict tensor,
    every optimizer state tensor (on its own device: the fused AdamW's step counts live on the GPU),
    the lrs and the mode come back exactly, and the restored optimizer steps as an untouched twin."""
    torch.manual_seed(0)
    model = tiny("bert", layers=2).to(device)
    twin = copy.deepcopy(model)

    def groups(m):
        params = list(m.parameters())
        return [{"params": params[:5], "lr": 1e-4}, {"params": params[5:], "lr": 3e-4}]

    opt = torch.optim.AdamW(groups(model), fused=fused)
    batches = synthetic_batches(4)
    batch = {k: v.to(device) for k, v in batches[0].items()}
    labels = batch.pop("labels")
    torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
    opt.step()  # some optimizer state, as if training had started
    opt.zero_grad()
    twin.load_state_dict(model.state_dict())
    twin_opt = torch.optim.AdamW(groups(twin), fused=fused)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for p in model.parameters()}

    result = lr_range_test(model, batches, opt, start_lr=1e-5, end_lr=1.0, num_steps=10)
    assert len(result.lrs) >= 2

    for k, v in model.state_dict().items():
        assert v.device == weights[k].device and torch.equal(v, weights[k]), k
    for p in model.parameters():
        assert p.grad is None
        assert set(opt.state[p]) == set(state[p])
        for key, saved in state[p].items():
            now = opt.state[p][key]
            if torch.is_tensor(saved):
                assert now.device == saved.device and now.dtype == saved.dtype and torch.equal(now, saved), key
            else:
                assert now == saved, key
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 3e-4]
    assert not model.training
    # the restored optimizer is a working one: one more step matches the untouched twin exactly
    gen = torch.Generator().manual_seed(5)
    for p, q in zip(model.parameters(), twin.parameters()):
        g = torch.randn(p.shape, generator=gen).to(device)
        p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    twin_opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


# ---------------------------------------------------------------------------------------------
# SWA and EMA (AveragedModel) on CUDA
# ---------------------------------------------------------------------------------------------
class AveragedSnapshots:
    """After the SWA callback: a copy of the parameters at each step it averaged."""

    def __init__(self, swa):
        self.swa, self.params = swa, []

    def on_step_end(self, state):
        if self.swa.update_steps and self.swa.update_steps[-1] == state.step:
            self.params.append([p.detach().clone() for p in state.model.parameters()])


@pytest.mark.parametrize("kind", ["swa", "ema"])
def test_swa_average_on_cuda_is_the_mean_of_the_snapshots(device, kind):
    """tests/test_swa.py::test_swa_average_is_the_mean_of_the_snapshots (and the EMA formula) in float32
    on the GPU: the AveragedModel lives on the GPU and equals the mean (EMA) of the snapshots."""
    total, lr = 12, 1e-2
    set_seed(0)
    model = tiny("bert", layers=1, dropout=0.1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total)
    decay = 0.7
    swa = SWACallback(start=0.5, update_every=2, swa_lr=lr / 2) if kind == "swa" else SWACallback(start=0.25, ema_decay=decay)
    snaps = AveragedSnapshots(swa)
    train(model, synthetic_batches(6, seed=1), optimizer, scheduler=scheduler, epochs=2, callbacks=[swa, snaps],
          progress=False)
    averaged = list(swa.averaged.module.parameters())
    assert all(p.device.type == device.type for p in averaged)
    assert len(snaps.params) == len(swa.update_steps) == int(swa.averaged.n_averaged)
    if kind == "swa":
        assert swa.update_steps == [6, 8, 10, 12]
        expected = [torch.stack(ps).mean(0) for ps in zip(*snaps.params)]
    else:
        assert swa.update_steps == list(range(3, total + 1))
        expected = snaps.params[0]  # torch's EMA starts as a copy of the first snapshot
        for params in snaps.params[1:]:
            expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params)]
    torch.testing.assert_close(averaged, expected)
    assert not torch.equal(expected[0], snaps.params[-1][0])  # the average is not the last snapshot


# ---------------------------------------------------------------------------------------------
# evaluate(return_predictions=True): dataset row order from a length-sorted CUDA evaluation
# ---------------------------------------------------------------------------------------------
class Rows(torch.utils.data.Dataset):
    """Rows of different lengths (token 7 in some: learnable), labels row % 3."""

    def __init__(self, n: int = 37, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.rows = []
        for i in range(n):
            length = int(torch.randint(3, 30, (1,), generator=g))
            ids = torch.randint(10, 100, (length,), generator=g)
            self.rows.append({"input_ids": ids, "labels": torch.tensor(i % 3)})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def pad(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r["input_ids"])] = r["input_ids"]
        mask[j, : len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([r["labels"] for r in rows])}


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_come_back_in_row_order_from_a_length_sorted_loader(device, family):
    """ftcourse/train.py ``evaluate(return_predictions=True)``: a DataLoader whose sampler is a list of
    row indices (longest first, as make_loader(group_by_length=True, shuffle=False)) gives the
    predictions, labels and logits of the sequential loader, row by row."""
    rows = Rows()
    torch.manual_seed(0)
    model = tiny(family, num_labels=3, init_range=0.2).to(device)  # large weights: logits differ row to row
    longest_first = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    assert longest_first != list(range(len(rows)))
    sequential = torch.utils.data.DataLoader(rows, batch_size=5, shuffle=False, collate_fn=pad)
    by_length = torch.utils.data.DataLoader(rows, batch_size=5, sampler=longest_first, collate_fn=pad)
    a = evaluate(model, sequential, return_predictions=True)
    b = evaluate(model, by_length, return_predictions=True)
    expected_labels = np.array([i % 3 for i in range(len(rows))])
    assert np.array_equal(a["labels"], expected_labels) and np.array_equal(b["labels"], expected_labels)
    # padding differs between the two passes (other batch widths): the logits agree to rounding, and
    # rows differ far more than that, so a row out of place could not pass
    atol = 1e-4
    np.testing.assert_allclose(b["logits"], a["logits"], rtol=1e-3, atol=atol)
    assert np.abs(a["logits"][longest_first] - a["logits"]).max() > 100 * atol
    top2 = np.sort(a["logits"], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3  # rows whose argmax no rounding can flip
    assert clear.mean() > 0.5
    assert np.array_equal(a["predictions"][clear], b["predictions"][clear])
    assert np.array_equal(a["predictions"], a["logits"].argmax(-1))
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["n"] == b["n"] == len(rows)


# ---------------------------------------------------------------------------------------------
# Determinism: same seed, use_deterministic_algorithms(True), identical losses
# ---------------------------------------------------------------------------------------------
def _deterministic_run(device, family, seed, mode, seq_len):
    set_seed(seed)
    model = tiny(family, layers=2, hidden=32, dropout=0.1, max_positions=max(64, seq_len + 2)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")  # as the notebooks
    history = train(model, synthetic_batches(5, seq_len=seq_len, seed=1), optimizer, epochs=2,
                    precision=Precision(mode, device, verbose=False), progress=False)
    return [r["loss"] for r in history.steps], [r["grad_norm"] for r in history.steps], model


@pytest.mark.parametrize("seq_len", [12, COURSE_MAX_LENGTH], ids=["seq12", f"seq{COURSE_MAX_LENGTH}"])
@pytest.mark.parametrize("mode", ["fp32", "auto"])
@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_identical_losses_under_deterministic_algorithms(device, deterministic, report,
                                                                         family, mode, seq_len):
    """tests/test_train.py::test_same_seed_bit_identical_losses on the GPU (dropout on), as notebooks 09
    and 10 assert it: two train() runs with one seed give the same losses, gradient norms and final
    weights bit for bit; another seed gives other losses. Non-determinism warnings are reported."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a_loss, a_norm, a_model = _deterministic_run(device, family, 3, mode, seq_len)
        b_loss, b_norm, b_model = _deterministic_run(device, family, 3, mode, seq_len)
    c_loss, _, _ = _deterministic_run(device, family, 4, mode, seq_len)
    flagged = sorted({str(w.message).split(".")[0] for w in caught if "determinis" in str(w.message)})
    weight_diff = max((a - b).abs().max().item() for a, b in zip(a_model.parameters(), b_model.parameters()))
    key = f"determinism {family} {mode} seq {seq_len}"
    report(key, f"losses: {first_difference(a_loss, b_loss)}; max |weight difference| {weight_diff:.3e}"
                + (f"; warnings: {flagged}" if flagged else ""))
    assert a_loss == b_loss, f"{key}: {first_difference(a_loss, b_loss)}; warnings {flagged}"
    assert a_norm == b_norm, f"{key}: gradient norms: {first_difference(a_norm, b_norm)}"
    assert weight_diff == 0.0, f"{key}: final weights differ by up to {weight_diff:.3e}"
    assert a_loss != c_loss


def _attention_grads(q, k, v, mask, weight, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    chosen = {"default": None, "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    context = sdpa_kernel([chosen]) if chosen is not None else torch.enable_grad()
    with context:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        (out.float() * weight).sum().backward()
    return [t.grad for t in (q, k, v)]


@pytest.mark.parametrize("seq_len", [
    COURSE_MAX_LENGTH,
    pytest.param(512, marks=pytest.mark.xfail(
        reason="beyond the course's max_length: ftcourse.train.use_deterministic_algorithms uses warn_only=True, "
               "under which PyTorch keeps the memory-efficient attention backward's split-keys (atomic-add) path, "
               "which is not run-to-run identical once the keys span 3+ blocks; the report gives the difference",
        strict=False)),
], ids=[f"seq{COURSE_MAX_LENGTH}", "seq512"])
def test_attention_backward_is_run_to_run_identical(device, deterministic, report, seq_len):
    """The one part of a Transformer's backward known to be able to differ run to run on CUDA:
    ``scaled_dot_product_attention`` with a padding mask (what the tiny and the course's models call;
    with a mask the memory-efficient kernel serves it). RoBERTa-base shapes (12 heads of 64), in
    fp32 and the autocast dtype; the same backward twice under the package's deterministic mode
    (warn_only=True), and for comparison under warn_only=False and on the math kernel. Asserts the
    default kernel is identical under the package's mode; reports every max difference."""
    batch, heads, dim = (16, 12, 64) if device.type == "cuda" else (2, 2, 16)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(seq_len // 4, seq_len + 1, (batch,), generator=gen)
    lengths[0] = seq_len
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None])[:, None, None, :].to(device)  # (B, 1, 1, S) keys
    results, failures = {}, []
    dtypes = [torch.float32, torch.bfloat16 if native_bf16(device) else torch.float16]
    for dtype in dtypes:
        q, k, v = (torch.randn(batch, heads, seq_len, dim, generator=gen).to(device, dtype) for _ in range(3))
        weight = torch.randn(batch, heads, seq_len, dim, generator=gen).to(device)
        for warn_only in (True, False):
            torch.use_deterministic_algorithms(True, warn_only=warn_only)
            for backend in ("default", "efficient", "math"):
                name = f"{str(dtype).removeprefix('torch.')} {backend} warn_only={warn_only}"
                try:
                    first = _attention_grads(q, k, v, mask, weight, backend)
                    second = _attention_grads(q, k, v, mask, weight, backend)
                except RuntimeError as err:  # no such kernel for this dtype/GPU, or refused under warn_only=False
                    refused = "determinis" in str(err)
                    results[name] = "n/a (refused: not deterministic)" if refused else "n/a (no such kernel here)"
                    continue
                diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(first, second))
                results[name] = f"{diff:.3e}"
                if warn_only and backend == "default" and diff != 0:
                    failures.append(f"{name}: max |dq, dk, dv difference| {diff:.3e}")
        torch.use_deterministic_algorithms(True, warn_only=True)
    report(f"attention backward run-to-run max difference, seq {seq_len}",
           "; ".join(f"{k}: {v}" for k, v in results.items()))
    assert not failures, (f"seq {seq_len}: the attention backward differs between two identical runs under "
                          f"use_deterministic_algorithms(True) (warn_only=True): {failures}; all: {results}")
