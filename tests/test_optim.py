"""Parity tests of ftcourse.optim: SGD/RMSprop/Adagrad/Adam/AdamW against torch.optim, LARS/LAMB
against per-tensor reference implementations of the papers' formulas written here (and timm, if
installed).

Everything is float64 and compared after every step. The parameter set covers the edge cases of
REFERENCE.md: a parameter whose ``.grad`` is always None (must stay untouched, with no state), one
whose gradient appears only from the third step (per-parameter vs per-group step counts), a
zero-initialised bias (zero norm), an all-zero gradient on one step (zero grad norm), two parameter
groups with different lrs, and unit-scale or tiny (1e-6) gradients.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import ftcourse.optim
from ftcourse.optim import LAMB, LARS, SGD, Adagrad, Adam, AdamW, RMSprop

# Parity and argument checks run LARS and LAMB with weight decay 0 everywhere on purpose; their
# constructors then warn that the trust ratio never applies (test_optim_args checks that warning).
pytestmark = pytest.mark.filterwarnings("ignore:(LARS|LAMB). no parameter group has a non-zero weight_decay:UserWarning")

DT = torch.float64
STEPS = 6
LR = 0.05
GROUP1_LR_FACTOR = 0.3
SHAPES = [(5, 4), (4,), (2, 2), (3,), (3, 5), (3,)]
W1, B1, FROZEN, LATE, W2, B2 = range(6)  # B1, B2: zero-initialised biases
LATE_FROM = 2  # LATE has no gradient on steps 0 and 1
ZERO_GRAD_STEP = 3  # W1's gradient is all zeros on this step


def make_params() -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for i, shape in enumerate(SHAPES):
        data = torch.zeros(shape, dtype=DT) if i in (B1, B2) else torch.randn(shape, generator=gen, dtype=DT)
        params.append(nn.Parameter(data))
    return params


def make_grads(step: int, scale: float) -> list[torch.Tensor | None]:
    """Gradients of one step: different on every step, None for FROZEN (and LATE early on)."""
    gen = torch.Generator().manual_seed(1000 + step)
    grads = []
    for i, shape in enumerate(SHAPES):
        g = torch.randn(shape, generator=gen, dtype=DT) * scale
        if i == FROZEN or (i == LATE and step < LATE_FROM):
            g = None
        elif i == W1 and step == ZERO_GRAD_STEP:
            g = torch.zeros_like(g)
        grads.append(g)
    return grads


def make_groups(params, lr=LR, group0=None, group1=None):
    """Two parameter groups with different lrs: [W1, B1, FROZEN, LATE] and [W2, B2]."""
    return [
        {"params": params[:4], **(group0 or {})},
        {"params": params[4:], "lr": lr * GROUP1_LR_FACTOR, **(group1 or {})},
    ]


def assert_same(actual, expected):
    # Tighter than assert_close's float64 defaults (1e-7), which would not see a wrong update of
    # size lr * 1e-6 (SGD with tiny gradients).
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-15)


def run_parity(make_ours, make_ref, scale, steps=STEPS):
    """Step both optimizers on identical copies with identical gradients; compare after each step."""
    ours_params, ref_params = make_params(), make_params()
    initial = [p.detach().clone() for p in ours_params]
    ours, ref = make_ours(ours_params), make_ref(ref_params)
    for step in range(steps):
        grads = make_grads(step, scale)
        for p, q, g in zip(ours_params, ref_params, grads):
            p.grad = None if g is None else g.clone()
            q.grad = None if g is None else g.clone()
        ours.step()
        ref.step()
        for i, (p, q, g) in enumerate(zip(ours_params, ref_params, grads)):
            assert_same(p.detach() - initial[i], q.detach() - initial[i])  # the displacement
            assert_same(p.detach(), q.detach())
            if g is not None:
                torch.testing.assert_close(p.grad, g, rtol=0, atol=0)  # .grad left unmodified
    # The parameter without a gradient: untouched, no state.
    torch.testing.assert_close(ours_params[FROZEN].detach(), initial[FROZEN], rtol=0, atol=0)
    assert ours_params[FROZEN] not in ours.state
    return ours, ours_params


SCALES = pytest.mark.parametrize("scale", [1.0, 1e-6], ids=["unit_grads", "tiny_grads"])


# ---------------------------------------------------------------------------------------------
# SGD, RMSprop, Adam, AdamW against torch.optim
# ---------------------------------------------------------------------------------------------
SGD_GRID = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.5),
    dict(momentum=0.9, nesterov=True),
]


@SCALES
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("kw", SGD_GRID, ids=str)
def test_sgd_matches_torch(kw, weight_decay, scale):
    kw = dict(kw, lr=LR, weight_decay=weight_decay)
    ours, params = run_parity(lambda p: SGD(make_groups(p), **kw),
                              lambda p: torch.optim.SGD(make_groups(p), **kw, foreach=False), scale)
    if kw["momentum"] == 0:
        assert len(ours.state) == 0  # as torch: no momentum buffer, no state
    else:
        assert set(ours.state[params[W1]]) == {"momentum_buffer"}


@SCALES
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_matches_torch(centered, momentum, weight_decay, scale):
    kw = dict(lr=0.01, alpha=0.9, momentum=momentum, centered=centered, weight_decay=weight_decay)
    ours, params = run_parity(lambda p: RMSprop(make_groups(p, lr=0.01), **kw),
                              lambda p: torch.optim.RMSprop(make_groups(p, lr=0.01), **kw, foreach=False), scale)
    expected = {"step", "square_avg"} | ({"momentum_buffer"} if momentum else set()) | (
        {"grad_avg"} if centered else set())
    assert set(ours.state[params[W1]]) == expected
    assert ours.state[params[W1]]["step"] == STEPS
    assert ours.state[params[LATE]]["step"] == STEPS - LATE_FROM


ADAGRAD_GRID = [
    dict(),
    dict(lr_decay=0.1),
    dict(initial_accumulator_value=0.5),
    dict(eps=1e-3),
    dict(eps=0.0),
    dict(lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-6),
]


@SCALES
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("kw", ADAGRAD_GRID, ids=str)
def test_adagrad_matches_torch(kw, weight_decay, scale):
    kw = dict(kw, lr=0.05, weight_decay=weight_decay)
    ours, params = run_parity(lambda p: Adagrad(make_groups(p), **kw),
                              lambda p: torch.optim.Adagrad(make_groups(p), **kw, foreach=False), scale)
    assert set(ours.state[params[W1]]) == {"step", "sum"}
    assert ours.state[params[W1]]["step"] == STEPS
    assert ours.state[params[LATE]]["step"] == STEPS - LATE_FROM  # per-parameter step counts, as torch


def test_adagrad_lr_decay_and_initial_accumulator():
    """The formula by hand: clr = γ/(1 + (t − 1)·δ), s = s0 + Σ g², θ −= clr·g/(sqrt(s) + ε)."""
    p = nn.Parameter(torch.tensor([1.0, -1.0], dtype=DT))
    opt = Adagrad([p], lr=0.1, lr_decay=0.5, initial_accumulator_value=3.0, eps=0.0)
    g = torch.tensor([1.0, 2.0], dtype=DT)
    expected, s = p.detach().clone(), torch.full((2,), 3.0, dtype=DT)
    for t in (1, 2, 3):
        p.grad = g.clone()
        opt.step()
        s = s + g * g
        expected = expected - 0.1 / (1 + (t - 1) * 0.5) * g / s.sqrt()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(opt.state[p]["sum"], s, rtol=0, atol=0)


ADAM_GRID = pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)], ids=["default_betas", "low_betas"])


@SCALES
@ADAM_GRID
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_and_adamw_match_torch(name, amsgrad, weight_decay, betas, scale):
    ours_cls, torch_cls = {"Adam": (Adam, torch.optim.Adam), "AdamW": (AdamW, torch.optim.AdamW)}[name]
    kw = dict(lr=0.01, betas=betas, amsgrad=amsgrad, weight_decay=weight_decay)
    ours, params = run_parity(lambda p: ours_cls(make_groups(p, lr=0.01), **kw),
                              lambda p: torch_cls(make_groups(p, lr=0.01), **kw, foreach=False), scale)
    assert ours.state[params[W1]]["step"] == STEPS
    assert ours.state[params[LATE]]["step"] == STEPS - LATE_FROM  # per-parameter step counts, as torch
    assert ("max_exp_avg_sq" in ours.state[params[W1]]) == amsgrad


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW"])
def test_defaults_match_torch(name):
    """Built with no arguments but the params, ours and torch's agree (defaults included)."""
    ours_cls = {"SGD": SGD, "RMSprop": RMSprop, "Adagrad": Adagrad, "Adam": Adam, "AdamW": AdamW}[name]
    torch_cls = getattr(torch.optim, name)
    ours_defaults = ours_cls([nn.Parameter(torch.zeros(1))]).defaults
    torch_defaults = torch_cls([nn.Parameter(torch.zeros(1))]).defaults
    for key, value in ours_defaults.items():
        if key in torch_defaults:
            assert torch_defaults[key] == value, key
    run_parity(lambda p: ours_cls(p), lambda p: torch_cls(p, foreach=False), scale=1.0)


