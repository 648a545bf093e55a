"""LAMB (layer-wise adaptive moments for batch training), written from the update rule.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/lamb --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch.optim import Optimizer

__all__ = ["LAMB"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


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
    trust ratio. Parameters whose ``.grad`` is None are skipped entirely (no decay, no state);
    ``.grad`` itself is never modified. State: ``exp_avg`` (m) and ``exp_avg_sq`` (v) per parameter;
    ``step`` (an int) in the parameter group, so ``state_dict()`` saves it with the group.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1e-3).
        betas: ``(β1, β2)``, each in [0, 1) (default (0.9, 0.999)).
        eps: added to the denominator after the square root (default 1e-6, as timm and apex).
        weight_decay: ``λ`` (default 0.01); the trust ratio applies only where it is not 0. When no
            group has a non-zero weight decay, LAMB is Adam: the constructor warns (``UserWarning``).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01):
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
                        weight_decay=float(weight_decay))
        super().__init__(params, defaults)
        if all(group["weight_decay"] == 0 for group in self.param_groups):
            # The same rule as timm's and NVIDIA's implementations, so not changed here; but a
            # LAMB that never adapts deserves a word rather than silence.
            warnings.warn("LAMB: no parameter group has a non-zero weight_decay, so the trust ratio never "
                          "applies and LAMB is plain Adam; give the decayed group(s) weight_decay > 0 "
                          "(e.g. llrd_param_groups(..., weight_decay=0.01), decay_param_groups(model, 0.01))",
                          UserWarning, stacklevel=2)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # Fill group keys missing from an older state dict from the defaults, as torch's optimizers
        # do; a group step count saved as a tensor (timm's Lamb does) becomes an int again, so that
        # β^t stays float64 arithmetic.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            if torch.is_tensor(group.get("step")):
                group["step"] = int(group["step"].item())

    @torch.no_grad()
    def step(self, closure=None):
        """One optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            group["step"] = group.get("step", 0) + 1
            t = group["step"]
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("LAMB does not support sparse gradients")
                if torch.is_complex(param):
                    raise RuntimeError("LAMB does not support complex parameters")

                state = self.state[param]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

                exp_avg.lerp_(grad, 1 - beta1)  # β1·m + (1 − β1)·g in one pass, as timm
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
                update = (exp_avg / bias_correction1).div_(denom)

                if weight_decay != 0:
                    update.add_(param, alpha=weight_decay)
                    # 0-dim tensors, not Python floats: no device-to-host copy per tensor on a GPU.
                    w_norm, u_norm = param.norm(), update.norm()
                    # A zero tensor (a fresh bias) or a zero update would give 0 or 0/0: no rescaling.
                    trust_ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
                    update.mul_(trust_ratio)

                param.add_(update, alpha=-lr)
        return loss
