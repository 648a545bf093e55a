"""Learning-rate schedules: pure functions of the step, wrapped in ``LambdaLR``.

Copy alone.
Into one package folder: ``python -m ftcourse copy schedules --into mypkg/``.

Each schedule is a module-level function ``f(step, **params) -> multiplier``. :func:`get_schedule`
binds its parameters with ``functools.partial`` and wraps it in
``torch.optim.lr_scheduler.LambdaLR``, which sets each parameter group's lr to *that group's own*
initial lr times the multiplier, so per-group lrs (layer-wise lr decay) keep their ratios.

The names and formulas follow ``transformers.optimization`` (``get_scheduler``, transformers 5):
``constant``, ``constant_with_warmup``, ``linear``, ``cosine``, ``cosine_with_restarts``,
``polynomial``, ``inverse_sqrt`` and ``warmup_stable_decay`` give the same lrs step by step, with
the same keyword arguments. ``step`` and ``exponential`` give torch's ``StepLR`` and
``ExponentialLR`` after an optional linear warmup (their step count starts at the end of warmup).

Conventions (s = number of ``scheduler.step()`` calls so far, W warmup steps, N training steps):
the lr used by the k-th optimizer step (k from 0) is the multiplier at s = k, so with W > 0 the
first optimizer step uses lr 0. Warmup is linear, ``s / max(1, W)`` for s < W. Call
``scheduler.step()`` once per optimizer step (and not when a ``GradScaler`` skipped the step).

References: Goyal et al. 2017, "Accurate, Large Minibatch SGD" (linear warmup); Loshchilov & Hutter
2017, "SGDR: Stochastic Gradient Descent with Warm Restarts" (cosine, restarts); Vaswani et al.
2017, "Attention Is All You Need" (inverse square root); Devlin et al. 2019, BERT's
``optimization.py`` (polynomial decay, power 1 = linear); Hu et al. 2024, "MiniCPM" (arXiv:2404.06395)
and Hägele et al. 2024 (arXiv:2405.18392) for warmup-stable-decay.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULE_NAMES",
    "get_schedule",
    "lr_trace",
    "plot_schedules",
    "constant_multiplier",
    "constant_with_warmup_multiplier",
    "linear_multiplier",
    "cosine_multiplier",
    "cosine_with_restarts_multiplier",
    "polynomial_multiplier",
    "inverse_sqrt_multiplier",
    "step_multiplier",
    "exponential_multiplier",
    "warmup_stable_decay_multiplier",
]

SCHEDULE_NAMES = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "step",
    "exponential",
    "warmup_stable_decay",
)

_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


# ---------------------------------------------------------------------------------------------
# The schedules: pure functions of the step
# ---------------------------------------------------------------------------------------------
def _warmup(step: int, num_warmup_steps: int) -> float:
    return float(step) / float(max(1, num_warmup_steps))


def constant_multiplier(step: int) -> float:
    """1 at every step (no warmup: transformers' ``constant`` ignores ``num_warmup_steps``)."""
    return 1.0


def constant_with_warmup_multiplier(step: int, *, num_warmup_steps: int) -> float:
    """Linear warmup ``s/W``, then 1."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return 1.0


def linear_multiplier(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    """Linear warmup, then linear decay to 0 at ``N``: ``max(0, (N − s)/max(1, N − W))``."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def cosine_multiplier(step: int, *, num_warmup_steps: int, num_training_steps: int,
                      num_cycles: float = 0.5) -> float:
    """Linear warmup, then ``max(0, ½(1 + cos(2π·c·p)))``, ``p = (s − W)/max(1, N − W)``.

    ``num_cycles`` c = 0.5 (default) is a half cosine from 1 down to 0 at ``N``. Past ``N`` it rises
    again (p > 1), as transformers' schedule and torch's ``CosineAnnealingLR`` past ``T_max`` do:
    the ``max(0, ...)`` (kept from transformers) never binds, since ½(1 + cos x) >= 0. Stop at ``N``.
    """
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def cosine_with_restarts_multiplier(step: int, *, num_warmup_steps: int, num_training_steps: int,
                                    num_cycles: float = 1) -> float:
    """Linear warmup, then ``num_cycles`` hard restarts of a cosine from 1 to 0; 0 from ``N`` on."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def polynomial_multiplier(step: int, *, num_warmup_steps: int, num_training_steps: int, lr_end: float,
                          power: float, lr_init: float) -> float:
    """Linear warmup, then ``((lr_init − lr_end)·(1 − p)^power + lr_end)/lr_init``; ``lr_end/lr_init`` after ``N``.

    As transformers, ``lr_init`` is the optimizer's *default* lr (``optimizer.defaults["lr"]``), so
    ``LambdaLR`` ends every group at ``lr_end × group_lr / lr_init`` (per-group end lrs keep the
    groups' ratios). Where transformers divides by zero (``W == N`` at step ``N``) this returns
    ``lr_end/lr_init``.
    """
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    if step > num_training_steps or num_training_steps == num_warmup_steps:
        return lr_end / lr_init
    lr_range = lr_init - lr_end
    decay_steps = num_training_steps - num_warmup_steps
    pct_remaining = 1 - (step - num_warmup_steps) / decay_steps
    return (lr_range * pct_remaining**power + lr_end) / lr_init


def inverse_sqrt_multiplier(step: int, *, num_warmup_steps: int, timescale: int) -> float:
    """Linear warmup, then ``1/sqrt((s + timescale − W)/timescale)`` (1 at the end of warmup)."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


def step_multiplier(step: int, *, num_warmup_steps: int, step_size: int, gamma: float = 0.1) -> float:
    """Linear warmup, then torch's ``StepLR``: ``gamma^⌊(s − W)/step_size⌋``."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return gamma ** ((step - num_warmup_steps) // step_size)


def exponential_multiplier(step: int, *, num_warmup_steps: int, gamma: float) -> float:
    """Linear warmup, then torch's ``ExponentialLR``: ``gamma^(s − W)``."""
    if step < num_warmup_steps:
        return _warmup(step, num_warmup_steps)
    return gamma ** (step - num_warmup_steps)


def warmup_stable_decay_multiplier(step: int, *, num_warmup_steps: int, num_stable_steps: int,
                                   num_decay_steps: int, warmup_type: str = "linear",
                                   decay_type: str = "cosine", min_lr_ratio: float = 0.0,
                                   num_cycles: float = 0.5) -> float:
    """Warmup from ``min_lr_ratio`` to 1, a constant stage, a decay back to ``min_lr_ratio``; as transformers.

    ``warmup_type`` and ``decay_type`` are ``"linear"``, ``"cosine"`` or ``"1-sqrt"``; after the
    three stages the multiplier stays at ``min_lr_ratio``. :func:`get_schedule` refuses stages longer
    than the training (``W + num_stable_steps + num_decay_steps > N``): the decay would not end.
    """
    if step < num_warmup_steps:
        progress = float(step) / float(max(1, num_warmup_steps))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        else:  # "1-sqrt"
            factor = 1.0 - math.sqrt(1.0 - progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < num_warmup_steps + num_stable_steps:
        return 1.0
    if step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        else:  # "1-sqrt"
            factor = 1.0 - math.sqrt(progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


# ---------------------------------------------------------------------------------------------
# Building a scheduler
# ---------------------------------------------------------------------------------------------
def _check_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int; ints and numpy integers are accepted, bool is not (True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be an int number of steps, "
                        f"got {type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"Invalid {name}: {value} ({name} must be an int >= {minimum})")
    return value


def _check_real(value, name: str, allowed: str, ok) -> float:
    """``value`` as a float: a real number (not bool), finite, and with ``ok(value)`` true."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be {allowed}, got {type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be {allowed})")
    return value


def _num_cycles(kwargs: dict, default: float) -> float:
    return _check_real(kwargs.get("num_cycles", default), "num_cycles", "a finite number", lambda v: True)


def _gamma(value) -> float:
    return _check_real(value, "gamma", "a finite number > 0", lambda v: v > 0)


def _lr_lambda(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, kwargs: dict):
    """The schedule's pure function with its parameters bound (``functools.partial``)."""
    W, N = num_warmup_steps, num_training_steps
    allowed = {
        "constant": (),
        "constant_with_warmup": (),
        "linear": (),
        "cosine": ("num_cycles",),
        "cosine_with_restarts": ("num_cycles",),
        "polynomial": ("lr_end", "power"),
        "inverse_sqrt": ("timescale",),
        "step": ("step_size", "gamma"),
        "exponential": ("gamma",),
        "warmup_stable_decay": ("num_decay_steps", "num_stable_steps", "warmup_type", "decay_type",
                                "min_lr_ratio", "num_cycles"),
    }[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"Invalid keyword argument(s) {unknown} for schedule {name!r} "
            f"(it takes: {', '.join(allowed) if allowed else 'none'})"
        )

    if name == "constant":
        return constant_multiplier
    if name == "constant_with_warmup":
        return partial(constant_with_warmup_multiplier, num_warmup_steps=W)
    if name == "linear":
        return partial(linear_multiplier, num_warmup_steps=W, num_training_steps=N)
    if name == "cosine":
        return partial(cosine_multiplier, num_warmup_steps=W, num_training_steps=N,
                       num_cycles=_num_cycles(kwargs, 0.5))
    if name == "cosine_with_restarts":
        return partial(cosine_with_restarts_multiplier, num_warmup_steps=W, num_training_steps=N,
                       num_cycles=_num_cycles(kwargs, 1))
    if name == "polynomial":
        lr_init = optimizer.defaults["lr"]
        lr_end = kwargs.get("lr_end", 1e-7)
        if isinstance(lr_end, bool) or not isinstance(lr_end, numbers.Real):
            raise TypeError(f"Invalid lr_end: {lr_end!r} (lr_end must be a number smaller than the optimizer's "
                            f"lr {lr_init}, got {type(lr_end).__name__})")
        if not lr_init > lr_end:
            raise ValueError(f"Invalid lr_end: {lr_end} (lr_end must be smaller than the optimizer's lr {lr_init})")
        power = _check_real(kwargs.get("power", 1.0), "power", "a finite number >= 0", lambda v: v >= 0)
        return partial(polynomial_multiplier, num_warmup_steps=W, num_training_steps=N, lr_end=lr_end,
                       power=power, lr_init=lr_init)
    if name == "inverse_sqrt":
        timescale = kwargs.get("timescale")
        if timescale is None:
            timescale = W or 10_000
        timescale = _check_int(timescale, "timescale", 1)
        return partial(inverse_sqrt_multiplier, num_warmup_steps=W, timescale=timescale)
    if name == "step":
        if "step_size" not in kwargs:
            raise ValueError("Missing step_size (the 'step' schedule needs step_size, as torch's StepLR)")
        step_size = _check_int(kwargs["step_size"], "step_size", 1)
        return partial(step_multiplier, num_warmup_steps=W, step_size=step_size,
                       gamma=_gamma(kwargs.get("gamma", 0.1)))
    if name == "exponential":
        if "gamma" not in kwargs:
            raise ValueError("Missing gamma (the 'exponential' schedule needs gamma, as torch's ExponentialLR)")
        return partial(exponential_multiplier, num_warmup_steps=W, gamma=_gamma(kwargs["gamma"]))
    # warmup_stable_decay
    if kwargs.get("num_decay_steps") is None:
        raise ValueError("Missing num_decay_steps (the 'warmup_stable_decay' schedule needs num_decay_steps, "
                         "as transformers' get_wsd_schedule)")
    num_decay_steps = _check_int(kwargs["num_decay_steps"], "num_decay_steps", 0)
    num_stable_steps = kwargs.get("num_stable_steps")
    if num_stable_steps is None:  # the stable stage fills the training
        num_stable_steps = max(0, N - W - num_decay_steps)
    num_stable_steps = _check_int(num_stable_steps, "num_stable_steps", 0)
    # Stages longer than the training (transformers accepts them) leave the decay unfinished, or not
    # even started, at the last step: the run would end above min_lr_ratio without a word.
    stages = W + num_stable_steps + num_decay_steps
    if stages > N:
        raise ValueError(
            f"Invalid warmup_stable_decay stages: num_warmup_steps + num_stable_steps + num_decay_steps = "
            f"{W} + {num_stable_steps} + {num_decay_steps} = {stages} is longer than the training "
            f"(num_training_steps = {N}): the decay would not reach min_lr_ratio by the last step; shorten a stage "
            f"(num_stable_steps may be left out: it then fills num_training_steps)"
        )
    for arg in ("warmup_type", "decay_type"):
        value = kwargs.get(arg, "linear" if arg == "warmup_type" else "cosine")
        if not isinstance(value, str):
            raise TypeError(f"Invalid {arg}: {value!r} ({arg} must be one of {', '.join(_WSD_SHAPES)}, "
                            f"got {type(value).__name__})")
        if value not in _WSD_SHAPES:
            raise ValueError(f"Invalid {arg}: {value!r} ({arg} must be one of {', '.join(_WSD_SHAPES)})")
    min_lr_ratio = _check_real(kwargs.get("min_lr_ratio", 0.0), "min_lr_ratio", "a number in [0, 1]",
                               lambda v: 0 <= v <= 1)
    return partial(warmup_stable_decay_multiplier, num_warmup_steps=W, num_stable_steps=num_stable_steps,
                   num_decay_steps=num_decay_steps, warmup_type=kwargs.get("warmup_type", "linear"),
                   decay_type=kwargs.get("decay_type", "cosine"), min_lr_ratio=min_lr_ratio,
                   num_cycles=_num_cycles(kwargs, 0.5))


def get_schedule(name: str, optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int,
                 last_epoch: int = -1, **kwargs) -> LambdaLR:
    """A ``LambdaLR`` scheduler for ``optimizer`` following the schedule ``name``.

    Args:
        name: one of :data:`SCHEDULE_NAMES`.
        optimizer: the optimizer; each group's lr at construction is its peak lr.
        num_warmup_steps: W, steps of linear warmup from 0 (``0 <= W <= num_training_steps``).
            ``constant`` ignores it, as in transformers (use ``constant_with_warmup``).
        num_training_steps: N > 0, the number of optimizer steps (``inverse_sqrt`` does not use it).
        last_epoch: passed to ``LambdaLR`` (for resuming by hand; prefer ``scheduler.load_state_dict``).
        **kwargs: the schedule's own parameters, as transformers' ``scheduler_specific_kwargs``:
            ``cosine``: ``num_cycles=0.5``; ``cosine_with_restarts``: ``num_cycles=1``;
            ``polynomial``: ``lr_end=1e-7``, ``power=1.0``; ``inverse_sqrt``: ``timescale``
            (default W, or 10 000 if W is 0); ``step``: ``step_size`` (required), ``gamma=0.1``;
            ``exponential``: ``gamma`` (required); ``warmup_stable_decay``: ``num_decay_steps``
            (required), ``num_stable_steps`` (default ``N − W − num_decay_steps``),
            ``warmup_type="linear"``, ``decay_type="cosine"``, ``min_lr_ratio=0``, ``num_cycles=0.5``.

    Step counts (``num_warmup_steps``, ``num_training_steps``, ``step_size``, ``timescale``,
    ``num_decay_steps``, ``num_stable_steps``) are ints or numpy integers (not bool, not floats).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), negative
            ``num_warmup_steps``, ``num_training_steps <= 0``, ``num_warmup_steps >
            num_training_steps``, a keyword argument the schedule does not take, a missing
            required one, ``warmup_stable_decay`` stages longer than ``num_training_steps``
            (``W + num_stable_steps + num_decay_steps > N``), ``gamma <= 0`` or not finite, ``num_cycles`` not finite, ``power < 0``
            or not finite, ``min_lr_ratio`` outside [0, 1] (or NaN), ``lr_end`` not below the lr.
        TypeError: a step count that is not an integer (a float, a bool), a number argument that
            is not a real number, ``warmup_type``/``decay_type`` not a string.
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"Unknown schedule name: {name!r} (name must be one of: {', '.join(SCHEDULE_NAMES)})")
    num_warmup_steps = _check_int(num_warmup_steps, "num_warmup_steps", 0)
    num_training_steps = _check_int(num_training_steps, "num_training_steps", 1)
    if num_warmup_steps > num_training_steps:
        raise ValueError(
            f"Invalid num_warmup_steps: {num_warmup_steps} (num_warmup_steps must be <= num_training_steps "
            f"= {num_training_steps})"
        )
    lr_lambda = _lr_lambda(name, optimizer, num_warmup_steps, num_training_steps, kwargs)
    return LambdaLR(optimizer, lr_lambda, last_epoch=last_epoch)


def lr_trace(name: str, num_warmup_steps: int, num_training_steps: int, base_lr: float = 1.0,
             **kwargs) -> list[float]:
    """The lr used by each of the ``num_training_steps`` optimizer steps under schedule ``name``.

    Runs :func:`get_schedule` on a dummy optimizer with lr ``base_lr``: element k is the lr of the
    k-th optimizer step (k from 0), so with warmup the first element is 0.
    """
    dummy = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([dummy], lr=base_lr)
    scheduler = get_schedule(name, optimizer, num_warmup_steps, num_training_steps, **kwargs)
    lrs = []
    for _ in range(num_training_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: a no-op, but it keeps LambdaLR's step-order check happy
        scheduler.step()
    return lrs


def plot_schedules(schedules: Mapping[str, Sequence[float]] | Iterable[str], num_training_steps: int,
                   num_warmup_steps: int = 0, ax=None, schedule_kwargs: Mapping[str, dict] | None = None,
                   title: str | None = None):
    """Draw several lr schedules on one matplotlib axes and return it.

    Args:
        schedules: either ``{label: lrs}`` (lists of lrs per step, e.g. from :func:`lr_trace`), or
            schedule names, traced here with :func:`lr_trace` (``schedule_kwargs[name]`` gives a
            name's keyword arguments, e.g. ``{"step": {"step_size": 30}}``).
        num_training_steps: N, the length of the x axis (and of each trace computed here).
        num_warmup_steps: W; a dotted vertical line marks the end of warmup when W > 0.
        ax: the axes to draw on (a new figure if None).
        schedule_kwargs: per-name keyword arguments for traces computed here.
        title: the axes title.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    if not isinstance(schedules, Mapping):
        schedule_kwargs = schedule_kwargs or {}
        schedules = {name: lr_trace(name, num_warmup_steps, num_training_steps, **schedule_kwargs.get(name, {}))
                     for name in schedules}
    for label, lrs in schedules.items():
        ax.plot(range(len(lrs)), list(lrs), label=label)
    if num_warmup_steps > 0:
        ax.axvline(num_warmup_steps, color="grey", linestyle=":", linewidth=1, label="end of warmup")
    ax.set_xlim(0, num_training_steps)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("lr")
    ax.set_title(title or f"LR schedules (warmup {num_warmup_steps}, {num_training_steps} steps)")
    ax.legend(fontsize="small")
    return ax