def test_adamw_defaults_to_decoupled_weight_decay_1e_2():
    opt = AdamW([nn.Parameter(torch.zeros(1))])
    assert opt.defaults["weight_decay"] == 1e-2 and opt.defaults["decoupled_weight_decay"] is True
    assert Adam([nn.Parameter(torch.zeros(1))]).defaults["weight_decay"] == 0


# ---------------------------------------------------------------------------------------------
# Adam without bias correction (BERTAdam)
# ---------------------------------------------------------------------------------------------
class RefBertAdam:
    """BERT's Adam: no bias correction; eps outside the square root; weight decay coupled or decoupled."""

    def __init__(self, groups, lr, betas, eps, weight_decay, decoupled):
        self.groups = [{"lr": lr, **g} for g in groups]
        self.betas, self.eps, self.weight_decay, self.decoupled = betas, eps, weight_decay, decoupled
        self.state = {}

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        for group in self.groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if self.weight_decay:
                    if self.decoupled:
                        p.mul_(1 - lr * self.weight_decay)
                    else:
                        g = g + self.weight_decay * p
                st = self.state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                st["m"] = beta1 * st["m"] + (1 - beta1) * g
                st["v"] = beta2 * st["v"] + (1 - beta2) * g * g
                p.sub_(lr * st["m"] / (st["v"].sqrt() + self.eps))


