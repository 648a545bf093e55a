"""Resuming from a state_dict: k steps, save, rebuild model and optimizer, load, N − k more steps must
give exactly the parameters of N uninterrupted steps, for every optimizer of ftcourse.optim; and a state
dict saved by torch.optim's namesake loads into ours (and ours into torch's) and training goes on as
if nothing had changed."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from ftcourse.optim import LAMB, LARS, SGD, Adagrad, Adam, AdamW, RMSprop

N_STEPS, STOP_AT = 7, 3

# Configurations that give each optimizer a non-trivial state (buffers, amsgrad maxima...).
CONFIGS = {
    "SGD": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "RMSprop": (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
    "Adagrad": (Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)),
    "Adam": (Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    "AdamW": (AdamW, dict(lr=0.01)),
    "LARS": (LARS, dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_clip=True)),
    "LAMB": (LAMB, dict(lr=0.01)),
}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    nn.init.zeros_(model[0].bias)  # zero-norm parameter
    # A parameter outside the forward pass: its .grad stays None (Sequential runs modules only).
    model.register_parameter("unused", nn.Parameter(torch.randn(2, 2, dtype=torch.float64)))
    return model


def make_optimizer(name: str, model: nn.Module, cls=None):
    """``CONFIGS[name]``'s optimizer (or ``cls`` with the same arguments) over two parameter groups."""
    default_cls, kw = CONFIGS[name]
    cls = cls or default_cls
    decay = [model[0].weight, model[2].weight, model.unused]
    no_decay = [model[0].bias, model[2].bias]
    groups = [{"params": decay}, {"params": no_decay, "lr": kw["lr"] * 0.3, "weight_decay": 0.0}]
    return cls(groups, **kw)


