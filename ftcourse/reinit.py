"""Re-initialising the top encoder layers (and the pooler) of a pretrained model.

Copy with: models.py.
Into one package folder: ``python -m ftcourse copy reinit --into mypkg/``.

Reference: Zhang et al. 2021, Revisiting Few-sample BERT Fine-tuning (arXiv:2006.05987), section 6:
re-initialise the pooler and the top L blocks with BERT's original scheme -- Linear and Embedding
weights ~ N(0, ``config.initializer_range``), biases 0, LayerNorm weight 1 and bias 0 -- which
helps most with a few hundred to a few thousand training examples.

"Layer i" is block i of :func:`ftcourse.models.block_modules`, the map of model parts that freezing
and LLRD read too: DeBERTa-v2's ``encoder.conv`` (applied once, to layer 0's output) is part of
layer 0, so it is re-initialised only when all the layers are. Its ``Conv1d`` gets the scheme of
transformers' ``_init_weights`` for convolutions: weight ~ N(0, ``initializer_range``), bias 0.

Why not ``model._init_weights(module)`` (or ``model.apply(model._init_weights)``), as many
tutorials do: in transformers 5 every weight loaded by ``from_pretrained`` carries the flag
``_is_hf_initialized``, and the initialisers of ``transformers.initialization`` skip flagged
tensors. The call returns without error and changes nothing. Here the weights are drawn with
plain ``torch.nn.init`` under ``torch.no_grad()``, which ignores the flag.

Random numbers come from torch's global generator: ``torch.manual_seed(s)`` before the call makes
it reproducible.
"""
from __future__ import annotations

import math
import operator

import torch
from torch import nn

from .models import ArgumentTypeError, _check_flag, _is_int, _is_real, base_model, block_modules, encoder_layers


def _is_layer_norm(module: nn.Module) -> bool:
    # transformers names some norms after the model (e.g. "DebertaV2LayerNorm"), hence the name test
    return isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__


@torch.no_grad()
def _reinit_module_tree(root: nn.Module, std: float, root_name: str) -> None:
    """Re-initialise every parameter under ``root``; TypeError for a module type we do not know
    how to initialise (so that nothing is left pretrained without anyone noticing)."""
    for name, module in root.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif _is_layer_norm(module) and set(own) <= {"weight", "bias"}:
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        else:
            full = f"{root_name}.{name}" if name else root_name
            raise TypeError(f"reinit: do not know how to initialise {type(module).__name__} at {full!r} "
                            f"(parameters {sorted(own)}); supported: Linear, Conv1d, Embedding, LayerNorm")


def find_pooler(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(name, module)`` of the pooler, or None where the model has none.

    BERT: ``bert.pooler`` (dense + tanh on the [CLS] vector); DeBERTa-v2: ``pooler`` (its
    ``ContextPooler``, on the classification model itself). RoBERTa's classification model has
    ``roberta.pooler = None`` (its head does its own dense + tanh), and ELECTRA and DistilBERT
    have no pooler: None for all three.
    """
    backbone = base_model(model)
    names = {id(m): n for n, m in model.named_modules()}
    for owner in (backbone, model):
        pooler = getattr(owner, "pooler", None)
        if isinstance(pooler, nn.Module):
            return names[id(pooler)], pooler
    return None


def _init_std(model: nn.Module) -> float:
    std = getattr(model.config, "initializer_range", None)
    if not _is_real(std) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"model.config.initializer_range must be a number > 0, got {std!r}")
    return float(std)


def reinit_top_layers(model: nn.Module, n: int, reinit_pooler: bool = True) -> list[str]:
    """Re-initialise the top ``n`` encoder layers and, when asked and present, the pooler
    (Zhang et al. 2021, sec. 6).

    Linear (and Conv1d) and Embedding weights ~ N(0, ``model.config.initializer_range``), biases 0,
    LayerNorm weight 1 and bias 0, drawn with ``torch.nn.init`` under ``torch.no_grad()``, so it
    works on weights loaded by ``from_pretrained`` (where ``model._init_weights`` silently does
    nothing). A layer is its block of ``ftcourse.models.block_modules``: with ``n`` = all layers,
    DeBERTa-v2's ``encoder.conv`` (part of layer 0) is re-initialised too; with fewer it is not.

    Returns the names (as in ``model.named_modules()``) of the modules re-initialised, bottom
    first: e.g. ``["bert.encoder.layer.4", "bert.encoder.layer.5", "bert.pooler"]``. The pooler
    is re-initialised whenever ``reinit_pooler`` is true, also for ``n = 0``; models without one
    (RoBERTa, ELECTRA, DistilBERT, see :func:`find_pooler`) are skipped and the list then has no
    pooler entry. Uses torch's global RNG (seed it for reproducible weights).

    Raises ValueError for ``n`` outside [0, number of layers]; TypeError (also a ValueError) for a
    non-int ``n`` (Python and numpy ints pass, bools do not); TypeError for a non-bool
    ``reinit_pooler`` or a model family ``ftcourse.models`` does not support.
    """
    layers = encoder_layers(model)
    message = f"n must be an integer in [0, {len(layers)}] (the number of encoder layers), got {n!r}"
    if not _is_int(n):
        raise ArgumentTypeError(message)
    if not 0 <= n <= len(layers):
        raise ValueError(message)
    n = operator.index(n)
    reinit_pooler = _check_flag("reinit_pooler", reinit_pooler)
    std = _init_std(model)
    parts = block_modules(model)
    done = []
    for i in range(len(layers) - n, len(layers)):
        for name, module in parts[i]:
            _reinit_module_tree(module, std, name)
            done.append(name)
    if reinit_pooler:
        found = find_pooler(model)
        if found is not None:
            name, pooler = found
            _reinit_module_tree(pooler, std, name)
            done.append(name)
    return done


HEAD_INITS = ("normal", "xavier_uniform", "kaiming_normal")


def classifier_head(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of the task head, which ``from_pretrained`` creates new: every Linear
    outside the backbone (``classifier``, RoBERTa/ELECTRA ``classifier.dense``/``out_proj``,
    DistilBERT ``pre_classifier``), except a pooler that sits on the model (DeBERTa-v2)."""
    backbone = base_model(model)
    inside = {id(m) for m in backbone.modules()}
    pooler = find_pooler(model)
    if pooler is not None:
        inside |= {id(m) for m in pooler[1].modules()}
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in inside]


@torch.no_grad()
def init_classifier_head(model: nn.Module, method: str = "normal") -> list[str]:
    """Initialise the head's Linear weights (see :func:`classifier_head`) with one of
    ``HEAD_INITS``, biases 0; returns their names.

    ``"normal"``: N(0, ``config.initializer_range``), what transformers does (BERT's scheme).
    ``"xavier_uniform"``: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
    ``"kaiming_normal"``: N(0, 2 / fan_in) (He et al. 2015, ReLU gain, fan_in mode).
    Uses torch's global RNG. ValueError for another ``method`` (TypeError for a non-str one), and
    for ``"normal"`` when ``config.initializer_range`` is not a number > 0.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be one of {', '.join(HEAD_INITS)} (a str), got {method!r}")
    if method not in HEAD_INITS:
        raise ValueError(f"method must be one of {', '.join(HEAD_INITS)}, got {method!r}")
    std = _init_std(model) if method == "normal" else None
    head = classifier_head(model)
    for _, linear in head:
        if method == "normal":
            nn.init.normal_(linear.weight, mean=0.0, std=std)
        elif method == "xavier_uniform":
            nn.init.xavier_uniform_(linear.weight)
        else:
            nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="relu")
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
    return [name for name, _ in head]