@SCALES
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_without_bias_correction_matches_reference(name, weight_decay, scale):
    cls = {"Adam": Adam, "AdamW": AdamW}[name]
    kw = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay)
    run_parity(lambda p: cls(make_groups(p, lr=0.01), bias_correction=False, **kw),
               lambda p: RefBertAdam(make_groups(p, lr=0.01), decoupled=name == "AdamW", **kw), scale)


def test_adam_bias_correction_changes_first_step():
    """At t = 1 BERTAdam's step is (1 − β1)/sqrt(1 − β2) ≈ 3.16 times Adam's (with ε ≈ 0)."""
    moves = {}
    for bc in (True, False):
        p = nn.Parameter(torch.zeros(3, dtype=DT))
        p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
        Adam([p], lr=0.1, eps=0.0, bias_correction=bc).step()
        moves[bc] = p.detach().clone()
    torch.testing.assert_close(moves[True], torch.tensor([-0.1, 0.1, -0.1], dtype=DT))
    torch.testing.assert_close(moves[False], moves[True] * 0.1 / math.sqrt(0.001))


# ---------------------------------------------------------------------------------------------
# LARS and LAMB against the papers' per-tensor formulas (REFERENCE.md)
# ---------------------------------------------------------------------------------------------
class RefLARS:
    """You, Gitman & Ginsburg 2017 with LARC clipping, then torch's SGD momentum; one tensor at a time."""

    def __init__(self, groups, **defaults):
        self.groups = [{**defaults, **g} for g in groups]
        self.state = {}

    @torch.no_grad()
    def step(self):
        for group in self.groups:
            lr, lam, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.clone()
                if lam != 0:
                    w_norm, g_norm = p.norm().item(), g.norm().item()  # this tensor's norms only
                    if w_norm == 0 or g_norm == 0:
                        trust = 1.0
                    else:
                        trust = group["trust_coefficient"] * w_norm / (g_norm + lam * w_norm + group["eps"])
                    if group["trust_clip"]:
                        trust = min(trust / lr, 1.0)
                    g = (g + lam * p) * trust
                if mu != 0:
                    if p not in self.state:
                        buf = g.clone()
                    else:
                        buf = mu * self.state[p] + (1 - group["dampening"]) * g
                    self.state[p] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.sub_(lr * g)


LARS_GRID = [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
]


