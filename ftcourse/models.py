"""Finding a model's parts: the one map of each model family's blocks.

Copy alone.
Into one package folder: ``python -m ftcourse copy models --into mypkg/``.

Freezing, layer-wise LR decay and re-initialisation all need the same knowledge of a model: the
stack of transformer blocks, bottom first (:func:`encoder_layers`), the embedding module
(:func:`embeddings`), and where every other module belongs. Each model family keeps them under
different attribute names; this module is the one place that knows those names.

Blocks. Every parameter of a supported model belongs to exactly one *block*: ``"embeddings"``
(:data:`EMBEDDINGS`), an encoder block ``0`` (bottom) ... ``L-1`` (top), or ``"head"``
(:data:`HEAD`). The embedding module and the encoder blocks are found by attribute; the other
modules of the backbone are listed in :data:`EXTRA_MODULES` with the block each one joins;
everything outside the backbone (poolers, classifiers) is head. :func:`block_modules` and
:func:`parameter_blocks` give the result for a model. ``ftcourse.freezing``, ``ftcourse.llrd``
and ``ftcourse.reinit`` read it, so "freeze layer 0", "layer 0's lr" and "re-initialise layer 0"
always mean the same parameters.

Linear layers by role. :data:`LINEAR_NAMES` maps each family's Linear layers of a block to logical
names (``query``, ``key``, ``value``, ``attention_output``, ``intermediate``, ``output``), so that
"LoRA on the query and value projections" (``ftcourse.lora``) means the same layers in every family.

Supported families (``model.config.model_type``): bert, roberta, distilbert, deberta-v2, electra.

Loading models is not part of this module: load yours as you always do (``from_pretrained``). The
course loads its offline MiniLM through ``ftcourse.course.pretrained``.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Union

import numpy as np
from torch import nn

EMBEDDINGS, HEAD = "embeddings", "head"
Block = Union[str, int]  # EMBEDDINGS, HEAD, or the index of an encoder block (0 = bottom)

# model_type -> path, under the backbone, of the ModuleList of encoder blocks.
_LAYER_PATHS = {
    "bert": "encoder.layer",
    "roberta": "encoder.layer",
    "electra": "encoder.layer",
    "deberta-v2": "encoder.layer",
    "distilbert": "transformer.layer",
}
SUPPORTED_FAMILIES = tuple(_LAYER_PATHS)

# model_type -> {path under the backbone: block}: every module of the backbone that is neither the
# embedding module nor an encoder block. The rule: a module joins the block whose lr, freezing and
# re-initialisation it must share to stay consistent with its neighbours.
# * ELECTRA ``embeddings_project`` (embedding size -> hidden size, present when they differ) only
#   re-encodes the embeddings, below layer 0: embeddings.
# * DeBERTa-v2 ``encoder.rel_embeddings`` (the relative-position table, with ``relative_attention``)
#   and ``encoder.LayerNorm`` (its norm, with ``norm_rel_ebd="layer_norm"``) are read by every
#   block, the bottom one included: embeddings. Left trainable while "the embeddings" are frozen,
#   they would be a trainable input of every block, so the backward pass would still run through
#   the whole encoder; and with LLRD the lowest-lr consumer (layer 0) sets their lr.
# * DeBERTa-v2 ``encoder.conv`` (with ``conv_kernel_size > 0``) is applied once, to layer 0's output
#   (transformers' DebertaV2Encoder.forward, ``i == 0``): layer 0.
# * BERT's ``pooler`` (RoBERTa's too, on a model built with one) feeds only the classifier: head.
# A module a config leaves out (no conv when conv_kernel_size == 0) is simply absent.
EXTRA_MODULES: dict[str, dict[str, Block]] = {
    "bert": {"pooler": HEAD},
    "roberta": {"pooler": HEAD},
    "electra": {"embeddings_project": EMBEDDINGS},
    "distilbert": {},
    "deberta-v2": {"encoder.rel_embeddings": EMBEDDINGS, "encoder.LayerNorm": EMBEDDINGS, "encoder.conv": 0},
}


# model_type -> {logical name: path, under an encoder block, of that nn.Linear}: the Linear layers of a
# block by what they do, whatever the family calls them. ``ftcourse.lora`` reads it (its ``targets``).
# query/key/value: the attention's input projections; attention_output: the projection of the attention's
# output back to the hidden size; intermediate: the feed-forward up-projection; output: its
# down-projection. DeBERTa-v2's ``pos_key_proj``/``pos_query_proj`` (with ``pos_att_type`` and
# ``share_att_key=False``) have no logical name: no family but DeBERTa-v2 has them.
LINEAR_NAMES: dict[str, dict[str, str]] = {
    **{family: {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                "attention_output": "attention.output.dense", "intermediate": "intermediate.dense",
                "output": "output.dense"}
       for family in ("bert", "roberta", "electra")},
    "distilbert": {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
                   "attention_output": "attention.out_lin", "intermediate": "ffn.lin1", "output": "ffn.lin2"},
    "deberta-v2": {"query": "attention.self.query_proj", "key": "attention.self.key_proj",
                   "value": "attention.self.value_proj", "attention_output": "attention.output.dense",
                   "intermediate": "intermediate.dense", "output": "output.dense"},
}
LINEAR_ROLES = ("query", "key", "value", "attention_output", "intermediate", "output")

class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float or a bool where an int is needed, ...).

    A TypeError; also a ValueError, because several functions of ftcourse.freezing, ftcourse.llrd
    and ftcourse.reinit raised ValueError for a wrong type before, and code that catches that must
    keep working."""


