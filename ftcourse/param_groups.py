"""Which parameters get weight decay.

Convention of BERT and of transformers' ``Trainer``: biases and normalisation weights (LayerNorm,
RMSNorm: one-dimensional tensors) are not decayed; matrices (Linear, Embedding weights) are.
Decaying a LayerNorm gain pulls it towards 0, i.e. it shrinks the whole activation, which is not
the regularisation anyone asked for.
"""
from __future__ import annotations

from torch import nn


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """True for biases and normalisation weights (every tensor with fewer than 2 dimensions)."""
    return param.ndim < 2 or name.endswith(".bias")


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups of the trainable parameters: decayed matrices, and undecayed biases and norms."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