@SCALES
@pytest.mark.parametrize("trust_clip", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-4, 0.1])
@pytest.mark.parametrize("kw", LARS_GRID, ids=str)
def test_lars_matches_reference(kw, weight_decay, trust_clip, scale):
    # Group 0 has the weight decay under test; group 1 (as biases and norms would) has none.
    full = {**dict(lr=0.5, momentum=0.0, dampening=0.0, weight_decay=weight_decay, nesterov=False,
                   trust_coefficient=0.02, eps=1e-8, trust_clip=trust_clip), **kw}
    groups = lambda p: make_groups(p, lr=0.5, group1={"weight_decay": 0.0})  # noqa: E731
    run_parity(lambda p: LARS(groups(p), **full), lambda p: RefLARS(groups(p), **full), scale)


def test_lars_trust_ratio_is_per_tensor():
    """Two tensors of very different scales get different trust ratios (no global sums of norms)."""
    big = nn.Parameter(torch.full((4,), 10.0, dtype=DT))
    small = nn.Parameter(torch.full((4,), 0.1, dtype=DT))
    big.grad = torch.ones(4, dtype=DT)
    small.grad = torch.ones(4, dtype=DT)
    LARS([big, small], lr=1.0, weight_decay=0.0).step()  # no adaptation without weight decay
    torch.testing.assert_close(big.detach(), torch.full((4,), 9.0, dtype=DT))
    big.data.fill_(10.0)
    small.data.fill_(0.1)
    eta, lam = 0.001, 0.5
    LARS([big, small], lr=1.0, weight_decay=lam, trust_coefficient=eta).step()
    for p, w in ((big, 10.0), (small, 0.1)):
        w_norm, g_norm = 2 * w, 2.0
        trust = eta * w_norm / (g_norm + lam * w_norm + 1e-8)
        torch.testing.assert_close(p.detach(), torch.full((4,), w - (1 + lam * w) * trust, dtype=DT))


class RefLAMB:
    """You et al. 2019 (Algorithm 2, φ = identity), with the step count per group as timm/NVLAMB."""

    def __init__(self, groups, **defaults):
        self.groups = [{**defaults, **g, "step": 0} for g in groups]
        self.state = {}

    @torch.no_grad()
    def step(self):
        for group in self.groups:
            group["step"] += 1  # per group, even if no parameter of the group has a gradient
            t, lr, lam, eps = group["step"], group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state.setdefault(p, {"m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                st["m"] = beta1 * st["m"] + (1 - beta1) * g
                st["v"] = beta2 * st["v"] + (1 - beta2) * g * g
                m_hat = st["m"] / (1 - beta1**t)
                v_hat = st["v"] / (1 - beta2**t)
                u = m_hat / (v_hat.sqrt() + eps)
                if lam != 0:
                    u = u + lam * p
                    w_norm, u_norm = p.norm().item(), u.norm().item()
                    u = u * (1.0 if w_norm == 0 or u_norm == 0 else w_norm / u_norm)
                p.sub_(lr * u)


@SCALES
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)], ids=["default_betas", "low_betas"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.3])
def test_lamb_matches_reference(weight_decay, betas, scale):
    full = dict(lr=0.01, betas=betas, eps=1e-6, weight_decay=weight_decay)
    groups = lambda p: make_groups(p, lr=0.01, group1={"weight_decay": 0.0})  # noqa: E731
    ours, params = run_parity(lambda p: LAMB(groups(p), **full), lambda p: RefLAMB(groups(p), **full), scale)
    assert [g["step"] for g in ours.param_groups] == [STEPS, STEPS]
    assert ours.state_dict()["param_groups"][0]["step"] == STEPS


def test_lamb_group_step_advances_without_gradients():
    """As timm: the group's step count advances on every step(), even with no gradient in the group."""
    p = nn.Parameter(torch.ones(3, dtype=DT))
    q = nn.Parameter(torch.ones(3, dtype=DT))
    ours = LAMB([{"params": [p]}, {"params": [q]}], weight_decay=0.0)
    ref = RefLAMB([{"params": [p.detach().clone()]}, {"params": [q.detach().clone()]}], lr=1e-3,
                  betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
    for step in range(4):
        g = torch.tensor([1.0, -0.5, 0.25], dtype=DT) * (step + 1)
        p.grad = g.clone()
        q.grad = g.clone() if step >= 2 else None
        ref.groups[0]["params"][0].grad = g.clone()
        ref.groups[1]["params"][0].grad = g.clone() if step >= 2 else None
        ours.step()
        ref.step()
    assert [g["step"] for g in ours.param_groups] == [4, 4]
    assert_same(p.detach(), ref.groups[0]["params"][0])
    assert_same(q.detach(), ref.groups[1]["params"][0])


def test_lamb_default_arguments():
    d = LAMB([nn.Parameter(torch.zeros(1))]).defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-6, 0.01)


