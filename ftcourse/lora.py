"""LoRA: train small low-rank updates of a block's Linear layers, the pretrained weights frozen.

Copy with: models.py.
Into one package folder: ``python -m ftcourse copy lora --into mypkg/``.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685). A
pretrained Linear layer ``h = W x + b`` (``W``: out x in) is kept frozen and gets a trainable
update of rank ``r``::

    h = W x + b + (alpha / r) * B A x        A: r x in,  B: out x r,  r << min(in, out)

``A`` is initialised like an ``nn.Linear`` weight (Kaiming-uniform with ``a = sqrt(5)``), ``B`` with
zeros, so ``B A = 0``: at step 0 the wrapped model computes exactly what the original computes,
and fine-tuning starts from the pretrained function. (The first gradient then reaches ``B`` only:
``dL/dA = B^T (...) = 0`` while ``B = 0``.) Scaling by ``alpha / r`` (``scaling``) "helps to reduce
the need to retune hyperparameters when we vary r" (the paper, section 4.1): ``alpha`` stays fixed
while ``r`` is tuned. Dropout, if any, is applied to the adapter's input only. Each adapted layer adds ``r * (in + out)`` trainable
parameters, against ``in * out`` for the layer itself.

Merging: after training ``W' = W + (alpha / r) B A`` is an ordinary Linear weight
(:func:`merge_lora`), so a merged model costs nothing extra at inference.

Which layers: the paper adapts the attention's query and value projections (``targets=("query",
"value")``, the default here and peft's default for BERT-like models); ``targets`` can name any of
the logical names of ``ftcourse.models.LINEAR_NAMES`` (``query``, ``key``, ``value``,
``attention_output``, ``intermediate``, ``output``), which mean the same layers in every supported
family. Everything else is frozen except, with ``train_head=True``, the classification head
(``ftcourse.models``' head block: pooler and classifier), which a new task needs trained from scratch.

Same numbers as Hugging Face peft's default LoRA (``LoraConfig()``: ``init_lora_weights=True``,
``use_rslora=False``, ``fan_in_fan_out=False``): the same forward
(``base(x) + lora_B(lora_A(dropout(x))) * scaling``), the same initialisation drawn from the random
generator in the same order, the same merged weights (tests/test_lora.py checks all of it against
peft 0.21.2 in float64, bit for bit).

Saving: :func:`lora_state_dict` holds only what training changed (the adapters and the trainable
head); :func:`load_lora_state_dict` puts it back onto a fresh ``add_lora`` model of the same base.

Gradient checkpointing with LoRA: use the non-reentrant implementation
(:func:`enable_gradient_checkpointing`). torch's reentrant checkpoint computes gradients only
through a checkpointed block's *inputs* that require grad; with every base weight frozen nothing
below the adapters does (the embeddings output does not), so the adapters inside checkpointed blocks
silently get no gradient at all, unless a hook makes the embeddings output require grad
(``model.enable_input_require_grads()``, which transformers 5.24's ``activation_checkpointing_enable``
registers by itself for models that take ``input_ids``). The non-reentrant checkpoint has no such
condition, and is transformers 5.24's default.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .models import (
    HEAD,
    LINEAR_NAMES,
    LINEAR_ROLES,
    ArgumentTypeError,
    _check_flag,
    _is_int,
    _is_real,
    _submodule,
    block_modules,
    encoder_layers,
    model_family,
)

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "lora_layers",
    "lora_state_dict",
    "load_lora_state_dict",
    "trainable_parameters",
    "enable_gradient_checkpointing",
]


def _check_r(r) -> int:
    if not _is_int(r):
        raise ArgumentTypeError(f"r (the rank) must be an int >= 1, got {r!r}")
    if r < 1:
        raise ValueError(f"r (the rank) must be an int >= 1, got {r!r}")
    return int(r)


def _check_alpha(alpha) -> float:
    if not _is_real(alpha):
        raise ArgumentTypeError(f"alpha must be a number > 0 (scaling = alpha / r), got {alpha!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0 (scaling = alpha / r), got {alpha!r}")
    return alpha


def _check_dropout(dropout) -> float:
    if not _is_real(dropout):
        raise ArgumentTypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if not 0 <= dropout < 1:  # also refuses NaN
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


class LoRALinear(nn.Module):
    """``base(x) + lora_B(lora_A(dropout(x))) * scaling``: a frozen ``nn.Linear`` plus a rank-``r`` update.

    Attributes: ``base`` (the original layer, its parameters set to ``requires_grad=False``),
    ``lora_A`` (``nn.Linear(in_features, r, bias=False)``, Kaiming-uniform as in ``nn.Linear``),
    ``lora_B`` (``nn.Linear(r, out_features, bias=False)``, zeros), ``scaling = alpha / r``,
    ``dropout`` (``nn.Dropout(dropout)``, or ``nn.Identity()`` for 0), ``r``, ``alpha``.

    The adapters are created exactly as peft creates them: both ``nn.Linear`` built in the default
    dtype on the CPU (each draws its default init from the random generator), ``A`` re-drawn with
    ``kaiming_uniform_(a=sqrt(5))``, ``B`` zeroed, then both moved to the device and (floating)
    dtype of ``base.weight``. So, from the same seed, the same ``A`` as peft's.

    Raises TypeError when ``base`` is not an ``nn.Linear`` (ValueError when it already is a
    LoRALinear), and for ``r``, ``alpha``, ``dropout`` as :func:`add_lora` does.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if isinstance(base, LoRALinear):
            raise ValueError("base is already a LoRALinear: LoRA is applied once per layer")
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        r, alpha, dropout = _check_r(r), _check_alpha(alpha), _check_dropout(dropout)
        for p in base.parameters():
            p.requires_grad_(False)
            p.grad = None  # a torch optimizer skips a parameter only when its grad is None
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        lora_A = nn.Linear(base.in_features, r, bias=False)
        lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(lora_B.weight)
        weight = base.weight
        dtype = weight.dtype if (weight.dtype.is_floating_point or weight.dtype.is_complex) else None
        self.lora_A = lora_A.to(weight.device, dtype=dtype)
        self.lora_B = lora_B.to(weight.device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        weight_dtype = self.lora_A.weight.dtype
        x = x if x.dtype == weight_dtype else x.to(weight_dtype)
        return (result + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``(B @ A) * scaling`` (out x in): what merging adds to ``base.weight``. Computed in
        float32 for float16/bfloat16 adapters on the CPU (as peft does), returned in their dtype."""
        a, b = self.lora_A.weight, self.lora_B.weight
        upcast = a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16)
        delta = ((b.float() @ a.float()) if upcast else (b @ a)) * self.scaling
        return delta.to(a.dtype)

    def merge(self) -> nn.Linear:
        """Fold the update into ``base.weight`` in place and return ``base`` (still frozen). The
        LoRALinear must not be used afterwards: its base already holds the update."""
        with torch.no_grad():
            self.base.weight.data += self.delta_weight().to(self.base.weight.dtype)
        return self.base

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """``(name, layer)`` of every :class:`LoRALinear` of ``model``, in ``model.named_modules()`` order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]


def _check_targets(targets, family: str) -> tuple[str, ...]:
    allowed = ", ".join(LINEAR_ROLES)
    if isinstance(targets, (str, bytes, Mapping)) or not isinstance(targets, Iterable):
        raise TypeError(f"targets must be a tuple or list of logical layer names ({allowed}), got {targets!r}"
                        + (f"; for one layer write ({targets!r},)" if isinstance(targets, str) else ""))
    names = list(targets)
    if not names:
        raise ValueError(f"targets must name at least one layer ({allowed}), got {targets!r}")
    wrong_type = [t for t in names if not isinstance(t, str)]
    if wrong_type:
        raise ArgumentTypeError(f"targets must be logical layer names ({allowed}), got {wrong_type}")
    unknown = [t for t in names if t not in LINEAR_NAMES[family]]
    if unknown:
        raise ValueError(f"targets: unknown logical layer name(s) {unknown}; allowed: {allowed}")
    return tuple(dict.fromkeys(names))  # duplicates once, in the given order


def _replace(block: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(block.get_submodule(parent_path) if parent_path else block, attr, new)


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.0,
             targets: Iterable[str] = ("query", "value"), train_head: bool = True) -> nn.Module:
    """Wrap the ``targets`` Linear layers of every encoder block of ``model`` in :class:`LoRALinear`
    and freeze everything else except, with ``train_head``, the classification head. In place;
    returns ``model``.

    Args:
        model: a model of a supported family (``ftcourse.models``), not already LoRA-adapted.
        r: the rank, an int >= 1. alpha: a number > 0; the update is scaled by ``alpha / r``.
        dropout: dropout on the adapters' input, in ``[0, 1)``.
        targets: logical names of ``ftcourse.models.LINEAR_NAMES`` (``query``, ``key``, ``value``,
            ``attention_output``, ``intermediate``, ``output``), mapped to each family's layers.
        train_head: leave the head block (pooler, classifier: ``ftcourse.models.block_modules``'
            ``"head"``) trainable; else it is frozen too and only the adapters train.

    After the call exactly the adapters (and the head, with ``train_head``) have
    ``requires_grad=True``; every other parameter has ``requires_grad=False`` and ``grad=None``.
    Within a block, the layers are wrapped in the block's module order (peft's order, so the same
    seed gives the same adapters as peft).

    Raises:
        ValueError: ``r < 1``, ``alpha <= 0``, ``dropout`` outside ``[0, 1)``, an unknown or empty
        target, a target whose layer a block does not have (the message lists the logical names and
        the Linear layers a block has), or a model that already has LoRA layers. TypeError:
        wrong types (a bool is not an int), ``targets`` a single string, an unsupported model.
        Nothing is changed when it raises.
    """
    family = model_family(model)
    r, alpha, dropout = _check_r(r), _check_alpha(alpha), _check_dropout(dropout)
    targets = _check_targets(targets, family)
    train_head = _check_flag("train_head", train_head)
    existing = lora_layers(model)
    if existing:
        raise ValueError(f"model already has {len(existing)} LoRA layers (e.g. {existing[0][0]!r}): add_lora is "
                         "applied once; merge_lora(model) first to fold them into the weights")
    paths = LINEAR_NAMES[family]
    plan = []  # resolve every layer before changing anything
    for index, block in enumerate(encoder_layers(model)):
        order = {name: k for k, (name, _) in enumerate(block.named_modules())}
        for target in targets:
            if not isinstance(_submodule(block, paths[target]), nn.Linear):
                linears = [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]
                raise ValueError(
                    f"targets: {target!r} ({family}: {paths[target]!r}) matches no nn.Linear in block {index} of "
                    f"{type(model).__name__}; logical names: {', '.join(LINEAR_ROLES)}; the Linear layers of a "
                    f"block: {', '.join(linears)} (ftcourse.models.LINEAR_NAMES maps the names)")
        plan += [(block, path) for path in sorted((paths[t] for t in targets), key=order.__getitem__)]
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for block, path in plan:
        _replace(block, path, LoRALinear(block.get_submodule(path), r, alpha, dropout))
    if train_head:
        for _, module in block_modules(model)[HEAD]:
            module.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (``W + (B @ A) * scaling``) and put the plain
    ``nn.Linear`` back in its place. In place; returns ``model``, which then computes the same
    outputs (up to rounding) with no adapter. The merged Linear layers stay frozen
    (``requires_grad=False``), as after ``add_lora``. ValueError when ``model`` has no LoRA layer."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layer to merge (add_lora adds them)")
    for name, layer in layers:
        _replace(model, name, layer.merge())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What LoRA training changes, as a state dict: the adapter weights (``...lora_A.weight``,
    ``...lora_B.weight``) and every other parameter with ``requires_grad`` (after :func:`add_lora`,
    the head's). Tensors are detached views, as in ``model.state_dict()`` (save or clone them).
    A small file: kilobytes to megabytes where the model is hundreds of megabytes.

    ValueError when ``model`` has no LoRA layer."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layer (add_lora adds them)")
    adapters = {id(p) for _, layer in layers for m in (layer.lora_A, layer.lora_B) for p in m.parameters()}
    wanted = {id(p) for p in model.parameters() if p.requires_grad} | adapters
    return {name: p.detach() for name, p in model.state_dict(keep_vars=True).items() if id(p) in wanted}


