"""ftcourse.schedules against transformers.get_scheduler and torch's StepLR/ExponentialLR, step by
step and per parameter group; argument errors; the trace and plot helpers."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ftcourse.schedules import SCHEDULE_NAMES, get_schedule, lr_trace, plot_schedules

transformers = pytest.importorskip("transformers")

BASE_LR, GROUP1_LR = 1e-3, 3e-4
EXTRA_STEPS = 3  # also compare a few steps past num_training_steps
PAIRS = [(0, 1), (0, 10), (3, 10), (1, 7), (10, 10), (4, 17)]  # (num_warmup_steps, num_training_steps)


def make_optimizer():
    """Two groups with different lrs (as layer-wise lr decay would give); defaults["lr"] = BASE_LR."""
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": GROUP1_LR}], lr=BASE_LR)


def lrs_per_step(scheduler, optimizer, steps):
    """[[lr of each group] for each optimizer step]: the lr *used* by steps 0, 1, ..."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()  # no gradients: a no-op that keeps LambdaLR's order check quiet
        scheduler.step()
    return out


# (name, scheduler_specific_kwargs) compared against transformers.get_scheduler
TRANSFORMERS_CASES = [
    ("constant", {}),
    ("constant_with_warmup", {}),
    ("linear", {}),
    ("cosine", {}),
    ("cosine", {"num_cycles": 1.5}),
    ("cosine_with_restarts", {}),
    ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {}),
    ("polynomial", {"power": 2.0, "lr_end": 1e-5}),
    ("inverse_sqrt", {}),
    ("inverse_sqrt", {"timescale": 4}),
    ("warmup_stable_decay", {"num_decay_steps": 0}),
    ("warmup_stable_decay", {"num_decay_steps": 1, "decay_type": "linear", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", {"num_decay_steps": 0, "warmup_type": "cosine", "decay_type": "1-sqrt",
                             "num_stable_steps": 2}),
]