def timm_optimizer(name):
    """timm's ``Lars`` or ``Lamb``, or skip the test where timm is not installed.

    ``import timm`` imports torchvision, and torchvision's PyPI wheels are CUDA builds whose operators do
    not load against the CPU torch wheel (``operator torchvision::nms does not exist``). timm's
    ``optim/lars.py`` and ``optim/lamb.py`` need only torch, so where the full import fails they are
    loaded from the installed package without running ``timm/__init__.py``: the same code, unchanged.
    CI installs ``timm`` with ``--no-deps`` for this (scripts/test.sh).
    """
    if "timm.optim" not in sys.modules:
        spec = importlib.util.find_spec("timm")
        if spec is None:
            if os.environ.get("CI"):  # scripts/test.sh installs it: a skip there would hide the parity check
                pytest.fail("timm is not installed in CI: scripts/test.sh must install timm==1.0.31 --no-deps")
            pytest.skip("timm is not installed")
        try:
            importlib.import_module("timm.optim")
        except Exception:  # ImportError (no torchvision), RuntimeError (torchvision's operators)
            root = spec.submodule_search_locations[0]
            for package, path in (("timm", root), ("timm.optim", f"{root}/optim")):
                stub = types.ModuleType(package)
                stub.__path__ = [path]
                sys.modules[package] = stub
    return getattr(importlib.import_module(f"timm.optim.{name.lower()}"), name)


@SCALES
@pytest.mark.parametrize("trust_clip", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_lars_matches_timm(momentum, trust_clip, scale):
    Lars = timm_optimizer("Lars")
    kw = dict(lr=0.5, momentum=momentum, weight_decay=0.1, trust_clip=trust_clip)
    groups = lambda p: make_groups(p, lr=0.5, group1={"weight_decay": 0.0})  # noqa: E731
    run_parity(lambda p: LARS(groups(p), trust_coefficient=0.02, **kw),
               lambda p: Lars(groups(p), trust_coeff=0.02, **kw), scale)


@SCALES
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lamb_matches_timm(weight_decay, scale):
    Lamb = timm_optimizer("Lamb")
    groups = lambda p: make_groups(p, lr=0.01, group1={"weight_decay": 0.0})  # noqa: E731
    run_parity(lambda p: LAMB(groups(p), lr=0.01, weight_decay=weight_decay),
               lambda p: Lamb(groups(p), lr=0.01, weight_decay=weight_decay, max_grad_norm=None), scale)


# ---------------------------------------------------------------------------------------------
# Step API, argument validation
# ---------------------------------------------------------------------------------------------
ALL = {"SGD": SGD, "RMSprop": RMSprop, "Adagrad": Adagrad, "Adam": Adam, "AdamW": AdamW, "LARS": LARS, "LAMB": LAMB}


@pytest.mark.parametrize("name", list(ALL))
def test_step_with_closure_returns_loss(name):
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=DT))
    opt = ALL[name]([w], lr=0.1, weight_decay=0.1) if name != "SGD" else SGD([w], lr=0.1, momentum=0.9)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()  # needs grad mode: step() runs under no_grad, the closure under enable_grad
        return loss

    before = w.detach().clone()
    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    assert not torch.equal(w.detach(), before)


@pytest.mark.parametrize("name", list(ALL))
def test_float32_params_work(name):
    w = nn.Parameter(torch.randn(4, 3))
    w.grad = torch.randn(4, 3)
    ALL[name]([w], lr=0.1).step()
    assert w.dtype == torch.float32 and torch.isfinite(w).all()


