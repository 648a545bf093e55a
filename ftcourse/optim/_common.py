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


# On CPU, one _foreach_* op over the whole model streams every tensor through memory once per op:
# a per-tensor loop (torch's default on CPU) runs all the ops of the update on a tensor while it is
# still in cache. Chunks of about this many elements get both: few Python-level calls for the many
# small tensors (biases, LayerNorm) and cache-sized work for the big ones (MiniLM: 103 tensors ->
# 45 chunks, about 1.2x faster than whole-list foreach for SGD).
CPU_CHUNK_NUMEL = 2**18


def foreach_chunks(params: Sequence[Tensor], max_numel: int | None = None) -> list[list[int]]:
    """Indices of ``params`` in lists for ``torch._foreach_*``: one (device, dtype) per list and, on
    CPU, consecutive tensors of at most ``max_numel`` (default ``CPU_CHUNK_NUMEL``) elements in all (a
    bigger tensor goes alone). Other devices get one list per (device, dtype): there, fewer kernel
    launches matter most."""
    if max_numel is None:
        max_numel = CPU_CHUNK_NUMEL
    chunks = []
    for (device, _), idx in group_by_device_dtype(params).items():
        if device.type != "cpu":
            chunks.append(idx)
            continue
        current, numel = [], 0
        for i in idx:
            n = params[i].numel()
            if current and numel + n > max_numel:
                chunks.append(current)
                current, numel = [], 0
            current.append(i)
            numel += n
        if current:
            chunks.append(current)
    return chunks

