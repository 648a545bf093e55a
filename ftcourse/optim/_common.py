"""Helpers shared by the from-scratch optimizers: argument checks and multi-tensor grouping."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def check_arg(ok: bool, what: str, value, name: str, allowed: str) -> None:
    """Raise ``ValueError("Invalid <what>: <value> (<name> must be <allowed>)")`` unless ``ok``.

    ``what`` follows torch's wording (``"learning rate"``, ``"epsilon value"``...), ``name`` is the
    constructor argument, so the message says both what is wrong and which range is allowed.
    """
    if not ok:
        raise ValueError(f"Invalid {what}: {value} ({name} must be {allowed})")


def check_lr(lr) -> None:
    if isinstance(lr, Tensor):
        raise ValueError(f"Invalid learning rate: {lr} (lr must be a Python float >= 0, not a Tensor)")
    check_arg(lr >= 0.0, "learning rate", lr, "lr", ">= 0")


def check_eps(eps) -> None:
    check_arg(eps >= 0.0, "epsilon value", eps, "eps", ">= 0")


def check_weight_decay(weight_decay) -> None:
    check_arg(weight_decay >= 0.0, "weight_decay value", weight_decay, "weight_decay", ">= 0")


def check_momentum(momentum) -> None:
    check_arg(momentum >= 0.0, "momentum value", momentum, "momentum", ">= 0")


def check_betas(betas) -> None:
    if not (isinstance(betas, Sequence) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r} (betas must be a pair (beta1, beta2))")
    for i, beta in enumerate(betas):
        check_arg(0.0 <= beta < 1.0, f"beta parameter at index {i}", beta, f"betas[{i}]", "in [0, 1)")


def params_with_grad(group: dict, name: str) -> list[Tensor]:
    """The group's parameters that have a gradient (the others are skipped entirely)."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        if torch.is_complex(p):
            raise RuntimeError(f"{name} does not support complex parameters")
        out.append(p)
    return out


def group_by_device_dtype(params: Iterable[Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``params`` grouped by ``(device, dtype)``: ``torch._foreach_*`` needs one of each."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[(p.device, p.dtype)].append(i)
    return dict(groups)

