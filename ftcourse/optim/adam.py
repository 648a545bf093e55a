"""Adam and AdamW (and BERT's Adam without bias correction), written from the update rules.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/adam --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch.optim import Optimizer

__all__ = ["Adam", "AdamW"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


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
    ``ε̂ = ε·sqrt(1 − β2^t)``).

    ``bias_correction=False`` drops both ``1 − β^t`` factors: ``θ = θ − γ·m/(sqrt(v) + ε)``. That is
    the Adam of the original BERT code (``AdamWeightDecayOptimizer``, "BERTAdam"; with its decoupled
    weight decay it is ``AdamW(..., bias_correction=False)``). With β = (0.9, 0.999) its first
    updates are ``(1 − β1^t)/sqrt(1 − β2^t)`` times Adam's: about 3.2× at t = 1, 6.5× at t = 10,
    3.2× at t = 100 and still 1.26× at t = 1000; Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning"
    (arXiv:2006.05987) show these large early updates make few-sample fine-tuning unstable.

    Parameters whose ``.grad`` is None are skipped entirely (no decay, no state, no step count);
    ``.grad`` itself is never modified. State per parameter: ``step`` (an int), ``exp_avg`` (m),
    ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq`` (v_max), as torch's, so a state dict of
    ``torch.optim.Adam``/``AdamW`` loads here (and back).

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3).
        betas: ``(β1, β2)``, decay rates of the moment averages, each in [0, 1) (default (0.9, 0.999)).
        eps: added to the denominator after the square root (default 1e-8).
        weight_decay: ``λ`` (default 0): an L2 term added to the gradient, or decoupled decay.
        amsgrad: use the running maximum of v (default False).
        bias_correction: divide the moments by ``1 − β^t`` (default True; False gives BERTAdam).
        decoupled_weight_decay: decay the weights directly, as AdamW (default False).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 bias_correction: bool = True, decoupled_weight_decay: bool = False):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r} (betas must be a pair (beta1, beta2))")
        for name, value in (("lr", lr), ("betas[0]", betas[0]), ("betas[1]", betas[1]), ("eps", eps),
                            ("weight_decay", weight_decay)):
            _check_real(name, value)
        # Written as `not 0.0 <= x` so that NaN, for which every comparison is False, is refused too.
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (lr must be >= 0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (eps must be >= 0)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (betas[{i}] must be in [0, 1))")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (weight_decay must be >= 0)")
        # float(): numpy scalars become Python floats, which torch.load(weights_only=True) accepts.
        defaults = dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                        weight_decay=float(weight_decay), amsgrad=bool(amsgrad),
                        bias_correction=bool(bias_correction), decoupled_weight_decay=bool(decoupled_weight_decay))
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # A state dict saved by torch.optim.Adam/AdamW has no "bias_correction" (and an older one no
        # "decoupled_weight_decay"), and stores the step count as a float32 tensor: fill the missing
        # keys from the defaults, as torch's optimizers do, and make the count an int again, so that
        # β^t stays float64 arithmetic.
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
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                if torch.is_complex(param):
                    raise RuntimeError(f"{type(self).__name__} does not support complex parameters")

                state = self.state[param]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if amsgrad and "max_exp_avg_sq" not in state:  # also when amsgrad is turned on later
                    state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                if weight_decay != 0:
                    if group["decoupled_weight_decay"]:
                        param.mul_(1 - lr * weight_decay)
                    else:
                        grad = grad.add(param, alpha=weight_decay)  # a new tensor: param.grad stays as it is

                exp_avg.lerp_(grad, 1 - beta1)  # β1·m + (1 − β1)·g in one pass, as torch
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if amsgrad:
                    max_exp_avg_sq = state["max_exp_avg_sq"]
                    torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                    second_moment = max_exp_avg_sq
                else:
                    second_moment = exp_avg_sq

                if group["bias_correction"]:
                    bias_correction1 = 1 - beta1**t
                    bias_correction2 = 1 - beta2**t
                    denom = (second_moment.sqrt() / math.sqrt(bias_correction2)).add_(eps)
                    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
                else:  # BERTAdam
                    denom = second_moment.sqrt().add_(eps)
                    param.addcdiv_(exp_avg, denom, value=-lr)
        return loss


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
