"""Stochastic gradient descent with (Nesterov) momentum, written from the update rule."""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from ._common import check_lr, check_momentum, check_weight_decay, foreach_chunks, params_with_grad

__all__ = ["SGD"]


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

    The step is vectorised with ``torch._foreach_*`` over the tensors of each (device, dtype),
    in cache-sized chunks on CPU (see ``_common.foreach_chunks``).
    Parameters whose ``.grad`` is None are skipped entirely (no decay, no state). The state of a
    parameter is ``{"momentum_buffer": b}`` when ``μ != 0`` and empty otherwise, as torch's.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3, as torch).
        momentum: momentum factor ``μ`` (default 0).
        dampening: dampening ``τ`` of the gradient added to the buffer (default 0).
        weight_decay: L2 penalty ``λ`` added to the gradient (default 0).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False):
        check_lr(lr)
        check_momentum(momentum)
        check_weight_decay(weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov: {nesterov} (nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening})"
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = params_with_grad(group, "SGD")
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for idx in foreach_chunks(params):
                ps = [params[i] for i in idx]
                grads = [p.grad for p in ps]
                if weight_decay != 0:
                    grads = torch._foreach_add(grads, ps, alpha=weight_decay)  # new tensors: p.grad unchanged
                if momentum != 0:
                    grads = self._momentum(ps, grads, momentum, dampening, nesterov)
                torch._foreach_add_(ps, grads, alpha=-lr)
        return loss

    def _momentum(self, ps, grads, momentum, dampening, nesterov):
        """Update the momentum buffers in place; return the directions to step along."""
        old_bufs, old_grads = [], []
        bufs = []
        for p, g in zip(ps, grads):
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(g).detach()
            else:
                old_bufs.append(buf)
                old_grads.append(g)
            bufs.append(buf)
        if old_bufs:
            torch._foreach_mul_(old_bufs, momentum)
            torch._foreach_add_(old_bufs, old_grads, alpha=1 - dampening)
        if nesterov:
            return torch._foreach_add(grads, bufs, alpha=momentum)
        return bufs