def load_lora_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a :func:`lora_state_dict` into ``model`` (a fresh ``add_lora`` model of the same base,
    built with the same ``targets``, ``r`` and ``train_head``). Unlike ``load_state_dict(strict=False)``,
    refuses (ValueError, nothing loaded) when a key is not used or a key the model's
    ``lora_state_dict`` has is missing. Returns ``model``."""
    expected = set(lora_state_dict(model))
    given = set(state_dict)
    if given != expected:
        unexpected, missing = sorted(given - expected), sorted(expected - given)
        raise ValueError(f"state_dict does not match the model's LoRA weights: {len(unexpected)} unexpected keys "
                         f"{unexpected[:3]}, {len(missing)} missing keys {missing[:3]} (same targets, r and "
                         "train_head in add_lora?)")
    model.load_state_dict(dict(state_dict), strict=False)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of scalar parameters of ``model`` (shared tensors counted
    once); ``trainable`` counts those with ``requires_grad``. Note: not the parameter list that
    ``ftcourse.freezing.trainable_parameters`` returns."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Turn on gradient (activation) checkpointing with torch's non-reentrant implementation, the
    one that is safe with LoRA. Returns ``model``.

    Why non-reentrant: the reentrant ``torch.utils.checkpoint`` builds a checkpointed block's backward
    only through its inputs that require grad. With LoRA every base weight, the embeddings included,
    is frozen, so the hidden states entering block 0 do not require grad: every adapter inside a
    checkpointed block then silently gets ``grad = None`` (the head still trains, so the loss falls a
    little and nothing fails). ``model.enable_input_require_grads()`` is the reentrant workaround;
    the non-reentrant checkpoint needs none and gives the same gradients as no checkpointing.

    Uses ``activation_checkpointing_enable`` (transformers 5; ``gradient_checkpointing_enable`` is
    its deprecated alias) where the model has it, else ``gradient_checkpointing_enable`` (transformers
    4), each with ``use_reentrant=False``. Checkpointing acts only in training mode (``model.train()``).
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise TypeError(f"{type(model).__name__} has no activation_checkpointing_enable/gradient_checkpointing_enable "
                        "(a transformers PreTrainedModel has)")
    return model