@pytest.mark.parametrize("warmup,total", PAIRS, ids=[f"W{w}-N{n}" for w, n in PAIRS])
@pytest.mark.parametrize("name,kwargs", TRANSFORMERS_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in TRANSFORMERS_CASES])
def test_matches_transformers_get_scheduler(name, kwargs, warmup, total):
    kwargs = dict(kwargs)
    if name == "warmup_stable_decay" and "num_stable_steps" not in kwargs:
        kwargs["num_decay_steps"] = min(kwargs["num_decay_steps"] + (total - warmup) // 2, total - warmup)
    if name == "polynomial" and warmup == total:
        pytest.skip("transformers divides by zero here (see test_polynomial_with_warmup_equal_to_total)")
    if name == "warmup_stable_decay" and warmup + kwargs.get("num_stable_steps", 0) + kwargs["num_decay_steps"] > total:
        # transformers accepts stages longer than the training (its decay then never ends); ours refuses them
        with pytest.raises(ValueError, match="longer than the training"):
            get_schedule(name, make_optimizer(), warmup, total, **kwargs)
        return
    ours_opt, ref_opt = make_optimizer(), make_optimizer()
    ours = get_schedule(name, ours_opt, warmup, total, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wsd warns when both num_training_steps and num_stable_steps are set
        ref = transformers.get_scheduler(name, ref_opt, num_warmup_steps=warmup, num_training_steps=total,
                                         scheduler_specific_kwargs=kwargs)
    steps = total + EXTRA_STEPS
    torch.testing.assert_close(lrs_per_step(ours, ours_opt, steps), lrs_per_step(ref, ref_opt, steps),
                               rtol=1e-12, atol=0)


def test_polynomial_with_warmup_equal_to_total():
    """transformers raises ZeroDivisionError at step N when W == N; ours ends at lr_end (per group ratio)."""
    opt = make_optimizer()
    sched = get_schedule("polynomial", opt, 5, 5, lr_end=1e-5)
    lrs = lrs_per_step(sched, opt, 8)
    assert lrs[0] == [0.0, 0.0]
    for k in range(5, 8):
        torch.testing.assert_close(lrs[k], [1e-5, 1e-5 * GROUP1_LR / BASE_LR])


def test_polynomial_scales_by_the_default_lr():
    """As transformers: lr_end is reached by the group whose lr is optimizer.defaults["lr"]."""
    opt = make_optimizer()
    sched = get_schedule("polynomial", opt, 0, 4, lr_end=1e-4)
    final = lrs_per_step(sched, opt, 5)[-1]
    torch.testing.assert_close(final, [1e-4, 1e-4 * GROUP1_LR / BASE_LR])


@pytest.mark.parametrize("name,kwargs,torch_cls", [
    ("step", {"step_size": 3}, torch.optim.lr_scheduler.StepLR),
    ("step", {"step_size": 2, "gamma": 0.5}, torch.optim.lr_scheduler.StepLR),
    ("exponential", {"gamma": 0.8}, torch.optim.lr_scheduler.ExponentialLR),
])
def test_step_and_exponential_match_torch_without_warmup(name, kwargs, torch_cls):
    ours_opt, ref_opt = make_optimizer(), make_optimizer()
    ours = get_schedule(name, ours_opt, 0, 12, **kwargs)
    ref = torch_cls(ref_opt, **kwargs)
    torch.testing.assert_close(lrs_per_step(ours, ours_opt, 15), lrs_per_step(ref, ref_opt, 15), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name,kwargs,torch_cls", [
    ("step", {"step_size": 3, "gamma": 0.5}, torch.optim.lr_scheduler.StepLR),
    ("exponential", {"gamma": 0.8}, torch.optim.lr_scheduler.ExponentialLR),
])
def test_step_and_exponential_count_from_the_end_of_warmup(name, kwargs, torch_cls):
    warmup = 4
    ours_opt, ref_opt = make_optimizer(), make_optimizer()
    ours = lrs_per_step(get_schedule(name, ours_opt, warmup, 15, **kwargs), ours_opt, 15)
    ref = lrs_per_step(torch_cls(ref_opt, **kwargs), ref_opt, 15 - warmup)
    torch.testing.assert_close(ours[:warmup], [[BASE_LR * s / warmup, GROUP1_LR * s / warmup] for s in range(warmup)])
    torch.testing.assert_close(ours[warmup:], ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_group_lr_ratios_survive(name):
    """LambdaLR multiplies each group's own initial lr: the ratio between groups never changes."""
    kwargs = {"step": {"step_size": 2}, "exponential": {"gamma": 0.9},
              "warmup_stable_decay": {"num_decay_steps": 3}}.get(name, {})
    opt = make_optimizer()
    for lr0, lr1 in lrs_per_step(get_schedule(name, opt, 2, 9, **kwargs), opt, 9)[1:]:
        assert lr1 == pytest.approx(lr0 * GROUP1_LR / BASE_LR, rel=1e-12)


def test_schedule_names():
    assert SCHEDULE_NAMES == ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                              "polynomial", "inverse_sqrt", "step", "exponential", "warmup_stable_decay")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="name") as err:
        get_schedule("cosine_annealing", make_optimizer(), 0, 10)
    for name in SCHEDULE_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("warmup,total,match", [
    (-1, 10, "num_warmup_steps"),
    (0, 0, "num_training_steps"),
    (0, -5, "num_training_steps"),
    (11, 10, "num_warmup_steps"),
])
def test_bad_step_counts_raise(warmup, total, match):
    with pytest.raises(ValueError, match=match):
        get_schedule("linear", make_optimizer(), warmup, total)


@pytest.mark.parametrize("warmup,total,match", [
    (0.1, 10, "num_warmup_steps"),  # a ratio is not a number of steps
    (0, 10.0, "num_training_steps"),
    (True, 10, "num_warmup_steps"),  # bool is an int subclass, but not a count
    (0, np.bool_(True), "num_training_steps"),
    (0, "10", "num_training_steps"),
])
def test_step_counts_of_the_wrong_type_raise_type_error(warmup, total, match):
    with pytest.raises(TypeError, match=match + ".*int"):
        get_schedule("linear", make_optimizer(), warmup, total)


