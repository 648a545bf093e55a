"""Gradient accumulation done right.

Copy alone.
Into one package folder: ``python -m ftcourse copy accumulation --into mypkg/``.

Reference: the loss of one optimizer step must be the loss of the whole accumulation window,
i.e. the per-item losses summed over all micro-batches of the window and divided by the number of
items in the window (examples, or non-padding tokens for a token-level loss). "Mean per
micro-batch divided by k" is exact only for equal micro-batches with a per-example loss; it is
wrong for a short last window and for token-level losses with padding (transformers fixed this in
its Trainer in 2024). The loop therefore groups micro-batches into windows before the forward pass.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _int_at_least(name: str, value, minimum: int) -> int:
    """``value`` as an int (ints, numpy integers; not bool): TypeError for other types, ValueError below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def accumulation_windows(batches: Iterable, accumulation_steps: int) -> Iterator[list]:
    """Consecutive lists of ``accumulation_steps`` micro-batches; the last list may be shorter.

    ``accumulation_steps`` is an int >= 1 (numpy integers too; not bool): checked at the call,
    ``TypeError`` for another type, ``ValueError`` below 1.
    """
    return _windows(batches, _int_at_least("accumulation_steps", accumulation_steps, 1))


def _windows(batches: Iterable, accumulation_steps: int) -> Iterator[list]:
    window = []
    for batch in batches:
        window.append(batch)
        if len(window) == accumulation_steps:
            yield window
            window = []
    if window:  # a short last window still gets its optimizer step
        yield window


def optimizer_steps_per_epoch(n_batches: int, accumulation_steps: int) -> int:
    """ceil(n_batches / accumulation_steps): one step per (possibly short) window."""
    n_batches = _int_at_least("n_batches", n_batches, 0)
    accumulation_steps = _int_at_least("accumulation_steps", accumulation_steps, 1)
    return math.ceil(n_batches / accumulation_steps)


def count_items(labels: torch.Tensor) -> int:
    """Items that carry a loss: labels other than ``IGNORE_INDEX`` (padding, masked tokens)."""
    return int((labels != IGNORE_INDEX).sum())


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over items; works for sequence (B, C) and token-level (B, T, C) logits."""
    # fp16/bf16 logits (autocast) are upcast so the log-sum-exp is computed in fp32; float64 stays
    # float64 (a plain .float() would silently round the exactness tests down to fp32).
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
