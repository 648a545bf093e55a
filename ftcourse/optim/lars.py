"""LARS (layer-wise adaptive rate scaling) on top of SGD with momentum, written from the update rule."""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from ._common import (
    check_arg, check_eps, check_lr, check_momentum, check_weight_decay, foreach_chunks, params_with_grad,
)

__all__ = ["LARS"]


class LARS(Optimizer):
    r"""LARS / LARC: SGD whose step is rescaled per tensor by a trust ratio; as ``timm.optim.Lars``.

    References: You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks"
    (arXiv:1708.03888), eq. (6)-(7) and Algorithm 1 (the local lr, with weight decay in the
    denominator); NVIDIA apex ``LARC`` for the clipped variant (``trust_clip``); the exact variant is
    timm's ``Lars`` (``always_adapt=False``), whose updates this reproduces with
    ``trust_coeff=trust_coefficient``.

    Per tensor (per layer: norms are never summed over the model), with gradient ``g``, parameter
    ``θ``, lr ``γ``, weight decay ``λ``, trust coefficient ``η``, momentum ``μ``, dampening ``τ``::

        if λ != 0:                               # adaptation only in groups with weight decay
            r = η·‖θ‖ / (‖g‖ + λ·‖θ‖ + ε)        # trust ratio
            r = 1 if ‖θ‖ == 0 or ‖g‖ == 0
            r = min(r/γ, 1) if trust_clip        # LARC: the local lr r never exceeds the global γ
            g = (g + λ·θ)·r
        if μ != 0:                               # SGD momentum, as torch.optim.SGD
            b = g  (first step);  b = μ·b + (1 − τ)·g  (later)
            g = g + μ·b if nesterov else b
        θ = θ − γ·g

    Groups with ``weight_decay == 0`` (put biases and LayerNorm weights there) get plain SGD.
    Vectorised with ``torch._foreach_*`` per (device, dtype) and, on CPU,
    cache-sized chunks; the norms come from
    ``torch._foreach_norm``. Parameters whose ``.grad`` is None are skipped entirely. State per
    parameter: ``{"momentum_buffer": b}`` when ``μ != 0``, else none.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1.0, as timm: the trust ratio carries the scale).
        momentum: momentum factor ``μ`` (default 0).
        dampening: dampening ``τ`` (default 0).
        weight_decay: ``λ`` (default 0); adaptation happens only where it is not 0.
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        trust_coefficient: ``η`` (default 0.001).
        eps: added to the trust ratio's denominator (default 1e-8).
        trust_clip: LARC clipping ``min(r/γ, 1)`` (default False).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, trust_coefficient: float = 0.001,
                 eps: float = 1e-8, trust_clip: bool = False):
        check_lr(lr)
        check_momentum(momentum)
        check_weight_decay(weight_decay)
        check_eps(eps)
        check_arg(trust_coefficient >= 0.0, "trust_coefficient value", trust_coefficient,
                  "trust_coefficient", ">= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov: {nesterov} (nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening})"
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, trust_coefficient=trust_coefficient, eps=eps, trust_clip=trust_clip)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = params_with_grad(group, "LARS")
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for idx in foreach_chunks(params):
                ps = [params[i] for i in idx]
                grads = [p.grad for p in ps]
                if weight_decay != 0:
                    trust = self._trust_ratios(ps, grads, group)
                    grads = torch._foreach_add(grads, ps, alpha=weight_decay)  # new tensors: p.grad unchanged
                    torch._foreach_mul_(grads, trust)
                if momentum != 0:
                    grads = self._momentum(ps, grads, momentum, dampening, nesterov)
                torch._foreach_add_(ps, grads, alpha=-lr)
        return loss

    @staticmethod
    def _trust_ratios(ps, grads, group) -> list:
        """Per-tensor trust ratios, computed at once on the stacked norms (0-dim tensors)."""
        w_norm = torch.stack(torch._foreach_norm(ps))
        g_norm = torch.stack(torch._foreach_norm(grads))
        trust = group["trust_coefficient"] * w_norm / (g_norm + w_norm * group["weight_decay"] + group["eps"])
        trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
        if group["trust_clip"]:
            trust = torch.clamp(trust / group["lr"], max=1.0)
        return list(trust.unbind())

    def _momentum(self, ps, grads, momentum, dampening, nesterov):
        """Update the momentum buffers in place (as torch's SGD); return the directions to step along."""
        old_bufs, old_grads, bufs = [], [], []
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
