"""Argument validation of ftcourse.optim: every numeric argument of every optimizer is checked for its
type (a real number: Python or numpy, not None, a string, a bool or a Tensor) and its range (NaN
included), and the error names the argument and the values it may take."""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from ftcourse.optim import LAMB, LARS, SGD, Adagrad, Adam, AdamW, RMSprop

# Parity and argument checks run LARS and LAMB with weight decay 0 everywhere on purpose; their
# constructors then warn that the trust ratio never applies (test_optim_args checks that warning).
pytestmark = pytest.mark.filterwarnings("ignore:(LARS|LAMB). no parameter group has a non-zero weight_decay:UserWarning")

ALL = [SGD, RMSprop, Adagrad, Adam, AdamW, LARS, LAMB]

# Every numeric constructor argument (betas apart), with its allowed range as the messages word it.
NUMERIC = {
    SGD: {"lr": ">= 0", "momentum": ">= 0", "dampening": "in [0, 1]", "weight_decay": ">= 0"},
    RMSprop: {"lr": ">= 0", "alpha": "in [0, 1]", "eps": ">= 0", "weight_decay": ">= 0", "momentum": ">= 0"},
    Adagrad: {"lr": ">= 0", "lr_decay": ">= 0", "weight_decay": ">= 0", "initial_accumulator_value": ">= 0",
              "eps": ">= 0"},
    Adam: {"lr": ">= 0", "eps": ">= 0", "weight_decay": ">= 0"},
    AdamW: {"lr": ">= 0", "eps": ">= 0", "weight_decay": ">= 0"},
    LARS: {"lr": ">= 0", "momentum": ">= 0", "dampening": "in [0, 1]", "weight_decay": ">= 0",
           "trust_coefficient": ">= 0", "eps": ">= 0"},
    LAMB: {"lr": ">= 0", "eps": ">= 0", "weight_decay": ">= 0"},
}
CASES = [(cls, name, allowed) for cls, args in NUMERIC.items() for name, allowed in args.items()]
CASE_IDS = [f"{cls.__name__}-{name}" for cls, name, _ in CASES]
WITH_BETAS = [Adam, AdamW, LAMB]


