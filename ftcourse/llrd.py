"""Layer-wise learning-rate decay (LLRD) and its grouped variant, as optimizer parameter groups.

Copy with: models.py, param_groups.py.
Into one package folder: ``python -m ftcourse copy llrd --into mypkg/``.

References: Howard & Ruder 2018 (ULMFiT, "discriminative fine-tuning", arXiv:1801.06146); Sun et al.
2019 (How to Fine-Tune BERT for Text Classification?, arXiv:1905.05583); Zhang et al. 2021
(Revisiting Few-sample BERT Fine-tuning, arXiv:2006.05987, section 5); the ``roberta_base_AdamW_LLRD``
and ``roberta_base_AdamW_grouped_LLRD`` functions of the article "Advanced Techniques for
Fine-tuning Transformers" (Towards Data Science).

With L encoder layers numbered 0 (bottom) to L-1 (top), :func:`llrd_param_groups` gives

    layer i:      lr * decay ** (L - 1 - i)
    embeddings:   lr * decay ** L
    head:         head_lr (default lr)

Two conventions are in use, and they differ by one factor of the decay ξ below the head:

* the "Advanced Techniques for Fine-tuning Transformers" article gives the top encoder block the
  full lr (its ``init_lr``), each block below ξ times the one above, the embeddings ξ^L times lr:
  the formula above, ``llrd_param_groups(model, lr, decay=ξ, head_lr=...)``;
* Zhang et al. 2021's released code (asappresearch/revisit-bert-finetuning, ``run_glue.py``,
  ``get_optimizer_grouped_parameters``) multiplies by ξ *before* the top block: the head (classifier
  and pooler) gets lr, the top block lr·ξ, block i lr·ξ^(L-i), the embeddings lr·ξ^(L+1). That is
  ``llrd_param_groups(model, lr=lr * ξ, decay=ξ, head_lr=lr)``. (Their code also gives the head no
  weight decay at all; here the head's matrices get ``weight_decay`` like every other matrix.)

Grouped LLRD (:func:`grouped_llrd_param_groups`) splits the layers into k contiguous groups that
share one lr each, the embeddings joining the bottom group.

Where every parameter goes: in the block ``ftcourse.models.parameter_blocks`` gives it, the one map
of model parts that freezing and re-initialisation read too. Each trainable parameter lands in
exactly one *block*:

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
import re
from collections.abc import Mapping, Sequence, Set

from torch import nn

from .models import EMBEDDINGS, HEAD, ArgumentTypeError, _is_int, _is_real, encoder_layers, parameter_blocks
from .param_groups import check_weight_decay, is_no_decay


# The course's weight decay (every profile of ftcourse.profiles; BERT's and transformers' usual
# fine-tuning value), the default of both builders here. Not 0: LAMB and LARS adapt a tensor's step only
# in groups whose weight decay is not 0, so groups without any turned LAMB silently into Adam.
COURSE_WEIGHT_DECAY = 0.01


def _check_positive(name: str, value) -> float:
    if not _is_real(value):
        raise ArgumentTypeError(f"{name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _block_name(block) -> str:
    """``"embeddings"``, ``"layer_3"``, ``"head"``: the group-name form of a ``parameter_blocks`` block."""
    return block if isinstance(block, str) else f"layer_{block}"


def layer_blocks(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The trainable ``(name, parameter)`` pairs of ``model`` by block, bottom to top:
    ``"embeddings"``, ``"layer_0"`` ... ``"layer_{L-1}"``, ``"head"`` (see the module docstring;
    ``ftcourse.models.parameter_blocks`` decides the block).

    Every trainable parameter appears exactly once (shared/tied tensors once, under their first
    name); blocks with no trainable parameter are kept, with an empty list.
    """
    n_layers = len(encoder_layers(model))  # TypeError for an unsupported family
    blocks = {EMBEDDINGS: [], **{f"layer_{i}": [] for i in range(n_layers)}, HEAD: []}
    params = dict(model.named_parameters())
    for name, block in parameter_blocks(model).items():
        blocks[_block_name(block)].append((name, params[name]))
    return blocks


