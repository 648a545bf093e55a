"""Layer-wise learning-rate decay (LLRD) and its grouped variant, as optimizer parameter groups.

References: Howard & Ruder 2018 (ULMFiT, "discriminative fine-tuning", arXiv:1801.06146); Sun et al.
2019 (How to Fine-Tune BERT for Text Classification?, arXiv:1905.05583); Zhang et al. 2021
(Revisiting Few-sample BERT Fine-tuning, arXiv:2006.05987, section 5); the seed article's
``roberta_base_AdamW_LLRD`` and ``roberta_base_AdamW_grouped_LLRD``.

With L encoder layers numbered 0 (bottom) to L-1 (top), LLRD gives

    layer i:      lr * decay ** (L - 1 - i)
    embeddings:   lr * decay ** L
    head:         head_lr (default lr)

Grouped LLRD splits the layers into k contiguous groups that share one lr each, the embeddings
joining the bottom group.

Where every parameter goes. Each trainable parameter lands in exactly one *block*:

* ``embeddings``: the backbone's embedding module, plus the modules that only re-encode the
  input or positions for every layer, because the lowest-lr consumer sets their lr:
  ELECTRA's ``embeddings_project`` (embedding size -> hidden size, below layer 0) and DeBERTa-v2's
  ``encoder.rel_embeddings`` and ``encoder.LayerNorm`` (the shared relative-position table and the
  norm applied to it; every layer, the bottom one included, reads them).
* ``layer_i``: the parameters of encoder block i; DeBERTa-v2's ``encoder.conv`` (present when
  ``conv_kernel_size > 0``) joins ``layer_0``, since it is applied once, to layer 0's output.
* ``head``: everything else (BERT's pooler, DeBERTa-v2's ``pooler``, DistilBERT's
  ``pre_classifier``, every ``classifier``): task-specific or newly initialised weights.

Each block is split into a ``decay`` group and a ``no_decay`` group (biases and normalisation
weights, ``ftcourse.param_groups.is_no_decay``); empty groups are left out. Every group dict has a
readable ``name`` (``"layer_3.decay"``, ``"embeddings.no_decay"``, ``"head.decay"``) that torch
optimizers carry along untouched. Groups are ordered bottom to top.

The lrs are each group's *initial* lr: a ``LambdaLR`` schedule (every schedule of
``transformers.get_scheduler`` and ``ftcourse.schedules``) multiplies each group's own lr by the
same factor, so the ratios between layers hold at every step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .models import _family, base_model, embeddings, encoder_layers
from .param_groups import is_no_decay

EMBEDDINGS, HEAD = "embeddings", "head"

# model_type -> [(module path under the backbone, block it joins)]: the encoder-level modules
# that are neither the embedding module nor an encoder block (see the module docstring).
_EXTRA_BLOCKS = {
    "electra": [("embeddings_project", EMBEDDINGS)],
    "deberta-v2": [("encoder.rel_embeddings", EMBEDDINGS), ("encoder.LayerNorm", EMBEDDINGS), ("encoder.conv", 0)],
}


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_weight_decay(weight_decay) -> float:
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    return float(weight_decay)


def layer_blocks(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The trainable ``(name, parameter)`` pairs of ``model`` by block, bottom to top:
    ``"embeddings"``, ``"layer_0"`` ... ``"layer_{L-1}"``, ``"head"`` (see the module docstring).

    Every trainable parameter appears exactly once (shared/tied tensors once, under their first
    name); blocks with no trainable parameter are kept, with an empty list.
    """
    layers = encoder_layers(model)  # TypeError for an unsupported family
    block_of: dict[int, str] = {}
    for p in embeddings(model).parameters():
        block_of[id(p)] = EMBEDDINGS
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            block_of[id(p)] = f"layer_{i}"
    backbone = base_model(model)
    for path, block in _EXTRA_BLOCKS.get(_family(model), []):
        module = backbone.get_submodule(path) if _has_submodule(backbone, path) else None
        if module is None:
            continue  # optional in the config (e.g. no conv when conv_kernel_size == 0)
        for p in module.parameters():
            block_of[id(p)] = block if isinstance(block, str) else f"layer_{block}"
    blocks = {EMBEDDINGS: [], **{f"layer_{i}": [] for i in range(len(layers))}, HEAD: []}
    for name, p in model.named_parameters():  # named_parameters yields a shared tensor once
        if p.requires_grad:
            blocks[block_of.get(id(p), HEAD)].append((name, p))
    return blocks


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        return module.get_submodule(path) is not None
    except AttributeError:
        return False


def _param_groups(model: nn.Module, block_lrs: dict[str, float], weight_decay: float) -> list[dict]:
    groups = []
    for block, named in layer_blocks(model).items():
        decay = [p for n, p in named if not is_no_decay(n, p)]
        no_decay = [p for n, p in named if is_no_decay(n, p)]
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": block_lrs[block], "weight_decay": wd, "name": f"{block}.{suffix}"})
    return groups


