"""Stochastic gradient descent with (Nesterov) momentum, written from the update rule.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/sgd --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import numbers

import torch
from torch.optim import Optimizer

__all__ = ["SGD"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


class SGD(Optimizer):
    r"""SGD with momentum, dampening, L2 weight decay and Nesterov momentum, as ``torch.optim.SGD``.

    References: Robbins & Monro 1951 (SGD); Polyak 1964 (heavy-ball momentum); Sutskever, Martens,
    Dahl & Hinton 2013, "On the importance of initialization and momentum in deep learning" (the
    Nesterov form used here). The variant is PyTorch's, not the paper's: the lr multiplies the
    buffer (``θ -= γ·b``, not ``b = μb + γg``), and the buffer starts at the first gradient.

    Per tensor, with gradient ``g``, parameter ``θ``, lr ``γ``, weight decay ``λ``, momentum ``μ``
    and dampening ``τ``::

        g = g + λ·θ                          # coupled (L2) weight decay, if λ != 0
        if μ != 0:
            b = g                            # first step (the buffer is a copy of g)
            b = μ·b + (1 − τ)·g              # later steps
            g = g + μ·b if nesterov else b
        θ = θ − γ·g

    Parameters whose ``.grad`` is None are skipped entirely (no decay, no state); ``.grad`` itself is
    never modified. The state of a parameter is ``{"momentum_buffer": b}`` when ``μ != 0`` and empty
    otherwise, as torch's, so state dicts load both ways between this class and ``torch.optim.SGD``.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3, as torch).
        momentum: momentum factor ``μ`` (default 0).
        dampening: dampening ``τ`` of the gradient added to the buffer, in [0, 1] (default 0).
        weight_decay: L2 penalty ``λ`` added to the gradient (default 0).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False):
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            _check_real(name, value)
        # Written as `not 0.0 <= x` so that NaN, for which every comparison is False, is refused too.
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum} (momentum must be >= 0)")
        if not 0.0 <= dampening <= 1.0:
            raise ValueError(f"Invalid dampening value: {dampening} (dampening must be in [0, 1])")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (weight_decay must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov: {nesterov} (nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening})"
            )
        # float(): numpy scalars become Python floats, which torch.load(weights_only=True) accepts.
        defaults = dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                        weight_decay=float(weight_decay), nesterov=bool(nesterov))
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # A state dict saved by another optimizer (torch.optim.SGD, an older version of this one) may
        # lack some of our group keys: fill them from the defaults, as torch's optimizers do.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("SGD does not support sparse gradients")

                if weight_decay != 0:
                    grad = grad.add(param, alpha=weight_decay)  # a new tensor: param.grad stays as it is

                if momentum != 0:
                    state = self.state[param]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.clone(grad).detach()
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                    grad = grad.add(buf, alpha=momentum) if nesterov else buf

                param.add_(grad, alpha=-lr)
        return loss
