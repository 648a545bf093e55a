"""LARS (layer-wise adaptive rate scaling) on top of SGD with momentum, written from the update rule.

Copy alone.
Into one package folder: ``python -m ftcourse copy optim/lars --into mypkg/``.
This file imports only torch and the standard library: copied by itself into another project it
works unchanged.
"""
from __future__ import annotations

import numbers
import warnings

import torch
from torch.optim import Optimizer

__all__ = ["LARS"]


def _check_real(name: str, value) -> None:
    """A Python or numpy number (not a bool, a string, None or a Tensor), else TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} ({name} must be a real number, not {type(value).__name__})")


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
    Parameters whose ``.grad`` is None are skipped entirely; ``.grad`` itself is never modified.
    State per parameter: ``{"momentum_buffer": b}`` when ``μ != 0``, else none.

    Args:
        params: parameters or parameter-group dicts.
        lr: learning rate ``γ`` (default 1.0, as timm: the trust ratio carries the scale).
        momentum: momentum factor ``μ`` (default 0).
        dampening: dampening ``τ``, in [0, 1] (default 0).
        weight_decay: ``λ`` (default 0); adaptation happens only where it is not 0. When no group
            has a non-zero weight decay, LARS is SGD: the constructor warns (``UserWarning``).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        trust_coefficient: ``η`` (default 0.001).
        eps: added to the trust ratio's denominator (default 1e-8).
        trust_clip: LARC clipping ``min(r/γ, 1)`` (default False).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, trust_coefficient: float = 0.001,
                 eps: float = 1e-8, trust_clip: bool = False):
        for name, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay), ("trust_coefficient", trust_coefficient),
                            ("eps", eps)):
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
        if not 0.0 <= trust_coefficient:
            raise ValueError(f"Invalid trust_coefficient value: {trust_coefficient} "
                             f"(trust_coefficient must be >= 0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (eps must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Invalid nesterov: {nesterov} (nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum}, dampening={dampening})"
            )
        # float(): numpy scalars become Python floats, which torch.load(weights_only=True) accepts.
        defaults = dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                        weight_decay=float(weight_decay), nesterov=bool(nesterov),
                        trust_coefficient=float(trust_coefficient), eps=float(eps), trust_clip=bool(trust_clip))
        super().__init__(params, defaults)
        if all(group["weight_decay"] == 0 for group in self.param_groups):
            # The same rule as timm's and NVIDIA's implementations, so not changed here; but a
            # LARS that never adapts deserves a word rather than silence.
            warnings.warn("LARS: no parameter group has a non-zero weight_decay, so the trust ratio never "
                          "applies and LARS is plain SGD (with momentum); give the decayed group(s) weight_decay > 0 "
                          "(e.g. llrd_param_groups(..., weight_decay=0.01), decay_param_groups(model, 0.01))",
                          UserWarning, stacklevel=2)

    def __setstate__(self, state):
        super().__setstate__(state)
        # torch's __setstate__ (load_state_dict calls it too) adds differentiable=False to
        # self.defaults, an argument of torch's own optimizers that this class does not take. Filled
        # into every group below it would make a reloaded optimizer's state_dict() differ from the
        # one it was loaded from (the round trip that torch's and timm's optimizer tests check).
        self.defaults.pop("differentiable", None)
        # A state dict saved by an older version of this class may lack some group keys: fill them
        # from the defaults, as torch's optimizers do.
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
            weight_decay, nesterov, eps = group["weight_decay"], group["nesterov"], group["eps"]
            trust_coefficient, trust_clip = group["trust_coefficient"], group["trust_clip"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")

                if weight_decay != 0:
                    # 0-dim tensors, not Python floats: no device-to-host copy per tensor on a GPU.
                    w_norm, g_norm = param.norm(), grad.norm()
                    trust_ratio = trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + eps)
                    # A zero tensor (a fresh bias) or a zero gradient would give 0 or 0/0: no rescaling.
                    trust_ratio = torch.where((w_norm > 0) & (g_norm > 0), trust_ratio, 1.0)
                    if trust_clip:
                        trust_ratio = torch.clamp(trust_ratio / lr, max=1.0)
                    grad = grad.add(param, alpha=weight_decay).mul_(trust_ratio)  # param.grad stays as it is

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
