"""Freezing layers: what is trained, what reaches the optimizer, and gradual unfreezing.

Copy with: models.py, param_groups.py.
Into one package folder: ``python -m ftcourse copy freezing --into mypkg/``.

Freezing the embeddings and the bottom ``n`` transformer blocks means: those parameters get
``requires_grad=False`` (autograd computes no gradient for them, and no backward pass at all below
the lowest trainable parameter), and the optimizer never changes them. The second part does
not follow from the first. torch optimizers skip a parameter only when its ``.grad`` is ``None``;
they never look at ``requires_grad``. A frozen parameter that still carries a gradient tensor
(a stale one, or zeros left by ``zero_grad(set_to_none=False)``) is updated like any other: AdamW
shrinks it by its decoupled weight decay (``θ *= 1 − γλ``) and moves it along its momentum. So
here freezing also drops the gradient (``grad = None``), and the optimizer is built from the
trainable parameters only (:func:`trainable_param_groups`, or ``decay_param_groups``, which
filters ``requires_grad``).

Gradual unfreezing (Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text
Classification", ULMFiT, arXiv:1801.06146, "Target task classifier fine-tuning"): start with
everything but the head frozen, then unfreeze one layer at a time from the top (the least general
layer) down to the embeddings. :class:`GradualUnfreezing` does it as a callback of :func:`ftcourse.train.train`.

"The embeddings" and "layer i" are the blocks of :func:`ftcourse.models.block_modules`, the one map
of model parts that LLRD and re-initialisation read too: the embeddings include what belongs with
them outside the embedding module (ELECTRA's ``embeddings_project``, DeBERTa-v2's relative-position
embeddings and their LayerNorm), and layer 0 of DeBERTa-v2 includes its ``encoder.conv``. All the
families of :data:`ftcourse.models.SUPPORTED_FAMILIES` work.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from .models import EMBEDDINGS, ArgumentTypeError, _check_flag, _is_int, block_modules, encoder_layers
from .param_groups import check_weight_decay, decay_param_groups, is_no_decay

__all__ = [
    "freeze_bottom_layers",
    "unfreeze_layers",
    "unfreeze_all",
    "count_parameters",
    "trainable_parameters",
    "trainable_param_groups",
    "all_param_groups",
    "frozen_parameters_in",
    "GradualUnfreezing",
]


def _names_by_param(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _set_requires_grad(model: nn.Module, modules: Iterable[nn.Module], requires_grad: bool) -> list[str]:
    """Set ``requires_grad`` on every parameter of ``modules``; return the names (in ``model``) of
    those that changed, in ``model.named_parameters()`` order."""
    changed = set()
    for module in modules:
        for p in module.parameters():
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
                changed.add(id(p))
            if not requires_grad:
                # The optimizer skips a parameter only when its grad is None (see module docstring).
                p.grad = None
    return [name for name, p in model.named_parameters() if id(p) in changed]


def _modules_of(model: nn.Module, blocks: Iterable) -> list[nn.Module]:
    """Every module of the given blocks (``"embeddings"`` or layer indices) of ``model``."""
    parts = block_modules(model)
    return [module for block in blocks for _, module in parts[block]]


def _check_layer_count(n, num_layers: int) -> int:
    if not _is_int(n):
        raise TypeError(f"n must be an int in [0, {num_layers}] (the model has {num_layers} layers), got {n!r}")
    if not 0 <= n <= num_layers:
        raise ValueError(f"n must be in [0, {num_layers}] (the model has {num_layers} layers), got {n}")
    return operator.index(n)


def freeze_bottom_layers(model: nn.Module, n: int, embeddings: bool = True) -> list[str]:
    """Freeze the embeddings (if ``embeddings``) and the bottom ``n`` transformer blocks of ``model``.

    Follows the layer freezing studied for BERT by Lee et al. 2019 ("What Would Elsa Do? Freezing
    Layers During Transformer Fine-Tuning", arXiv:1911.03090): the lowest layers are the most
    general, so they are the ones kept fixed. The classification head (and pooler) stay trainable.

    Frozen parameters get ``requires_grad=False`` and ``grad=None``, so a torch optimizer that
    holds them skips them too (it skips only ``grad is None``). Other parameters are left as they
    are: this function never unfreezes anything (use :func:`unfreeze_all` first to reset).

    Args:
        model: a classification model of a supported family (``ftcourse.models``).
        n: number of blocks to freeze, from the bottom, in ``[0, number of layers]`` (a Python or
            numpy int). A block is everything ``ftcourse.models.block_modules`` puts in it:
            DeBERTa-v2's ``encoder.conv`` is frozen with layer 0.
        embeddings: also freeze the embedding module (word, position, token-type, its LayerNorm)
            and what belongs with it (``ftcourse.models.embedding_extras``: ELECTRA's projection,
            DeBERTa-v2's relative-position embeddings and their LayerNorm).

    Returns:
        The names (as in ``model.named_parameters()``) of the parameters this call froze, in model
        order; parameters that were already frozen are not listed.

    Raises:
        ValueError: ``n`` is outside ``[0, number of layers]``. TypeError: ``n`` is not an int (a
        bool is not), ``embeddings`` is not a bool, or ``model`` is not of a supported family.
    """
    n = _check_layer_count(n, len(encoder_layers(model)))
    embeddings = _check_flag("embeddings", embeddings)
    blocks = ([EMBEDDINGS] if embeddings else []) + list(range(n))
    return _set_requires_grad(model, _modules_of(model, blocks), False)


def unfreeze_layers(model: nn.Module, layer_indices: Iterable[int], embeddings: bool = False) -> list[str]:
    """Make the blocks ``layer_indices`` (0 = bottom; a list, a range or a numpy array of ints) and,
    if ``embeddings``, the embeddings trainable (blocks as in :func:`freeze_bottom_layers`).

    Returns the names of the parameters that were frozen and now are not. Raises ValueError for an
    index outside ``[0, number of layers - 1]`` (negative indices are refused, not wrapped: a typo
    must not unfreeze the top block); TypeError when ``layer_indices`` is not a collection of ints
    (a single int: pass ``[i]``) or ``embeddings`` is not a bool.
    """
    layers = encoder_layers(model)
    allowed = f"ints in [0, {len(layers) - 1}] (the model has {len(layers)} layers)"
    if isinstance(layer_indices, (str, bytes, Mapping)) or not isinstance(layer_indices, Iterable):
        raise TypeError(f"layer_indices must be a list of {allowed}, got {layer_indices!r}")
    indices = list(layer_indices)
    wrong_type = [i for i in indices if not _is_int(i)]
    if wrong_type:
        raise ArgumentTypeError(f"layer_indices must be {allowed}, got {wrong_type}")
    out_of_range = [i for i in indices if not 0 <= i < len(layers)]
    if out_of_range:
        raise ValueError(f"layer_indices must be {allowed}, got {out_of_range}")
    embeddings = _check_flag("embeddings", embeddings)
    blocks = ([EMBEDDINGS] if embeddings else []) + [operator.index(i) for i in indices]
    return _set_requires_grad(model, _modules_of(model, blocks), True)


def unfreeze_all(model: nn.Module) -> list[str]:
    """Make every parameter of ``model`` trainable; return the names of those that were frozen."""
    return _set_requires_grad(model, [model], True)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once); with
    ``trainable_only`` only those with ``requires_grad``."""
    trainable_only = _check_flag("trainable_only", trainable_only)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``, in model order: what a plain optimizer should get
    (``torch.optim.AdamW(trainable_parameters(model))``)."""
    return [p for p in model.parameters() if p.requires_grad]


def trainable_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decayed / undecayed parameter groups (``ftcourse.param_groups.decay_param_groups``) of the
    trainable parameters only. Raises ValueError when nothing is trainable (an optimizer with no
    parameters would train nothing) and for a ``weight_decay`` that is negative, NaN or infinite."""
    groups = decay_param_groups(model, weight_decay)
    if not groups:
        raise ValueError("model has no trainable parameter: every parameter has requires_grad=False")
    return groups


def all_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decayed / undecayed parameter groups of *every* parameter, frozen ones included.

    Only for :class:`GradualUnfreezing`, whose frozen parameters must be in the optimizer from the
    start (see its docstring). Frozen parameters there must keep ``grad=None``. Raises ValueError
    for a ``weight_decay`` that is negative, NaN or infinite.
    """
    weight_decay = check_weight_decay(weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if is_no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def frozen_parameters_in(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters of ``optimizer`` that have ``requires_grad=False`` (should be ``[]`` unless
    :class:`GradualUnfreezing` is used)."""
    return [p for group in optimizer.param_groups for p in group["params"] if not p.requires_grad]


class GradualUnfreezing:
    """Gradual unfreezing (Howard & Ruder 2018, ULMFiT, arXiv:1801.06146) as a training-loop callback.

    At the start of training the embeddings and every transformer block are frozen; the head
    (ULMFiT's first unfrozen "last layer") stays trainable. Then, at the end of the optimizer steps
    given by the schedule, the next unit from the top is unfrozen: the top block first, then the one below, ...,
    the bottom block, and last the embeddings (if ``unfreeze_embeddings``; else they stay frozen
    throughout, a common choice for small data). ULMFiT unfreezes one layer per epoch: pass
    ``every_steps=steps_per_epoch``.

    Schedule: exactly one of
      * ``every_steps=k``: unfreeze the next unit after steps k, 2k, 3k, ...;
      * ``unfreeze_at_steps=[s1, s2, ...]``: unfreeze the i-th unit after step s_i (strictly
        increasing positive ints; at least one, at most one per unit; units never reached stay
        frozen).

    Design choice, why the optimizer must hold the frozen parameters from the start: the
    alternative, ``optimizer.add_param_group`` when a layer unfreezes, breaks the learning-rate
    schedule. ``LambdaLR`` (every ``ftcourse.schedules`` schedule, transformers' schedules) fixes
    its list of groups and base lrs when it is built; after a new group appears, torch 2.13's
    ``scheduler.step()`` raises (older torch left the new group silently at its initial lr). Keeping
    all parameters in the optimizer (``all_param_groups``) costs nothing: a frozen parameter's
    gradient stays ``None``, and torch's optimizers skip such a parameter completely (no weight
    decay, no moments, no step count), so when it unfreezes AdamW starts its bias correction at
    t = 1 for it, as for a fresh parameter. The one risk is a frozen parameter with a zero (not
    None) gradient, which AdamW's weight decay would still move; this callback freezes with
    ``grad = None``, and the course's loop zeroes with ``set_to_none=True``. ``on_train_begin``
    raises ValueError if a parameter this callback will unfreeze is missing from the optimizer.

    ``events`` lists what was unfrozen when: ``{"step", "unit", "parameters", "trainable"}`` dicts,
    ``unit`` being ``"layer i"`` or ``"embeddings"``, ``parameters`` the unit's scalar parameter
    count and ``trainable`` the model's trainable count after the step. A unit is a block of
    :func:`ftcourse.models.block_modules`: DeBERTa-v2's ``encoder.conv`` unfreezes with layer 0.

    One object per run, or reuse it: ``on_train_begin`` (which ``ftcourse.train.train`` calls at
    the start of every call) starts a fresh run: it empties ``events`` and freezes everything below
    the head again, so a second ``train()`` call repeats the same schedule from step 1.

    ``every_steps`` and the entries of ``unfreeze_at_steps`` may be Python or numpy ints (a list,
    tuple, range or 1-D numpy array of steps); bools and floats are refused.

    ``order = 0``, the default of ``ftcourse.train.train``'s callbacks (notified in increasing order).
    """

    order = 0

    def __init__(self, model: nn.Module, every_steps: int | None = None,
                 unfreeze_at_steps: Sequence[int] | None = None, unfreeze_embeddings: bool = True):
        num_layers = len(encoder_layers(model))  # TypeError for an unsupported model
        self.model = model
        unfreeze_embeddings = _check_flag("unfreeze_embeddings", unfreeze_embeddings)
        # Top block first: the most task-specific representations adapt before the general ones.
        self.units: list[str | int] = list(range(num_layers - 1, -1, -1))
        if unfreeze_embeddings:
            self.units.append(EMBEDDINGS)
        if (every_steps is None) == (unfreeze_at_steps is None):
            raise ValueError("give exactly one of every_steps (int >= 1) or unfreeze_at_steps (increasing ints >= 1)")
        if every_steps is not None:
            if not _is_int(every_steps):
                raise ArgumentTypeError(f"every_steps must be an int >= 1, got {every_steps!r}")
            if every_steps < 1:
                raise ValueError(f"every_steps must be an int >= 1, got {every_steps!r}")
            steps = [operator.index(every_steps) * (i + 1) for i in range(len(self.units))]
        else:
            message = (f"unfreeze_at_steps must be strictly increasing ints >= 1 (one step per unit), "
                       f"got {unfreeze_at_steps!r}")
            if isinstance(unfreeze_at_steps, (str, bytes, Mapping)) or not isinstance(unfreeze_at_steps, Iterable):
                raise TypeError(message)
            steps = list(unfreeze_at_steps)
            if not all(_is_int(s) for s in steps):
                raise ArgumentTypeError(message)
            if not steps or any(s < 1 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
                # An empty schedule would never unfreeze anything: freeze_bottom_layers does that.
                raise ValueError(message)
            if len(steps) > len(self.units):
                raise ValueError(f"unfreeze_at_steps has {len(steps)} entries but there are only {len(self.units)} units "
                                 f"to unfreeze ({num_layers} layers{' and the embeddings' if unfreeze_embeddings else ''})")
            steps = [operator.index(s) for s in steps]
        self.schedule: dict[int, str | int] = dict(zip(steps, self.units))
        self.events: list[dict] = []

    @staticmethod
    def _unit_name(unit) -> str:
        return unit if unit == EMBEDDINGS else f"layer {unit}"

    def _unit_parameters(self, unit) -> list[nn.Parameter]:
        return [p for module in _modules_of(self.model, [unit]) for p in module.parameters()]

    def on_train_begin(self, state) -> None:
        model = getattr(state, "model", self.model)
        if model is not self.model:
            # Unfreezing the layers of another model would leave the trained one frozen for good.
            raise ValueError("GradualUnfreezing: the model being trained is not the model this callback was built "
                             "for; build it with GradualUnfreezing(model, ...) for the model passed to train()")
        self.events = []  # a new run: the events of an earlier train() call are not this run's
        freeze_bottom_layers(self.model, len(encoder_layers(self.model)), embeddings=True)
        in_optimizer = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
        names = _names_by_param(self.model)
        missing = [names[id(p)] for unit in self.schedule.values() for p in self._unit_parameters(unit)
                   if id(p) not in in_optimizer]
        if missing:
            raise ValueError(
                f"GradualUnfreezing: {len(missing)} parameters it will unfreeze are not in the optimizer "
                f"(e.g. {missing[0]!r}). Build the optimizer from all parameters, frozen ones included, e.g. "
                "torch.optim.AdamW(all_param_groups(model, weight_decay)), so that the lr schedule covers them."
            )

    def on_step_end(self, state) -> None:
        unit = self.schedule.get(state.step)
        if unit is None:
            return
        if unit == EMBEDDINGS:
            unfreeze_layers(self.model, [], embeddings=True)
        else:
            unfreeze_layers(self.model, [unit])
        self.events.append({"step": state.step, "unit": self._unit_name(unit),
                            "parameters": sum(p.numel() for p in self._unit_parameters(unit)),
                            "trainable": count_parameters(self.model)})