def test_numpy_integers_are_step_counts():
    opt, ref_opt = make_optimizer(), make_optimizer()
    ours = get_schedule("linear", opt, num_warmup_steps=np.int64(2), num_training_steps=np.int64(10))
    ref = get_schedule("linear", ref_opt, 2, 10)
    assert lrs_per_step(ours, opt, 12) == lrs_per_step(ref, ref_opt, 12)
    assert lr_trace("step", np.int32(0), np.int64(5), step_size=np.int64(2), gamma=np.float64(0.5)) == \
        [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_trace("inverse_sqrt", 2, 6, timescale=np.int64(4)) == lr_trace("inverse_sqrt", 2, 6, timescale=4)
    wsd = dict(num_decay_steps=np.int64(3), num_stable_steps=np.uint8(2))
    assert lr_trace("warmup_stable_decay", 2, 8, **wsd) == lr_trace("warmup_stable_decay", 2, 8, num_decay_steps=3,
                                                                  num_stable_steps=2)
    # the bound values are Python ints: nothing numpy leaks into the schedule's arithmetic
    sched = get_schedule("step", make_optimizer(), np.int64(1), 10, step_size=np.int64(3))
    assert type(sched.lr_lambdas[0].keywords["step_size"]) is int
    assert type(sched.lr_lambdas[0].keywords["num_warmup_steps"]) is int


@pytest.mark.parametrize("name,kwargs,match", [
    ("linear", {"num_cycles": 2}, "num_cycles"),
    ("cosine", {"power": 2}, "power"),
    ("step", {}, "step_size"),
    ("step", {"step_size": 0}, "step_size"),
    ("exponential", {}, "gamma"),
    ("warmup_stable_decay", {}, "num_decay_steps"),
    ("warmup_stable_decay", {"num_decay_steps": 9}, "num_decay_steps"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "decay_type": "exp"}, "decay_type"),
    ("polynomial", {"lr_end": 1.0}, "lr_end"),
])
def test_bad_schedule_kwargs_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_schedule(name, make_optimizer(), 2, 10, **kwargs)


@pytest.mark.parametrize("stable, decay", [(7, 2), (0, 9), (8, 1), (20, 0)])
def test_wsd_stages_longer_than_the_training_are_refused(stable, decay):
    """W + S + D > N: the decay would still be under way (or not started) when training ends, so the
    run would end above min_lr_ratio, silently. W = 2, N = 10 here."""
    with pytest.raises(ValueError, match=rf"num_warmup_steps \+ num_stable_steps \+ num_decay_steps = "
                                         rf"2 \+ {stable} \+ {decay} = {2 + stable + decay}.*longer than the training "
                                         rf"\(num_training_steps = 10\)"):
        get_schedule("warmup_stable_decay", make_optimizer(), 2, 10, num_stable_steps=stable, num_decay_steps=decay)
    # stages that fit (the last steps then stay at min_lr_ratio) are fine, and end at it
    trace = lr_trace("warmup_stable_decay", 2, 10, num_stable_steps=3, num_decay_steps=4, min_lr_ratio=0.1)
    assert trace[-1] == pytest.approx(0.1)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("name,kwargs,allowed", [
    ("step", {"step_size": 2, "gamma": 0.0}, "gamma must be a finite number > 0"),
    ("step", {"step_size": 2, "gamma": -0.5}, "gamma must be a finite number > 0"),
    ("step", {"step_size": 2, "gamma": NAN}, "gamma must be a finite number > 0"),
    ("exponential", {"gamma": 0}, "gamma must be a finite number > 0"),
    ("exponential", {"gamma": -1.0}, "gamma must be a finite number > 0"),
    ("exponential", {"gamma": NAN}, "gamma must be a finite number > 0"),
    ("exponential", {"gamma": INF}, "gamma must be a finite number > 0"),
    ("cosine", {"num_cycles": NAN}, "num_cycles must be a finite number"),
    ("cosine", {"num_cycles": INF}, "num_cycles must be a finite number"),
    ("cosine_with_restarts", {"num_cycles": NAN}, "num_cycles must be a finite number"),
    ("cosine_with_restarts", {"num_cycles": -INF}, "num_cycles must be a finite number"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "num_cycles": NAN}, "num_cycles must be a finite number"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "min_lr_ratio": -0.1}, r"min_lr_ratio must be a number in \[0, 1\]"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "min_lr_ratio": 1.5}, r"min_lr_ratio must be a number in \[0, 1\]"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "min_lr_ratio": NAN}, r"min_lr_ratio must be a number in \[0, 1\]"),
    ("polynomial", {"power": -1.0}, "power must be a finite number >= 0"),
    ("polynomial", {"power": NAN}, "power must be a finite number >= 0"),
    ("polynomial", {"power": INF}, "power must be a finite number >= 0"),
])
def test_bad_schedule_numbers_raise_value_error(name, kwargs, allowed):
    with pytest.raises(ValueError, match=allowed):
        get_schedule(name, make_optimizer(), 2, 10, **kwargs)


