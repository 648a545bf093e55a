"""Resuming from a state_dict: k steps, save, rebuild model and optimizer, load, N − k more steps must
give exactly the parameters of N uninterrupted steps, for every optimizer of ftcourse.optim."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from ftcourse.optim import LAMB, LARS, SGD, Adam, AdamW, RMSprop

N_STEPS, STOP_AT = 7, 3

# Configurations that give each optimizer a non-trivial state (buffers, amsgrad maxima...).
CONFIGS = {
    "SGD": (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "RMSprop": (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01)),
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


def make_optimizer(name: str, model: nn.Module):
    cls, kw = CONFIGS[name]
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