def _param_groups(model: nn.Module, block_lrs: dict[str, float], weight_decay: float) -> list[dict]:
    groups = []
    for block, named in layer_blocks(model).items():
        decay = [p for n, p in named if not is_no_decay(n, p)]
        no_decay = [p for n, p in named if is_no_decay(n, p)]
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": block_lrs[block], "weight_decay": wd, "name": f"{block}.{suffix}"})
    return groups


def llrd_param_groups(model: nn.Module, lr: float, decay: float, weight_decay: float = COURSE_WEIGHT_DECAY,
                      head_lr: float | None = None) -> list[dict]:
    """Parameter groups with layer-wise lr decay (Howard & Ruder 2018; Zhang et al. 2021, sec. 5).

    Layer i of L gets ``lr * decay ** (L - 1 - i)`` (the top layer ``lr``), the embeddings
    ``lr * decay ** L``, the head ``head_lr`` (default ``lr``): the convention of the "Advanced
    Techniques for Fine-tuning Transformers" article. Zhang et al.'s code gives the top layer
    ``lr * decay`` already: ``llrd_param_groups(model, lr=lr * decay, decay=decay, head_lr=lr)``
    (module docstring). Biases and normalisation weights get weight decay 0, every other parameter
    ``weight_decay``, by default the course's 0.01 (``COURSE_WEIGHT_DECAY``; it was 0.0, with which
    ``ftcourse.optim.LAMB`` never applies its trust ratio and is plain Adam; pass
    ``weight_decay=0.0`` explicitly for no decay). Only parameters with ``requires_grad``, each
    exactly once. Pass the result to any torch optimizer: ``torch.optim.AdamW(groups, lr=lr)``.

    ``decay=1`` gives every block the same lr (plain fine-tuning with a possibly different head lr).
    Numbers may be Python or numpy numbers. Raises ValueError for ``lr <= 0``, ``decay`` outside
    (0, 1], ``weight_decay`` < 0 or NaN, ``head_lr <= 0`` (or any of them infinite); TypeError for
    a non-number, or for a model family ``ftcourse.models`` does not support.
    """
    lr = _check_positive("lr", lr)
    if not _is_real(decay):
        raise ArgumentTypeError(f"decay must be a number in (0, 1] (1 = no decay), got {decay!r}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1] (1 = no decay), got {decay!r}")
    decay = float(decay)
    weight_decay = check_weight_decay(weight_decay)
    head_lr = lr if head_lr is None else _check_positive("head_lr", head_lr)
    n_layers = len(encoder_layers(model))
    block_lrs = {EMBEDDINGS: lr * decay ** n_layers, HEAD: head_lr}
    block_lrs.update({f"layer_{i}": lr * decay ** (n_layers - 1 - i) for i in range(n_layers)})
    return _param_groups(model, block_lrs, weight_decay)