# Argument checks shared by freezing, llrd and reinit (which are copied together with this module).
def _is_int(value) -> bool:
    """Python and numpy integers; not bool (``True`` is not a layer count) and not ``2.0``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """Python and numpy ints and floats; not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_flag(name: str, value) -> bool:
    """A True/False argument: a string such as ``"False"`` is truthy and would silently mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def model_family(model: nn.Module) -> str:
    """``model.config.model_type`` of a supported model; TypeError naming the supported families
    for any other object."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _LAYER_PATHS or not isinstance(model, nn.Module):
        raise TypeError(
            f"unsupported model {type(model).__name__} (model_type={model_type!r}); "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return model_type


_family = model_family  # the name the other modules used before model_family was public


def base_model(model: nn.Module) -> nn.Module:
    """The backbone (``model.bert``, ``model.roberta``, ...) of a supported classification model
    (the model itself when it is a bare backbone such as ``BertModel``)."""
    model_family(model)
    backbone = getattr(model, "base_model", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} has config.model_type={model.config.model_type!r} but no "
                        "base_model: not a transformers model of a supported family")
    return backbone


def _submodule(backbone: nn.Module, path: str) -> nn.Module | None:
    """``backbone``'s module at the dotted ``path``, or None where it is absent (or set to None)."""
    try:
        return backbone.get_submodule(path)
    except AttributeError:
        return None


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of ``model``, bottom (closest to the embeddings) first."""
    path = _LAYER_PATHS[model_family(model)]
    layers = _submodule(base_model(model), path)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} ({model.config.model_type}) has no block list at "
                        f"base_model.{path}: not a transformers model of this family")
    return layers


def embeddings(model: nn.Module) -> nn.Module:
    """The embedding module of ``model`` (word, position and, where present, token-type embeddings)."""
    module = getattr(base_model(model), "embeddings", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{type(model).__name__} ({model.config.model_type}) has no base_model.embeddings: "
                        "not a transformers model of this family")
    return module


def extra_modules(model: nn.Module) -> list[tuple[str, nn.Module, Block]]:
    """``(name, module, block)`` of the modules of :data:`EXTRA_MODULES` that ``model`` has, in the
    map's order; ``name`` as in ``model.named_modules()``."""
    backbone = base_model(model)
    names = {id(m): n for n, m in model.named_modules()}
    found = []
    for path, block in EXTRA_MODULES[model_family(model)].items():
        module = _submodule(backbone, path)
        if module is not None:  # optional in the config (e.g. no conv when conv_kernel_size == 0)
            found.append((names[id(module)], module, block))
    return found


