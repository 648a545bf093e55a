"""LAMB (layer-wise adaptive moments for batch training), written from the update rule."""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from ._common import check_betas, check_eps, check_lr, check_weight_decay, foreach_chunks, params_with_grad

__all__ = ["LAMB"]


class LAMB(Optimizer):
    r"""LAMB: Adam moments, L2 decay added to the update, and a per-tensor trust ratio; as timm's ``Lamb``.

    References: You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer & Hsieh 2020,
    "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes" (arXiv:1904.00962),
    Algorithm 2 with ``φ(x) = x``; the exact variant is NVIDIA's ``FusedLAMB`` ("NVLAMB") as
    re-implemented by ``timm.optim.Lamb``, whose updates this reproduces with ``max_grad_norm=None``
    (no global gradient clipping: clip before ``step()`` if you want it), ``bias_correction=True``,
    ``grad_averaging=True``, ``trust_clip=False``, ``always_adapt=False``.

    Per tensor, with gradient ``g``, parameter ``θ``, lr ``γ``, weight decay ``λ`` and the step
    count ``t`` of the parameter *group* (as timm: it advances on every ``step()``, even for a group
    none of whose parameters has a gradient, and a parameter that first gets a gradient late uses
    the group's ``t``)::

        m = β1·m + (1 − β1)·g
        v = β2·v + (1 − β2)·g²
        u = (m/(1 − β1^t)) / (sqrt(v)/sqrt(1 − β2^t) + ε)
        if λ != 0:                               # groups with weight decay only
            u = u + λ·θ
            r = ‖θ‖/‖u‖, or 1 if ‖θ‖ == 0 or ‖u‖ == 0
            u = r·u
        θ = θ − γ·u

    Groups with ``weight_decay == 0`` (biases, LayerNorm weights) get the plain Adam update, with no
    trust ratio. Vectorised with ``torch._foreach_*`` per (device, dtype) and, on CPU,
    cache-sized chunks; the norms come from
    ``torch._foreach_norm``. Parameters whose ``.grad`` is None are skipped entirely (no decay, no
    state). State: ``exp_avg`` (m) and ``exp_avg_sq`` (v) per parameter; ``step`` (an int) in the
    parameter group, so ``state_dict()`` saves it with the group.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3).
        betas: ``(β1, β2)`` (default (0.9, 0.999)).
        eps: added to the denominator after the square root (default 1e-6, as timm and apex).
        weight_decay: ``λ`` (default 0.01); the trust ratio applies only where it is not 0.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01):
        check_lr(lr)
        check_eps(eps)
        check_betas(betas)
        check_weight_decay(weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            params = params_with_grad(group, "LAMB")
            for idx in foreach_chunks(params):
                self._update(group, [params[i] for i in idx])
        return loss

    def _update(self, group, ps):
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        t = group["step"]
        states = [self._init_state(p) for p in ps]
        grads = [p.grad for p in ps]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        # u = (m/(1 − β1^t)) / (sqrt(v)/c + ε) with c = sqrt(1 − β2^t) is computed as u = scale·d,
        # d = m/(sqrt(v) + ε·c), scale = c/(1 − β1^t): the same numbers, two passes less.
        c = math.sqrt(1 - beta2**t)
        scale = c / (1 - beta1**t)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, eps * c)
        d = torch._foreach_div(exp_avgs, denom)

        if weight_decay != 0:
            torch._foreach_add_(d, ps, alpha=weight_decay / scale)  # u + λθ = scale·(d + (λ/scale)·θ)
            w_norm = torch.stack(torch._foreach_norm(ps))
            u_norm = torch.stack(torch._foreach_norm(d)) * scale
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            torch._foreach_addcmul_(ps, d, list((trust * (-lr * scale)).unbind()))  # θ −= γ·trust·u
        else:
            torch._foreach_add_(ps, d, alpha=-lr * scale)

    def _init_state(self, p):
        state = self.state[p]
        if len(state) == 0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state