def build(cls, **kwargs):
    return cls([nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("value", [None, "0.1", torch.tensor(0.1), True, [0.1]],
                         ids=["None", "str", "Tensor", "bool", "list"])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_lr_that_is_not_a_real_number_raises_type_error(cls, value):
    with pytest.raises(TypeError, match=r"\(lr must be a real number, not "):
        build(cls, lr=value)


@pytest.mark.parametrize("cls,name,allowed", CASES, ids=CASE_IDS)
def test_every_numeric_argument_must_be_a_real_number(cls, name, allowed):
    with pytest.raises(TypeError, match=rf"^Invalid {name}: '0\.1' \({name} must be a real number, not str\)$"):
        build(cls, **{name: "0.1"})


@pytest.mark.parametrize("cls,name,allowed", CASES, ids=CASE_IDS)
def test_negative_values_raise_value_error(cls, name, allowed):
    with pytest.raises(ValueError, match=rf": -0\.5 \({name} must be {re.escape(allowed)}\)$"):
        build(cls, **{name: -0.5})


@pytest.mark.parametrize("nan", [math.nan, np.float64("nan"), np.float32("nan")], ids=["float", "np64", "np32"])
@pytest.mark.parametrize("cls,name,allowed", CASES, ids=CASE_IDS)
def test_nan_raises_value_error(cls, name, allowed, nan):
    with pytest.raises(ValueError, match=rf": nan \({name} must be "):
        build(cls, **{name: nan})


@pytest.mark.parametrize("cls", WITH_BETAS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("betas,index", [((1.0, 0.999), 0), ((0.9, 1.0), 1), ((-0.1, 0.999), 0),
                                          ((0.9, 1.5), 1), ((math.nan, 0.999), 0), ((0.9, math.nan), 1)],
                         ids=str)
def test_betas_outside_zero_one_raise_value_error(cls, betas, index):
    with pytest.raises(ValueError, match=rf"^Invalid beta parameter at index {index}: .* "
                                         rf"\(betas\[{index}\] must be in \[0, 1\)\)$"):
        build(cls, betas=betas)


@pytest.mark.parametrize("cls", WITH_BETAS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9, None, "ab"], ids=str)
def test_betas_that_are_not_a_pair_raise_value_error(cls, betas):
    with pytest.raises(ValueError, match=r"\(betas must be a pair \(beta1, beta2\)\)$"):
        build(cls, betas=betas)


@pytest.mark.parametrize("cls", WITH_BETAS, ids=lambda c: c.__name__)
def test_betas_must_hold_real_numbers(cls):
    with pytest.raises(TypeError, match=r"\(betas\[0\] must be a real number, not str\)"):
        build(cls, betas=("0.9", 0.999))


def test_message_names_argument_and_allowed_values():
    with pytest.raises(ValueError) as err:
        build(RMSprop, alpha=1.5)
    assert str(err.value) == "Invalid alpha value: 1.5 (alpha must be in [0, 1])"
    with pytest.raises(TypeError) as err:
        build(Adam, lr=None)
    assert str(err.value) == "Invalid lr: None (lr must be a real number, not NoneType)"
    with pytest.raises(ValueError) as err:
        build(Adagrad, initial_accumulator_value=-1)
    assert str(err.value) == ("Invalid initial_accumulator_value value: -1 "
                              "(initial_accumulator_value must be >= 0)")


@pytest.mark.parametrize("cls", [SGD, LARS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dampening", [math.nan, 1.5, -0.1], ids=str)
def test_dampening_outside_zero_one_raises_value_error(cls, dampening):
    with pytest.raises(ValueError, match=r"Invalid dampening value: .* \(dampening must be in \[0, 1\]\)"):
        build(cls, momentum=0.9, dampening=dampening)


@pytest.mark.parametrize("alpha", [1.0001, -1e-9, math.inf], ids=str)
def test_rmsprop_alpha_outside_zero_one_raises_value_error(alpha):
    with pytest.raises(ValueError, match=r"\(alpha must be in \[0, 1\]\)"):
        build(RMSprop, alpha=alpha)


@pytest.mark.parametrize("name", ["lr_decay", "initial_accumulator_value"])
def test_adagrad_negative_lr_decay_and_accumulator_raise_value_error(name):
    with pytest.raises(ValueError, match=rf"\({name} must be >= 0\)"):
        build(Adagrad, **{name: -1e-3})


def test_bounds_themselves_are_allowed():
    build(RMSprop, alpha=0.0)
    build(RMSprop, alpha=1.0)
    build(SGD, momentum=0.9, dampening=1.0)
    build(LARS, momentum=0.9, dampening=1.0)
    for cls in WITH_BETAS:
        build(cls, betas=(0.0, 0.0))
        build(cls, betas=[0.5, 0.5])  # a list is a pair too
    for cls, args in NUMERIC.items():
        build(cls, **{name: 0 for name in args})


@pytest.mark.parametrize("cls,name,allowed", CASES, ids=CASE_IDS)
def test_numpy_scalars_are_accepted_and_stored_as_python_floats(cls, name, allowed):
    for value in (np.float64(0.5), np.int64(1), np.float32(0.25)):  # each within every range
        opt = build(cls, **{name: value})
        stored = opt.defaults[name]
        assert type(stored) is float and stored == float(value)


@pytest.mark.parametrize("cls", WITH_BETAS, ids=lambda c: c.__name__)
def test_numpy_betas_are_accepted(cls):
    opt = build(cls, betas=np.array([0.9, 0.999]).tolist())
    assert opt.defaults["betas"] == (0.9, 0.999)
    opt = build(cls, betas=(np.float64(0.9), np.float32(0.5)))
    assert all(type(b) is float for b in opt.defaults["betas"])


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_numpy_arguments_give_the_same_steps_and_a_loadable_state_dict(cls):
    """np.float64 / np.int64 arguments step exactly as Python floats, and the state dict still loads with
    ``torch.load(weights_only=True)`` (which refuses numpy scalars)."""
    numpy_kw = {name: np.float64(0.01) for name in NUMERIC[cls]}
    if "momentum" in numpy_kw:
        numpy_kw["momentum"] = np.int64(0)
    python_kw = {name: float(value) for name, value in numpy_kw.items()}
    results = []
    for kw in (numpy_kw, python_kw):
        w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        opt = cls([w], **kw)
        for step in range(3):
            w.grad = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64) * (step + 1)
            opt.step()
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
        results.append(w.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("cls", [LARS, LAMB])
def test_layerwise_optimizers_warn_when_no_group_has_weight_decay(cls):
    """LARS and LAMB (as timm and NVIDIA's implementations) adapt a tensor's step only in groups with a
    non-zero weight decay: with none anywhere they are plain SGD and plain Adam, which deserves a word."""
    p, q = nn.Parameter(torch.ones(3, 2)), nn.Parameter(torch.zeros(2))
    with pytest.warns(UserWarning, match=rf"{cls.__name__}: no parameter group has a non-zero weight_decay"):
        cls([{"params": [p]}, {"params": [q]}], weight_decay=0.0)
    with pytest.warns(UserWarning, match="trust ratio never applies"):
        cls([{"params": [p], "weight_decay": 0}, {"params": [q], "weight_decay": 0.0}], weight_decay=0.01)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls([{"params": [p], "weight_decay": 0.01}, {"params": [q], "weight_decay": 0.0}])  # the usual split
        cls([{"params": [p]}, {"params": [q], "weight_decay": 0.0}], weight_decay=1e-4)
