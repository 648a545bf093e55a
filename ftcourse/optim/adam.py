"""Adam and AdamW (and BERT's Adam without bias correction), written from the update rules."""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from ._common import check_betas, check_eps, check_lr, check_weight_decay, foreach_chunks, params_with_grad

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam``; with ``decoupled_weight_decay=True`` it is AdamW.

    References: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization" (Algorithm 1, with
    PyTorch's placement of ε); Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond"
    (amsgrad, in PyTorch's form: the max of the *raw* second moments, then bias-corrected);
    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (AdamW).

    Per tensor, with gradient ``g``, parameter ``θ``, lr ``γ``, weight decay ``λ`` and the
    parameter's own step count ``t`` (1 on its first step)::

        if λ != 0:
            θ = θ·(1 − γλ)                   # decoupled (AdamW)
            g = g + λ·θ                      # coupled L2 (Adam)
        m = β1·m + (1 − β1)·g
        v = β2·v + (1 − β2)·g²
        v_max = max(v_max, v)                # amsgrad only; then v_max replaces v below
        θ = θ − γ/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + ε)

    ε is added *after* the bias-corrected square root, as in the paper's Algorithm 1 and torch (the
    paper's "more efficient" form of section 2, ``γ_t·m/(sqrt(v) + ε̂)``, matches it only with
    ``ε̂ = ε·c``). The code computes exactly that form, ``θ − (γ·c/(1 − β1^t)) · m / (sqrt(v) + ε·c)``
    with ``c = sqrt(1 − β2^t)``: the same update up to rounding, with one pass less over the state.

    ``bias_correction=False`` drops both ``1 − β^t`` factors: ``θ = θ − γ·m/(sqrt(v) + ε)``. That is
    the Adam of the original BERT code (``AdamWeightDecayOptimizer``, "BERTAdam"; with its decoupled
    weight decay it is ``AdamW(..., bias_correction=False)``). With β = (0.9, 0.999) its first
    updates are ``(1 − β1^t)/sqrt(1 − β2^t)`` times Adam's: about 3.2× at t = 1, 6.5× at t = 10,
    3.2× at t = 100 and still 1.26× at t = 1000; Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning"
    (arXiv:2006.05987) show these large early updates make few-sample fine-tuning unstable.

    Vectorised with ``torch._foreach_*`` per (device, dtype) and, on CPU,
    cache-sized chunks. Parameters whose ``.grad`` is None
    are skipped entirely (no decay, no state, no step count). State per parameter: ``step`` (an
    int), ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq`` (v_max).

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3).
        betas: ``(β1, β2)``, decay rates of the moment averages (default (0.9, 0.999)).
        eps: added to the denominator after the square root (default 1e-8).
        weight_decay: ``λ`` (default 0): an L2 term added to the gradient, or decoupled decay.
        amsgrad: use the running maximum of v (default False).
        bias_correction: divide the moments by ``1 − β^t`` (default True; False gives BERTAdam).
        decoupled_weight_decay: decay the weights directly, as AdamW (default False).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 bias_correction: bool = True, decoupled_weight_decay: bool = False):
        check_lr(lr)
        check_eps(eps)
        check_betas(betas)
        check_weight_decay(weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        bias_correction=bias_correction, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = params_with_grad(group, type(self).__name__)
            for idx in foreach_chunks(params):
                self._update(group, [params[i] for i in idx])
        return loss

    def _update(self, group, ps):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]

        states = [self._init_state(p, amsgrad) for p in ps]
        grads = [p.grad for p in ps]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]

        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(ps, 1 - lr * weight_decay)
            else:
                grads = torch._foreach_add(grads, ps, alpha=weight_decay)  # new tensors: p.grad unchanged

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        if amsgrad:
            second = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(second, exp_avg_sqs)
        else:
            second = exp_avg_sqs

        denom = torch._foreach_sqrt(second)
        if group["bias_correction"]:
            steps = [s["step"] for s in states]
            c = [math.sqrt(1 - beta2**t) for t in steps]
            torch._foreach_add_(denom, [eps * ci for ci in c])
            neg_step = [-lr * ci / (1 - beta1**t) for ci, t in zip(c, steps)]
            torch._foreach_addcdiv_(ps, exp_avgs, denom, neg_step)
        else:
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(ps, exp_avgs, denom, value=-lr)

    def _init_state(self, p, amsgrad):
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        return state


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), as ``torch.optim.AdamW``.

    ``Adam`` with ``decoupled_weight_decay=True`` and ``weight_decay`` defaulting to 1e-2: the weights
    are shrunk by ``θ = θ·(1 − γλ)`` before the Adam step, instead of adding ``λθ`` to the gradient
    (where the adaptive denominator would rescale the decay). See :class:`Adam` for the update and
    for ``bias_correction=False`` (``AdamW(..., eps=1e-6, bias_correction=False)`` is BERT's original
    ``AdamWeightDecayOptimizer``).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 bias_correction: bool = True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         bias_correction=bias_correction, decoupled_weight_decay=True)