def train_steps(model, optimizer, steps):
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_from_state_dict_gives_identical_parameters(name):
    model = make_model()
    optimizer = make_optimizer(name, model)
    train_steps(model, optimizer, range(N_STEPS))

    interrupted = make_model()
    optimizer = make_optimizer(name, interrupted)
    train_steps(interrupted, optimizer, range(STOP_AT))
    buffer = io.BytesIO()
    torch.save({"model": interrupted.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    del interrupted, optimizer

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain tensors, numbers and tuples only
    resumed = make_model()
    for p in resumed.parameters():  # make sure the weights really come from the checkpoint
        p.data.add_(1.0)
    resumed.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(name, resumed)
    optimizer.load_state_dict(checkpoint["optimizer"])
    train_steps(resumed, optimizer, range(STOP_AT, N_STEPS))

    for (key, expected), actual in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=lambda m: f"{key}: {m}")
    assert resumed.unused not in optimizer.state


def test_lamb_group_step_survives_state_dict():
    model = make_model()
    optimizer = make_optimizer("LAMB", model)
    train_steps(model, optimizer, range(STOP_AT))
    saved = optimizer.state_dict()
    assert [g["step"] for g in saved["param_groups"]] == [STOP_AT, STOP_AT]
    fresh = make_optimizer("LAMB", make_model())
    fresh.load_state_dict(saved)
    assert [g["step"] for g in fresh.param_groups] == [STOP_AT, STOP_AT]


def test_a_wrong_start_would_be_detected():
    """Sanity check of the test itself: resuming *without* the optimizer state does not match."""
    model = make_model()
    optimizer = make_optimizer("Adam", model)
    train_steps(model, optimizer, range(N_STEPS))
    restarted = make_model()
    optimizer = make_optimizer("Adam", restarted)
    train_steps(restarted, optimizer, range(STOP_AT))
    optimizer = make_optimizer("Adam", restarted)  # fresh moments and step counts
    train_steps(restarted, optimizer, range(STOP_AT, N_STEPS))
    assert not torch.equal(model[0].weight, restarted[0].weight)


def assert_same_parameters(actual: nn.Module, expected: nn.Module):
    # ours and torch's run the same operations in the same order, so the float64 parameters are
    # expected bit for bit; the tolerance of test_optim.assert_same only leaves room for a 1-ulp
    # difference should a torch version reorder an operation.
    for (key, want), got in zip(expected.state_dict().items(), actual.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-15, msg=lambda m: f"{key}: {m}")


TORCH_NAMESAKES = ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW"]


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("name", TORCH_NAMESAKES)
def test_state_dict_of_torch_namesake_loads_and_training_continues(name, direction):
    """k steps with one implementation, save, load into the other, N − k more steps with each: the same
    parameters. torch's state dicts lack our own group keys (AdamW: ``bias_correction``) and store
    ``step`` as a float32 tensor; both are fixed on load."""
    ours_cls, torch_cls = CONFIGS[name][0], getattr(torch.optim, name)
    first_cls, second_cls = (torch_cls, ours_cls) if direction == "torch_to_ours" else (ours_cls, torch_cls)

    model = make_model()
    first = make_optimizer(name, model, first_cls)
    train_steps(model, first, range(STOP_AT))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": first.state_dict()}, buffer)
    train_steps(model, first, range(STOP_AT, N_STEPS))  # the first implementation goes on

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    switched = make_model()
    switched.load_state_dict(checkpoint["model"])
    second = make_optimizer(name, switched, second_cls)
    second.load_state_dict(checkpoint["optimizer"])
    train_steps(switched, second, range(STOP_AT, N_STEPS))  # the other one takes over

    assert_same_parameters(switched, model)
    if direction == "torch_to_ours" and name != "SGD":
        steps = [second.state[p]["step"] for p in switched[0].parameters()]
        assert steps == [N_STEPS, N_STEPS] and all(type(s) is int for s in steps)


def test_adamw_from_torch_without_loading_the_state_would_differ():
    """Sanity check of the test above: ours with fresh moments after torch's steps does not match."""
    model = make_model()
    reference = make_optimizer("AdamW", model, torch.optim.AdamW)
    train_steps(model, reference, range(N_STEPS))
    switched = make_model()
    train_steps(switched, make_optimizer("AdamW", switched, torch.optim.AdamW), range(STOP_AT))
    train_steps(switched, make_optimizer("AdamW", switched), range(STOP_AT, N_STEPS))
    assert not torch.equal(model[0].weight, switched[0].weight)


def test_missing_group_keys_are_filled_from_the_defaults():
    """A group saved without one of our keys (torch's AdamW has no ``bias_correction``) gets the default."""
    model = make_model()
    optimizer = make_optimizer("AdamW", model, torch.optim.AdamW)
    train_steps(model, optimizer, range(STOP_AT))
    saved = optimizer.state_dict()
    assert all("bias_correction" not in group for group in saved["param_groups"])
    ours = make_optimizer("AdamW", model)
    ours.load_state_dict(saved)
    assert [group["bias_correction"] for group in ours.param_groups] == [True, True]
    assert [group["decoupled_weight_decay"] for group in ours.param_groups] == [True, True]
    train_steps(model, ours, range(STOP_AT, N_STEPS))  # was KeyError('bias_correction')


def assert_same_tree(actual, expected, where="state_dict"):
    """Equal nested dicts/lists/tuples, with tensors equal bit for bit (same dtype too) and numbers of
    the same type (an int step count must not come back as a tensor or a float)."""
    if torch.is_tensor(expected):
        assert torch.is_tensor(actual), f"{where}: {type(actual).__name__}, expected a tensor"
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), \
            f"{where}: keys {sorted(map(str, actual))} != {sorted(map(str, expected))}"
        for key in expected:
            assert_same_tree(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_tree(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_every_optimizer_of_the_package_is_covered():
    import ftcourse.optim

    assert set(CONFIGS) == set(ftcourse.optim.__all__)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_round_trip_is_exact(name):
    """state_dict -> a new optimizer -> load_state_dict -> state_dict gives the same dict (torch's and
    timm's round-trip tests), and one more step after the reload is the original's next step.

    Before the fix every group came back with an extra ``differentiable`` key: torch's
    ``Optimizer.__setstate__`` (which ``load_state_dict`` calls) adds it to ``self.defaults``, and the
    group-key filling copied it into every group."""
    model = make_model()
    optimizer = make_optimizer(name, model)
    train_steps(model, optimizer, range(STOP_AT))
    saved = copy.deepcopy(optimizer.state_dict())  # deep: the state tensors change in place on the next step

    twin = copy.deepcopy(model)
    reloaded = make_optimizer(name, twin)
    # a copy, as from a checkpoint file: load_state_dict keeps the very tensors it is given where their
    # dtype and device already fit, and the original's next step would change them in place
    reloaded.load_state_dict(copy.deepcopy(saved))
    assert_same_tree(reloaded.state_dict(), saved)
    # and again: a reloaded optimizer reloads the same way
    again = make_optimizer(name, copy.deepcopy(twin))
    again.load_state_dict(copy.deepcopy(reloaded.state_dict()))
    assert_same_tree(again.state_dict(), saved)

    train_steps(model, optimizer, [STOP_AT])
    train_steps(twin, reloaded, [STOP_AT])
    for (key, expected), actual in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=lambda m: f"{key}: {m}")
    assert_same_tree(reloaded.state_dict(), optimizer.state_dict())