@pytest.mark.parametrize("name,kwargs,match", [
    ("step", {"step_size": 2.0}, "step_size"),
    ("step", {"step_size": True}, "step_size"),
    ("step", {"step_size": 2, "gamma": "0.5"}, "gamma"),
    ("exponential", {"gamma": True}, "gamma"),
    ("cosine", {"num_cycles": "0.5"}, "num_cycles"),
    ("cosine_with_restarts", {"num_cycles": None}, "num_cycles"),
    ("polynomial", {"power": "2"}, "power"),
    ("polynomial", {"lr_end": "0"}, "lr_end"),
    ("inverse_sqrt", {"timescale": 4.0}, "timescale"),
    ("warmup_stable_decay", {"num_decay_steps": 2.0}, "num_decay_steps"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "min_lr_ratio": "0"}, "min_lr_ratio"),
    ("warmup_stable_decay", {"num_decay_steps": 2, "decay_type": 1}, "decay_type"),
])
def test_schedule_arguments_of_the_wrong_type_raise_type_error(name, kwargs, match):
    with pytest.raises(TypeError, match=match):
        get_schedule(name, make_optimizer(), 2, 10, **kwargs)


def test_edge_values_that_stay_allowed():
    # gamma > 1 (torch allows a growing lr), power 0, min_lr_ratio 0 and 1, num_cycles 0 and numpy floats
    assert lr_trace("exponential", 0, 3, gamma=2.0) == [1.0, 2.0, 4.0]
    assert lr_trace("polynomial", 0, 3, power=0.0) == pytest.approx([1.0, 1.0, 1.0])
    assert lr_trace("warmup_stable_decay", 0, 4, num_decay_steps=2, min_lr_ratio=1.0) == [1.0] * 4
    assert lr_trace("warmup_stable_decay", 0, 4, num_decay_steps=2, min_lr_ratio=np.float64(0.0))[0] == 1.0
    assert lr_trace("cosine", 0, 3, num_cycles=0) == [1.0, 1.0, 1.0]
    assert lr_trace("cosine", 0, 3, num_cycles=np.float32(0.5)) == lr_trace("cosine", 0, 3)



# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def test_lr_trace():
    assert lr_trace("linear", 2, 6) == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
    assert lr_trace("constant_with_warmup", 2, 4, base_lr=0.1) == [0.0, 0.05, 0.1, 0.1]
    assert lr_trace("step", 0, 5, step_size=2, gamma=0.5) == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_plot_schedules_draws_one_line_per_schedule():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_schedules(["linear", "cosine", "step"], 20, 4, schedule_kwargs={"step": {"step_size": 5}})
    assert [line.get_label() for line in ax.get_lines()] == ["linear", "cosine", "step", "end of warmup"]
    plt.close(ax.figure)
    _, ax = plt.subplots()
    assert plot_schedules({"mine": [0.1, 0.2, 0.3]}, 3, ax=ax) is ax
    assert len(ax.get_lines()) == 1
    plt.close(ax.figure)