def llrd_param_groups(model: nn.Module, lr: float, decay: float, weight_decay: float = 0.0,
                      head_lr: float | None = None) -> list[dict]:
    """Parameter groups with layer-wise lr decay (Howard & Ruder 2018; Zhang et al. 2021, sec. 5).

    Layer i of L gets ``lr * decay ** (L - 1 - i)`` (the top layer ``lr``), the embeddings
    ``lr * decay ** L``, the head ``head_lr`` (default ``lr``). Biases and normalisation weights get
    weight decay 0, every other parameter ``weight_decay``. Only parameters with ``requires_grad``,
    each exactly once. Pass the result to any torch optimizer: ``torch.optim.AdamW(groups, lr=lr)``.

    ``decay=1`` gives every block the same lr (plain fine-tuning with a possibly different head lr).
    Raises ValueError for ``lr <= 0``, ``decay`` outside (0, 1], ``weight_decay < 0`` or
    ``head_lr <= 0``; TypeError for a model family ``ftcourse.models`` does not support.
    """
    lr = _check_positive("lr", lr)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1] (1 = no decay), got {decay!r}")
    weight_decay = _check_weight_decay(weight_decay)
    head_lr = lr if head_lr is None else _check_positive("head_lr", head_lr)
    n_layers = len(encoder_layers(model))
    block_lrs = {EMBEDDINGS: lr * decay ** n_layers, HEAD: head_lr}
    block_lrs.update({f"layer_{i}": lr * decay ** (n_layers - 1 - i) for i in range(n_layers)})
    return _param_groups(model, block_lrs, weight_decay)


def split_layers(n_layers: int, n_groups: int) -> list[range]:
    """``n_layers`` layer indices split bottom to top into ``n_groups`` contiguous ranges whose
    sizes differ by at most one; the remainder goes to the *bottom* groups (numpy's
    ``array_split`` convention): 6 layers in 4 groups -> sizes 2, 2, 1, 1."""
    if not 1 <= n_groups <= n_layers:
        raise ValueError(f"the number of groups (len(group_lrs)) must be between 1 and the number of layers "
                         f"({n_layers}), got {n_groups}")
    size, extra = divmod(n_layers, n_groups)
    ranges, start = [], 0
    for g in range(n_groups):
        stop = start + size + (1 if g < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return ranges


def grouped_llrd_param_groups(model: nn.Module, group_lrs: Sequence[float], weight_decay: float = 0.0,
                              head_lr: float | None = None) -> list[dict]:
    """Grouped LLRD (the seed article's ``roberta_base_AdamW_grouped_LLRD``, generalised).

    The L encoder layers are split bottom to top into ``len(group_lrs)`` contiguous groups, as equal
    as possible with the remainder in the bottom groups (:func:`split_layers`); group g's layers
    share ``group_lrs[g]``; the embeddings join the first (bottom) group; the head gets ``head_lr``
    (default: the top group's lr). The seed article's roberta-base recipe is
    ``group_lrs=[1e-6, 1.75e-6, 3.5e-6], head_lr=3.6e-6, weight_decay=0.01``.

    Groups and names are as in :func:`llrd_param_groups` (one group per block and decay kind), so
    the two variants plot and inspect the same way. Raises ValueError for an empty ``group_lrs``,
    more groups than layers, a non-positive lr, ``weight_decay < 0`` or ``head_lr <= 0``.
    """
    if isinstance(group_lrs, (str, bytes)) or not isinstance(group_lrs, Sequence) or len(group_lrs) == 0:
        raise ValueError(f"group_lrs must be a non-empty sequence of lrs (bottom group first), got {group_lrs!r}")
    group_lrs = [_check_positive(f"group_lrs[{g}]", v) for g, v in enumerate(group_lrs)]
    weight_decay = _check_weight_decay(weight_decay)
    head_lr = group_lrs[-1] if head_lr is None else _check_positive("head_lr", head_lr)
    n_layers = len(encoder_layers(model))
    block_lrs = {EMBEDDINGS: group_lrs[0], HEAD: head_lr}
    for g, layers in enumerate(split_layers(n_layers, len(group_lrs))):
        block_lrs.update({f"layer_{i}": group_lrs[g] for i in layers})
    return _param_groups(model, block_lrs, weight_decay)


def block_lrs(groups: Sequence[dict]) -> dict[str, float]:
    """``{block: lr}`` of groups made by this module, bottom to top (``"embeddings"``, ``"layer_0"``,
    ..., ``"head"``). Works on ``optimizer.param_groups`` too, so it shows the lrs a schedule has
    set. Raises ValueError for a group without a ``name`` or for blocks of one name with two lrs."""
    lrs: dict[str, float] = {}
    for group in groups:
        name = group.get("name")
        if not isinstance(name, str) or "." not in name:
            raise ValueError(f"groups must come from llrd_param_groups / grouped_llrd_param_groups (a 'name' "
                             f"like 'layer_3.decay'); got a group with name={name!r}")
        block = name.split(".")[0]
        if block in lrs and lrs[block] != group["lr"]:
            raise ValueError(f"block {block!r} has two lrs: {lrs[block]} and {group['lr']}")
        lrs[block] = group["lr"]

    def depth(block: str) -> float:
        return -1 if block == EMBEDDINGS else math.inf if block == HEAD else int(block.split("_")[1])

    return dict(sorted(lrs.items(), key=lambda kv: depth(kv[0])))


def plot_layer_lrs(groups: Sequence[dict], ax=None, label: str | None = None, **plot_kwargs):
    """Plot the lr of every block (embeddings, layer 0 ... L-1, head) as a step line with markers.

    Call it once per variant on the same ``ax`` to compare them. Returns ``ax``."""
    import matplotlib.pyplot as plt

    lrs = block_lrs(groups)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ticks = ["emb" if b == EMBEDDINGS else b.replace("layer_", "L") for b in lrs]
    ax.plot(range(len(lrs)), list(lrs.values()), drawstyle="steps-mid", marker="o", label=label, **plot_kwargs)
    ax.set_xticks(range(len(lrs)), ticks)
    ax.set_xlabel("block (bottom to top)")
    ax.set_ylabel("initial learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    if label is not None:
        ax.legend()
    return ax
