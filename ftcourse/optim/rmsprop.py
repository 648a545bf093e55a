"""RMSprop (optionally centred, with momentum), written from the update rule."""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from ._common import (
    check_arg, check_eps, check_lr, check_momentum, check_weight_decay, foreach_chunks, params_with_grad,
)

__all__ = ["RMSprop"]


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

    Vectorised with ``torch._foreach_*`` per (device, dtype) and, on CPU,
    cache-sized chunks. Parameters whose ``.grad`` is None
    are skipped entirely. State per parameter: ``step`` (an int), ``square_avg`` (v), and
    ``momentum_buffer`` (b, if μ > 0) and ``grad_avg`` (ḡ, if centered), as torch's.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-2).
        alpha: smoothing constant ``α`` of the squared-gradient average (default 0.99).
        eps: added to the denominator after the square root (default 1e-8).
        weight_decay: L2 penalty ``λ`` added to the gradient (default 0).
        momentum: momentum factor ``μ`` (default 0).
        centered: divide by an estimate of the gradient's standard deviation (default False).
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False):
        check_lr(lr)
        check_eps(eps)
        check_momentum(momentum)
        check_weight_decay(weight_decay)
        check_arg(alpha >= 0.0, "alpha value", alpha, "alpha", ">= 0")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = params_with_grad(group, "RMSprop")
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
            for idx in foreach_chunks(params):
                ps = [params[i] for i in idx]
                states = [self._init_state(p, momentum, centered) for p in ps]
                grads = [p.grad for p in ps]
                if weight_decay != 0:
                    grads = torch._foreach_add(grads, ps, alpha=weight_decay)
                square_avgs = [s["square_avg"] for s in states]
                torch._foreach_mul_(square_avgs, alpha)
                torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
                if centered:
                    grad_avgs = [s["grad_avg"] for s in states]
                    torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
                    avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
                    torch._foreach_sqrt_(avg)
                else:
                    avg = torch._foreach_sqrt(square_avgs)
                torch._foreach_add_(avg, eps)
                if momentum > 0:
                    bufs = [s["momentum_buffer"] for s in states]
                    torch._foreach_mul_(bufs, momentum)
                    torch._foreach_addcdiv_(bufs, grads, avg)
                    torch._foreach_add_(ps, bufs, alpha=-lr)
                else:
                    torch._foreach_addcdiv_(ps, grads, avg, value=-lr)
        return loss

    def _init_state(self, p, momentum, centered):
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if momentum > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if centered and "grad_avg" not in state:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        return state
