"""LR range test (Smith 2015): sweep the lr upward over a short run and read the peak lr off the loss.

Copy alone.
Into one package folder: ``python -m ftcourse copy lr_finder --into mypkg/``.

Reference: L. N. Smith, "Cyclical Learning Rates for Training Neural Networks" (arXiv:1506.01186,
2015; WACV 2017), section 3.3 "How can one estimate reasonable minimum and maximum boundary
values?": train for a short while with the lr increasing from a small to a large value and plot
the loss (Smith plots accuracy) against the lr; the lr where the loss starts to fall is a lower
bound, the lr where it stops falling or turns ragged an upper bound. Smith ramps the lr linearly;
the exponential ramp used by default here (as fastai's ``lr_find``) spends equally many steps on
each decade, which suits a range spanning several orders of magnitude.

What the test measures is the loss *while the lr keeps growing*: the point where it turns up is
where training at that lr would become unstable, so the usual pick is a fraction of that (the lr of
the minimum smoothed loss divided by 10, or the lr of the steepest descent). It is a heuristic for
the order of magnitude, not a replacement for a sweep on validation.

Parameter groups (layer-wise lr decay) keep their ratios: the sweep is of the *largest* group's
lr, and every group g runs at ``lr_k * initial_lr_g / max_g initial_lr_g``; the recorded ``lrs``
and the suggestions are the largest group's lr, so a suggestion is the peak lr of that group and
the others follow at their ratios (as ``LambdaLR`` schedules scale every group's own lr).

The model and the optimizer are restored to their state before the test (weights, optimizer
state, lrs, train/eval mode), so the same objects can then be trained for real. The copy kept for
that is on the CPU: a GPU holding the model does not need room for a second one.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["LRRangeTestResult", "lr_range_test", "range_test_lrs"]


def range_test_lrs(start_lr: float, end_lr: float, num_steps: int, mode: str = "exp") -> list[float]:
    """The lr of each of the ``num_steps`` steps: from ``start_lr`` to ``end_lr`` inclusive.

    ``mode="exp"``: geometric, ``start·(end/start)^(k/(n−1))``; ``mode="linear"``: evenly spaced (Smith 2015).
    """
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"Invalid {name}: {value!r} ({name} must be a number, got {type(value).__name__})")
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ValueError(f"Invalid lr range: start_lr={start_lr}, end_lr={end_lr} "
                         "(need 0 < start_lr < end_lr, both finite)")
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"Invalid num_steps: {num_steps!r} (num_steps must be an int >= 2, "
                        f"got {type(num_steps).__name__})")
    num_steps = int(num_steps)
    if num_steps < 2:
        raise ValueError(f"Invalid num_steps: {num_steps!r} (num_steps must be an int >= 2)")
    if mode == "exp":
        ratio = end_lr / start_lr
        return [start_lr * ratio ** (k / (num_steps - 1)) for k in range(num_steps)]
    if mode == "linear":
        return [start_lr + (end_lr - start_lr) * k / (num_steps - 1) for k in range(num_steps)]
    raise ValueError(f"Invalid mode: {mode!r} (mode must be 'exp' or 'linear')")


@dataclass
class LRRangeTestResult:
    """The lrs tried (the largest group's), the raw and smoothed losses, and why the test stopped.

    A test whose very first loss was not finite records nothing (``lrs`` is empty, ``diverged`` is
    True): then :meth:`min_loss_lr`, :meth:`steepest_lr`, :meth:`suggestion` and :meth:`plot` raise
    ``ValueError`` saying so, rather than suggest an lr from no data.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False  # stopped early: the smoothed loss exceeded diverge_factor × its minimum

    def _check_recorded(self, what: str) -> None:
        if not self.smoothed:
            why = ("the loss was not finite at the first step (try a smaller start_lr, or check the model "
                   "and the data)") if self.diverged else "the result is empty"
            raise ValueError(f"LRRangeTestResult.{what}: no step was recorded: {why}")

    def _argmin(self) -> int:
        return min(range(len(self.smoothed)), key=self.smoothed.__getitem__)

    def min_loss_lr(self) -> float:
        """The lr at which the smoothed loss was lowest."""
        self._check_recorded("min_loss_lr")
        return self.lrs[self._argmin()]

    def steepest_lr(self) -> float:
        """The lr where the smoothed loss falls fastest per unit of log lr (before its minimum)."""
        self._check_recorded("steepest_lr")
        end = self._argmin()
        if end < 1:
            return self.lrs[0]
        slopes = [(self.smoothed[k + 1] - self.smoothed[k]) / (math.log(self.lrs[k + 1]) - math.log(self.lrs[k]))
                  for k in range(end)]
        return self.lrs[min(range(len(slopes)), key=slopes.__getitem__)]

    def suggestion(self, method: str = "min/10") -> float:
        """A peak lr: ``"min/10"`` (the minimum's lr divided by 10) or ``"steepest"``."""
        if method not in ("min/10", "steepest"):
            raise ValueError(f"Invalid method: {method!r} (method must be 'min/10' or 'steepest')")
        self._check_recorded("suggestion")
        if method == "min/10":
            return self.min_loss_lr() / 10
        if method == "steepest":
            return self.steepest_lr()
        raise ValueError(f"Invalid method: {method!r} (method must be 'min/10' or 'steepest')")

    def plot(self, ax=None, title: str | None = None):
        """Loss (raw, faint; smoothed, solid) against the lr on a log axis, with both suggestions marked."""
        self._check_recorded("plot")
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.lrs, self.losses, color="C0", alpha=0.3, lw=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=1.8, label="smoothed loss")
        ax.axvline(self.min_loss_lr(), color="C3", ls=":", label=f"minimum ({self.min_loss_lr():.1e})")
        ax.axvline(self.suggestion("min/10"), color="C2", ls="--", label=f"minimum / 10 ({self.suggestion():.1e})")
        ax.axvline(self.steepest_lr(), color="C1", ls="-.", label=f"steepest ({self.steepest_lr():.1e})")
        ax.set_xscale("log")
        ax.set_xlabel("lr (increasing every step)")
        ax.set_ylabel("training loss")
        low, high = min(self.smoothed), max(self.smoothed[: max(1, len(self.smoothed) // 4)])
        ax.set_ylim(low - 0.1 * abs(high - low) - 1e-3, high + 0.5 * abs(high - low) + 1e-3)
        ax.set_title(title or "LR range test")
        ax.legend(fontsize="small")
        return ax


def _check_number(name: str, value, allowed: str) -> None:
    """TypeError naming ``name`` unless ``value`` is a Python or numpy real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be {allowed}, got {type(value).__name__})")


def _to_cpu(obj):
    """A copy of ``obj`` with every tensor copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = OrderedDict((k, _to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, read by load_state_dict
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _default_loss(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return F.cross_entropy(model(**inputs).logits, batch["labels"])


def lr_range_test(model: torch.nn.Module, train_loader, optimizer: torch.optim.Optimizer, *,
                  start_lr: float = 1e-7, end_lr: float = 1.0, num_steps: int = 100, mode: str = "exp",
                  smoothing: float = 0.05, diverge_factor: float | None = 4.0, max_grad_norm: float | None = 1.0,
                  loss_fn=None, device: torch.device | str | None = None, restore: bool = True) -> LRRangeTestResult:
    """Run the LR range test and return the lrs and losses; the model and optimizer are restored after.

    Each step takes the next batch of ``train_loader`` (cycling through it if needed), computes the
    loss (default: cross-entropy of ``model(**inputs).logits`` against ``batch["labels"]``), clips
    the gradient norm to ``max_grad_norm`` (None: no clipping) and steps ``optimizer`` with the
    largest group's lr set to the step's lr from :func:`range_test_lrs` and every other group's
    lr at its initial ratio to it (``lr_k * initial_lr_g / max initial lr``: LLRD ratios survive;
    a group at lr 0 stays at 0); ``result.lrs`` are the largest group's lrs. The smoothed loss is
    an exponential moving average with weight ``smoothing`` on the new loss, bias-corrected as
    Adam's moments. The test stops early (``diverged=True``) once the smoothed loss exceeds ``diverge_factor`` times its
    minimum, or the loss is not finite (that step is not recorded).

    ``restore=True`` puts back the model's weights and buffers, the optimizer's state, every
    group's lr and the model's train/eval mode, exactly; the copy is kept on the CPU (the RNG is
    not restored: dropout masks and shuffling have moved on).

    Raises ``ValueError`` for an empty ``train_loader`` (or one that yields nothing on a second
    pass, as an exhausted generator does: pass a list or a ``DataLoader``), for ``smoothing``
    outside (0, 1], ``diverge_factor`` not > 1 (NaN included) and ``max_grad_norm`` not a finite
    number > 0; ``TypeError`` for a non-number among these three (before any step). A loss that is not
    finite at the first step gives an empty result (see :class:`LRRangeTestResult`).
    """
    lrs = range_test_lrs(start_lr, end_lr, num_steps, mode)
    _check_number("smoothing", smoothing, "a number in (0, 1]")
    if not 0 < smoothing <= 1:
        raise ValueError(f"Invalid smoothing: {smoothing} (smoothing must be a number in (0, 1])")
    if diverge_factor is not None:
        _check_number("diverge_factor", diverge_factor, "> 1 or None")
        if not diverge_factor > 1:  # not `<= 1`, which NaN passes: a NaN factor never stops a blow-up
            raise ValueError(f"Invalid diverge_factor: {diverge_factor} (diverge_factor must be > 1 or None)")
    if max_grad_norm is not None:
        # A negative one made clip_grad_norm_'s coefficient negative: every step went uphill, silently.
        _check_number("max_grad_norm", max_grad_norm, "a finite number > 0, or None to measure without clipping")
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"Invalid max_grad_norm: {max_grad_norm} (max_grad_norm must be a finite number > 0, "
                             f"or None to measure without clipping)")
    loss_fn = loss_fn or _default_loss
    device = torch.device(device) if device is not None else next(model.parameters()).device
    initial_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    top = max(initial_lrs)
    # the sweep is of the largest group's lr; the others keep their ratio to it
    ratios = [lr / top for lr in initial_lrs] if top > 0 else [1.0] * len(initial_lrs)
    saved = None
    if restore:
        # on the CPU: the GPU need not hold a second copy of the model and of the optimizer state
        saved = (_to_cpu(model.state_dict()), _to_cpu(optimizer.state_dict()),
                 [g["lr"] for g in optimizer.param_groups], {m: m.training for m in model.modules()})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    result = LRRangeTestResult()
    avg, best = 0.0, math.inf
    model.train()
    batches = iter(train_loader)
    try:
        for k, lr in enumerate(lrs):
            try:
                batch = next(batches)
            except StopIteration:
                if k == 0:
                    raise ValueError("lr_range_test: train_loader yielded no batch (an empty loader?): "
                                     "there is nothing to train on") from None
                batches = iter(train_loader)
                try:
                    batch = next(batches)
                except StopIteration:
                    raise ValueError(f"lr_range_test: train_loader yielded no batch on its second pass, after {k} "
                                     "steps (an exhausted generator?): pass a loader that can be iterated "
                                     "again, such as a list or a DataLoader") from None
            batch = {key: value.to(device) for key, value in batch.items()}
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            value = loss.item()
            if not math.isfinite(value):
                result.diverged = True
                break
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            avg = (1 - smoothing) * avg + smoothing * value
            smooth = avg / (1 - (1 - smoothing) ** (k + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if diverge_factor is not None and smooth > diverge_factor * best:
                result.diverged = True
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        if saved is not None:
            state, opt_state, group_lrs, modes = saved
            model.load_state_dict(state)  # copies into the live tensors, on their own device
            optimizer.load_state_dict(opt_state)  # casts the state back to each parameter's device
            for group, lr in zip(optimizer.param_groups, group_lrs):
                group["lr"] = lr
            for module, training in modes.items():
                module.training = training
    return result
