"""RMSprop (optionally centred, with momentum), written from the update rule.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/rmsprop --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import numbers

import torch
from torch.optim import Optimizer

__all__ = ["RMSprop"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


class RMSprop(Optimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    References: Hinton, Srivastava & Swersky, "Neural Networks for Machine Learning", lecture 6e
    (2012) for RMSprop; Graves 2013, "Generating Sequences With Recurrent Neural Networks" (eq. 38-45)
    for the centred variant. The variant is PyTorch's: ``ε`` is added *outside* the square root, the
    running average starts at zero with no bias correction, and momentum accumulates ``g/avg``.

    Per tensor, with gradient ``g``, parameter ``θ``, lr ``γ``, smoothing ``α``, weight decay ``λ``
    and momentum ``μ``::

        g = g + λ·θ                          # coupled (L2) weight decay, if λ != 0
        v = α·v + (1 − α)·g²                 # v starts at 0
        if centered:
            ḡ = α·ḡ + (1 − α)·g              # ḡ starts at 0
            avg = sqrt(v − ḡ²) + ε
        else:
            avg = sqrt(v) + ε
        if μ > 0:
            b = μ·b + g/avg                  # b starts at 0
            θ = θ − γ·b
        else:
            θ = θ − γ·g/avg

    Parameters whose ``.grad`` is None are skipped entirely; ``.grad`` itself is never modified.
    State per parameter: ``step`` (an int), ``square_avg`` (v), and ``momentum_buffer`` (b, if
    μ > 0) and ``grad_avg`` (ḡ, if centered), as torch's, so state dicts load both ways between this
    class and ``torch.optim.RMSprop``.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-2).
        alpha: smoothing constant ``α`` of the squared-gradient average, in [0, 1] (default 0.99).
        eps: added to the denominator after the square root (default 1e-8).
        weight_decay: L2 penalty ``λ`` added to the gradient (default 0).
        momentum: momentum factor ``μ`` (default 0).
        centered: divide by an estimate of the gradient's standard deviation (default False).
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False):
        for name, value in (("lr", lr), ("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay),
                            ("momentum", momentum)):
            _check_real(name, value)
        # Written as `not 0.0 <= x` so that NaN, for which every comparison is False, is refused too.
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid alpha value: {alpha} (alpha must be in [0, 1])")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (eps must be >= 0)")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (weight_decay must be >= 0)")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum} (momentum must be >= 0)")
        # float(): numpy scalars become Python floats, which torch.load(weights_only=True) accepts.
        defaults = dict(lr=float(lr), alpha=float(alpha), eps=float(eps), weight_decay=float(weight_decay),
                        momentum=float(momentum), centered=bool(centered))
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # A state dict saved by torch.optim.RMSprop (or an older version of this class) may lack some
        # of our group keys, and stores the step count as a tensor: fill the keys from the defaults,
        # as torch's optimizers do, and make the count an int again.
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
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("RMSprop does not support sparse gradients")
                if torch.is_complex(param):
                    raise RuntimeError("RMSprop does not support complex parameters")

                state = self.state[param]
                if len(state) == 0:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                # Created when first needed, so that turning momentum or centering on later works.
                if momentum > 0 and "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if centered and "grad_avg" not in state:
                    state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1

                if weight_decay != 0:
                    grad = grad.add(param, alpha=weight_decay)  # a new tensor: param.grad stays as it is

                square_avg = state["square_avg"]
                square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                if centered:
                    grad_avg = state["grad_avg"]
                    grad_avg.lerp_(grad, 1 - alpha)  # α·ḡ + (1 − α)·g in one pass, as torch
                    avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_().add_(eps)
                else:
                    avg = square_avg.sqrt().add_(eps)

                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).addcdiv_(grad, avg)
                    param.add_(buf, alpha=-lr)
                else:
                    param.addcdiv_(grad, avg, value=-lr)
        return loss
