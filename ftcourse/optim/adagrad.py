"""Adagrad (per-coordinate learning rates from the sum of squared gradients), written from the update rule.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/adagrad --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import numbers

import torch
from torch.optim import Optimizer

__all__ = ["Adagrad"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad``.

    Reference: Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 12:2121-2159 (the diagonal form, ``θ −= η·g/sqrt(Σ g²)``). The
    variant is PyTorch's: ``ε`` is added *outside* the square root, the sum may start at
    ``initial_accumulator_value`` instead of 0, the lr may decay with the step count, and the L2
    weight decay is added to the gradient before it is accumulated.

    Per tensor, with gradient ``g``, parameter ``θ``, lr ``γ``, lr decay ``δ``, weight decay ``λ``
    and the parameter's own step count ``t`` (1 on its first step)::

        clr = γ / (1 + (t − 1)·δ)
        g = g + λ·θ                          # coupled (L2) weight decay, if λ != 0
        s = s + g²                           # s starts at initial_accumulator_value
        θ = θ − clr · g / (sqrt(s) + ε)

    Every coordinate's step shrinks as its squared gradients add up, so rarely-updated coordinates
    (rare features, rare tokens' embeddings) keep large steps: that was the point of the paper, and
    also why the steps of a long run become small (RMSprop and Adam replace the sum by a moving
    average).

    Parameters whose ``.grad`` is None are skipped entirely (no decay, no state, no step count);
    ``.grad`` itself is never modified. Unlike torch, which fills the state of every parameter in
    its constructor, the state of a parameter is created at its first gradient (so a frozen one
    has none); the updates are the same, except that ``s`` starts at the *group's*
    ``initial_accumulator_value`` (torch uses the constructor's for every group). State per
    parameter: ``step`` (an int) and ``sum`` (s), as torch's, so a state dict of
    ``torch.optim.Adagrad`` loads here (and back).

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-2).
        lr_decay: ``δ`` (default 0).
        weight_decay: L2 penalty ``λ`` added to the gradient (default 0).
        initial_accumulator_value: starting value of ``s`` (default 0).
        eps: added to the denominator after the square root (default 1e-10).
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10):
        for name, value in (("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                            ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)):
            _check_real(name, value)
        # Written as `not 0.0 <= x` so that NaN, for which every comparison is False, is refused too.
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay} (lr_decay must be >= 0)")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (weight_decay must be >= 0)")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value} "
                             f"(initial_accumulator_value must be >= 0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (eps must be >= 0)")
        # float(): numpy scalars become Python floats, which torch.load(weights_only=True) accepts.
        defaults = dict(lr=float(lr), lr_decay=float(lr_decay), weight_decay=float(weight_decay),
                        initial_accumulator_value=float(initial_accumulator_value), eps=float(eps))
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # A state dict saved by torch.optim.Adagrad (or an older version of this class) may lack some
        # of our group keys, and stores the step count as a float tensor: fill the keys from the
        # defaults, as torch's optimizers do, and make the count an int again.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        for param_state in self.state.values():
            if torch.is_tensor(param_state.get("step")):
                param_state["step"] = int(param_state["step"].item())

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, lr_decay, weight_decay, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("Adagrad does not support sparse gradients")
                if torch.is_complex(param):
                    raise RuntimeError("Adagrad does not support complex parameters")

                state = self.state[param]
                if len(state) == 0:
                    state["step"] = 0
                    state["sum"] = torch.full_like(param, group["initial_accumulator_value"],
                                                   memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]

                clr = lr / (1 + (t - 1) * lr_decay)
                if weight_decay != 0:
                    grad = grad.add(param, alpha=weight_decay)  # a new tensor: param.grad stays as it is

                state_sum = state["sum"]
                state_sum.addcmul_(grad, grad)
                std = state_sum.sqrt().add_(eps)
                param.addcdiv_(grad, std, value=-clr)
        return loss