def split_layers(n_layers: int, n_groups: int) -> list[range]:
    """``n_layers`` layer indices split bottom to top into ``n_groups`` contiguous ranges whose
    sizes differ by at most one; the remainder goes to the *bottom* groups (numpy's
    ``array_split`` convention): 6 layers in 4 groups -> sizes 2, 2, 1, 1.

    Raises ValueError unless ``1 <= n_groups <= n_layers``; TypeError for a non-int argument."""
    for name, value in (("n_layers", n_layers), ("n_groups", n_groups)):
        if not _is_int(value):
            raise ArgumentTypeError(f"{name} must be an int, got {value!r}")
    n_layers, n_groups = int(n_layers), int(n_groups)
    if not 1 <= n_groups <= n_layers:
        raise ValueError(f"the number of groups (n_groups, len(group_lrs) for grouped LLRD) must be between 1 "
                         f"and the number of layers ({n_layers}), got {n_groups}")
    size, extra = divmod(n_layers, n_groups)
    ranges, start = [], 0
    for g in range(n_groups):
        stop = start + size + (1 if g < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return ranges


def grouped_llrd_param_groups(model: nn.Module, group_lrs: Sequence[float],
                              weight_decay: float = COURSE_WEIGHT_DECAY, head_lr: float | None = None) -> list[dict]:
    """Grouped LLRD (``roberta_base_AdamW_grouped_LLRD`` of the "Advanced Techniques for Fine-tuning
    Transformers" article, generalised).

    The L encoder layers are split bottom to top into ``len(group_lrs)`` contiguous groups, as equal
    as possible with the remainder in the bottom groups (:func:`split_layers`); group g's layers
    share ``group_lrs[g]``; the embeddings join the first (bottom) group; the head gets ``head_lr``
    (default: the top group's lr). The article's roberta-base recipe is
    ``group_lrs=[1e-6, 1.75e-6, 3.5e-6], head_lr=3.6e-6, weight_decay=0.01``.

    ``group_lrs``: a list, tuple or 1-D numpy array of lrs, bottom group first. Groups and names are
    as in :func:`llrd_param_groups` (one group per block and decay kind), so the two variants plot
    and inspect the same way; ``weight_decay`` defaults to the course's 0.01, as there. Raises
    ValueError for an empty ``group_lrs``, more groups than layers, a non-positive lr,
    ``weight_decay`` < 0 or NaN, or ``head_lr <= 0``; TypeError when ``group_lrs`` is not a
    sequence of numbers.
    """
    # Not Sequence alone: a numpy array is not registered as one. Sets and dicts have no order of groups.
    if isinstance(group_lrs, (str, bytes, Mapping, Set)) or not hasattr(group_lrs, "__len__") \
            or not hasattr(group_lrs, "__getitem__") or getattr(group_lrs, "ndim", 1) != 1:
        raise ArgumentTypeError(f"group_lrs must be a non-empty sequence of lrs (list, tuple or 1-D array, bottom "
                                f"group first), got {group_lrs!r}")
    if len(group_lrs) == 0:
        raise ValueError(f"group_lrs must be a non-empty sequence of lrs (bottom group first), got {group_lrs!r}")
    group_lrs = [_check_positive(f"group_lrs[{g}]", v) for g, v in enumerate(group_lrs)]
    weight_decay = check_weight_decay(weight_decay)
    head_lr = group_lrs[-1] if head_lr is None else _check_positive("head_lr", head_lr)
    n_layers = len(encoder_layers(model))
    block_lrs = {EMBEDDINGS: group_lrs[0], HEAD: head_lr}
    for g, layers in enumerate(split_layers(n_layers, len(group_lrs))):
        block_lrs.update({f"layer_{i}": group_lrs[g] for i in layers})
    return _param_groups(model, block_lrs, weight_decay)


_BLOCK_NAME = re.compile(r"(embeddings|head|layer_(\d+))\.\w+")


def block_lrs(groups: Sequence[dict]) -> dict[str, float]:
    """``{block: lr}`` of groups made by this module, bottom to top (``"embeddings"``, ``"layer_0"``,
    ..., ``"head"``). Works on ``optimizer.param_groups`` too, so it shows the lrs a schedule has
    set. Raises ValueError for a group without an ``lr`` or without a ``name`` of this module's form
    (``"layer_3.decay"``), or for blocks of one name with two lrs; TypeError for a group that is
    not a dict (a single group passed instead of a list of groups)."""
    if isinstance(groups, Mapping):
        raise TypeError("groups must be a list of parameter-group dicts (e.g. optimizer.param_groups), got one dict")
    lrs: dict[str, float] = {}
    depth: dict[str, float] = {}
    for k, group in enumerate(groups):
        if not isinstance(group, Mapping):
            raise TypeError(f"groups[{k}] must be a parameter-group dict, got {type(group).__name__}")
        name = group.get("name")
        match = _BLOCK_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(f"groups must come from llrd_param_groups / grouped_llrd_param_groups (a 'name' "
                             f"like 'layer_3.decay'); got a group with name={name!r}")
        if "lr" not in group:
            raise ValueError(f"group {name!r} has no 'lr'")
        block = name.split(".")[0]
        if block in lrs and lrs[block] != group["lr"]:
            raise ValueError(f"block {block!r} has two lrs: {lrs[block]} and {group['lr']}")
        lrs[block] = group["lr"]
        depth[block] = -1 if block == EMBEDDINGS else math.inf if block == HEAD else int(match.group(2))
    return dict(sorted(lrs.items(), key=lambda kv: depth[kv[0]]))


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