def embedding_extras(model: nn.Module) -> list[nn.Module]:
    """Modules that belong with the embeddings but live outside :func:`embeddings`, bottom first:
    the modules of :data:`EXTRA_MODULES` mapped to ``"embeddings"`` that ``model`` has (ELECTRA's
    ``embeddings_project``; DeBERTa-v2's ``encoder.rel_embeddings`` and ``encoder.LayerNorm``).
    Empty for the other families."""
    return [module for _, module, block in extra_modules(model) if block == EMBEDDINGS]


def block_modules(model: nn.Module) -> dict[Block, list[tuple[str, nn.Module]]]:
    """The ``(name, module)`` pairs of every block, bottom to top: ``"embeddings"``, ``0`` ...
    ``L-1``, ``"head"`` (see the module docstring); ``name`` as in ``model.named_modules()``.

    ``"embeddings"``: the embedding module, then its extras. Block ``i``: encoder block ``i``, then
    the extras mapped to ``i`` (DeBERTa-v2's ``encoder.conv`` for 0). ``"head"``: the extras mapped
    to the head, then every direct child of ``model`` outside the backbone (empty for a bare
    backbone). Freezing or re-initialising a block means all of its modules.

    Warns (RuntimeWarning) when the backbone holds a parameter in none of these modules: a module
    this map does not know (another transformers version?) would silently count as head and stay
    trainable when its neighbours are frozen.
    """
    layers, backbone, embedding_module = encoder_layers(model), base_model(model), embeddings(model)
    names = {id(m): n for n, m in model.named_modules()}
    blocks: dict[Block, list[tuple[str, nn.Module]]] = {EMBEDDINGS: [(names[id(embedding_module)], embedding_module)]}
    blocks.update({i: [(names[id(layer)], layer)] for i, layer in enumerate(layers)})
    blocks[HEAD] = []
    for name, module, block in extra_modules(model):
        blocks[block].append((name, module))
    if backbone is not model:
        blocks[HEAD] += [(names[id(child)], child) for child in model.children() if child is not backbone]
    covered = {id(p) for named in blocks.values() for _, module in named for p in module.parameters()}
    unknown = [n for n, p in backbone.named_parameters() if id(p) not in covered]
    if unknown:
        warnings.warn(f"ftcourse.models: {len(unknown)} parameters of the {model_family(model)} backbone are in no "
                      f"module ftcourse.models knows (e.g. {unknown[0]!r} of base_model); they count as head, so "
                      "freezing and LLRD treat them like the classifier. Add their module to "
                      "ftcourse.models.EXTRA_MODULES.", RuntimeWarning, stacklevel=2)
    return blocks


def parameter_blocks(model: nn.Module, trainable_only: bool = True) -> dict[str, Block]:
    """``{parameter name: block}`` for every parameter of ``model`` (only those with
    ``requires_grad`` if ``trainable_only``), in ``model.named_parameters()`` order, so each tensor
    exactly once (a shared tensor under its first name). Blocks are ``"embeddings"``, ``0`` ...
    ``L-1`` and ``"head"``, as in :func:`block_modules`; a parameter in none of its modules (one
    set directly on the model) is head."""
    trainable_only = _check_flag("trainable_only", trainable_only)
    block_of: dict[int, Block] = {}
    for block, named in block_modules(model).items():
        for _, module in named:
            for p in module.parameters():
                block_of.setdefault(id(p), block)  # a tensor shared by two blocks stays in the lower one
    return {name: block_of.get(id(p), HEAD) for name, p in model.named_parameters()
            if p.requires_grad or not trainable_only}
