"""Which parameters get weight decay.

Copy alone.
Into one package folder: ``python -m ftcourse copy param_groups --into mypkg/``.

Convention of BERT and of transformers' ``Trainer``: biases and normalisation weights (LayerNorm,
RMSNorm: one-dimensional tensors) are not decayed; matrices (Linear, Embedding weights) are.
Decaying a LayerNorm gain pulls it towards 0, i.e. it shrinks the whole activation, which is not
the regularisation anyone asked for.
"""
from __future__ import annotations

import math
import numbers

from torch import nn


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases and normalisation weights (every tensor with fewer than 2 dimensions)."""
    return param.ndim < 2 or name.endswith(".bias")


def check_weight_decay(weight_decay) -> float:
    """``weight_decay`` as a float: ValueError unless it is a finite number >= 0 (NaN included: it
    passes a plain ``weight_decay < 0`` test and would turn every decayed weight into NaN at the
    first step); TypeError for a non-number (bool included). Python and numpy numbers pass."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
        raise TypeError(f"weight_decay must be >= 0 (a finite number), got {weight_decay!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0 (a finite number), got {weight_decay!r}")
    return float(weight_decay)


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of the trainable parameters: decayed matrices, and undecayed biases and norms.

    Empty groups are left out. Raises ValueError for a ``weight_decay`` that is negative, NaN or
    infinite, TypeError for a non-number (:func:`check_weight_decay`)."""
    weight_decay = check_weight_decay(weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