BAD_ARGS = [
    (SGD, dict(lr=-1), "lr must be >= 0"),
    (SGD, dict(momentum=-0.1), "momentum"),
    (SGD, dict(weight_decay=-1e-2), "weight_decay"),
    (SGD, dict(nesterov=True), "nesterov"),
    (SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
    (RMSprop, dict(lr=-1), "lr must be >= 0"),
    (RMSprop, dict(alpha=-0.5), "alpha"),
    (RMSprop, dict(eps=-1e-8), "eps"),
    (RMSprop, dict(weight_decay=-1), "weight_decay"),
    (RMSprop, dict(momentum=-1), "momentum"),
    (Adagrad, dict(lr=-1), "lr must be >= 0"),
    (Adagrad, dict(lr_decay=-0.1), "lr_decay must be >= 0"),
    (Adagrad, dict(weight_decay=-1), "weight_decay"),
    (Adagrad, dict(initial_accumulator_value=-0.1), "initial_accumulator_value must be >= 0"),
    (Adagrad, dict(eps=-1e-10), "eps"),
    (Adam, dict(lr=-1e-3), "lr must be >= 0"),
    (Adam, dict(eps=-1), "eps"),
    (Adam, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (Adam, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (Adam, dict(weight_decay=-0.1), "weight_decay"),
    (AdamW, dict(lr=-1), "lr must be >= 0"),
    (AdamW, dict(betas=(0.9, 1.5)), r"betas\[1\]"),
    (AdamW, dict(weight_decay=-0.01), "weight_decay"),
    (LARS, dict(lr=-1), "lr must be >= 0"),
    (LARS, dict(momentum=-0.9), "momentum"),
    (LARS, dict(weight_decay=-1), "weight_decay"),
    (LARS, dict(eps=-1), "eps"),
    (LARS, dict(trust_coefficient=-0.001), "trust_coefficient"),
    (LARS, dict(nesterov=True, momentum=0), "nesterov"),
    (LAMB, dict(lr=-1), "lr must be >= 0"),
    (LAMB, dict(eps=-1e-6), "eps"),
    (LAMB, dict(betas=(-0.1, 0.999)), r"betas\[0\]"),
    (LAMB, dict(betas=(0.9,)), "betas"),
    (LAMB, dict(weight_decay=-0.01), "weight_decay"),
]


@pytest.mark.parametrize("cls,kwargs,match", BAD_ARGS,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _ in BAD_ARGS])
def test_invalid_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([nn.Parameter(torch.zeros(2))], **kwargs)


def test_error_message_names_argument_and_range():
    with pytest.raises(ValueError) as err:
        Adam([nn.Parameter(torch.zeros(1))], lr=-1)
    assert str(err.value) == "Invalid learning rate: -1 (lr must be >= 0)"


# ---------------------------------------------------------------------------------------------
# Each optimizer file works copied alone, and reads like its formula
# ---------------------------------------------------------------------------------------------
MODULES = ["sgd", "rmsprop", "adagrad", "adam", "lars", "lamb"]
MODULE_OF = {"SGD": "sgd", "RMSprop": "rmsprop", "Adagrad": "adagrad", "Adam": "adam", "AdamW": "adam",
             "LARS": "lars", "LAMB": "lamb"}


def optimizer_source(module: str) -> str:
    return (Path(ftcourse.optim.__file__).parent / f"{module}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", MODULES)
def test_optimizer_module_imports_only_torch_and_the_standard_library(module):
    tree = ast.parse(optimizer_source(module))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}.py has a relative import (from {'.' * node.level}{node.module or ''})"
            roots.add(node.module.split(".")[0])
    assert roots - {"__future__", "torch"} <= set(sys.stdlib_module_names), roots
    assert "Copy alone." in ast.get_docstring(tree).splitlines()
    source = optimizer_source(module)
    assert "_foreach" not in source and "torch._" not in source  # no private torch API


def test_the_shared_private_module_is_gone():
    assert importlib.util.find_spec("ftcourse.optim._common") is None
    assert "_foreach" not in ftcourse.optim.__doc__
    assert sorted(ftcourse.optim.__all__) == sorted(ALL)


@pytest.mark.parametrize("name", list(ALL))
def test_optimizer_file_copied_alone_gives_the_same_updates(name, tmp_path):
    """Copy the one file into an otherwise empty package elsewhere: it imports, and steps as ours."""
    package = tmp_path / "elsewhere"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / f"{MODULE_OF[name]}.py").write_text(optimizer_source(MODULE_OF[name]), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        copied = getattr(importlib.import_module(f"elsewhere.{MODULE_OF[name]}"), name)
    finally:
        sys.path.remove(str(tmp_path))
        for key in [k for k in sys.modules if k == "elsewhere" or k.startswith("elsewhere.")]:
            del sys.modules[key]
    assert copied is not ALL[name]
    kw = dict(lr=0.01, weight_decay=0.1)
    run_parity(lambda p: copied(make_groups(p, lr=0.01), **kw), lambda p: ALL[name](make_groups(p, lr=0.01), **kw),
               scale=1.0)
