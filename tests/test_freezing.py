"""Tests of ftcourse.freezing on tiny, randomly initialised models of the five supported families.

Reference for "which parameters are frozen": parameter-name prefixes written here per family
(independent of ``ftcourse.models``, which the implementation uses). The optimizer facts checked
(weight decay and momentum move a parameter whose gradient is zero, torch skips a parameter whose
gradient is None) are those of REFERENCE.md and torch's AdamW/SGD documentation.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from tiny_models import tiny_model  # the one factory: every optional module on (DeBERTa's conv too)
from torch.optim.lr_scheduler import LambdaLR

from ftcourse.freezing import (
    GradualUnfreezing,
    all_param_groups,
    count_parameters,
    freeze_bottom_layers,
    frozen_parameters_in,
    trainable_param_groups,
    trainable_parameters,
    unfreeze_all,
    unfreeze_layers,
)
from ftcourse.param_groups import is_no_decay
from ftcourse.train import train

NUM_LAYERS = 3  # tiny_models' default
VOCAB = 40  # token ids of the batches below (the tiny models have 100)

# family -> (prefixes of the embedding-side parameters, prefix of block i with "{i}",
#            {i: prefixes of the modules outside the block list that belong to block i})
PREFIXES = {
    "bert": (["bert.embeddings."], "bert.encoder.layer.{i}.", {}),
    "roberta": (["roberta.embeddings."], "roberta.encoder.layer.{i}.", {}),
    "distilbert": (["distilbert.embeddings."], "distilbert.transformer.layer.{i}.", {}),
    # DeBERTa-v3 style: shared relative-position embeddings (and their LayerNorm) used by every block;
    # the convolution applied to layer 0's output (conv_kernel_size > 0) belongs to layer 0.
    "deberta-v2": (["deberta.embeddings.", "deberta.encoder.rel_embeddings.", "deberta.encoder.LayerNorm."],
                   "deberta.encoder.layer.{i}.", {0: ["deberta.encoder.conv."]}),
    # embedding_size != hidden_size: a projection between the embeddings and the first block.
    "electra": (["electra.embeddings.", "electra.embeddings_project."], "electra.encoder.layer.{i}.", {}),
}
FAMILIES = tuple(PREFIXES)


def layer_prefixes(family: str, i: int) -> list[str]:
    _, layer_prefix, extras = PREFIXES[family]
    return [layer_prefix.format(i=i), *extras.get(i, [])]


def expected_frozen(model, family: str, n: int, embeddings: bool) -> list[str]:
    prefixes = (PREFIXES[family][0] if embeddings else []) + [p for i in range(n) for p in layer_prefixes(family, i)]
    return [name for name, _ in model.named_parameters() if name.startswith(tuple(prefixes))]


def frozen_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if not p.requires_grad]


def batch(seed: int = 0, size: int = 4, length: int = 7) -> dict:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (size, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -2:] = 0  # some padding, as in real batches
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": torch.randint(0, 2, (size,), generator=gen)}


def backward(model, seed: int = 0) -> None:
    b = batch(seed)
    labels = b.pop("labels")
    nn.functional.cross_entropy(model(**b).logits, labels).backward()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict, model) -> set[str]:
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


# --------------------------------------------------------------------------------------------
# freeze_bottom_layers / unfreeze / count
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_bottom_layers_freezes_exactly_embeddings_and_bottom_n(family):
    pristine = tiny_model(family)
    for embeddings in (True, False):
        for n in range(NUM_LAYERS + 1):
            model = copy.deepcopy(pristine)
            expected = expected_frozen(model, family, n, embeddings)
            returned = freeze_bottom_layers(model, n, embeddings=embeddings)
            assert returned == expected, (n, embeddings)
            assert frozen_names(model) == expected, (n, embeddings)
    # Everything below the head frozen: a backward pass gives gradients to the head only.
    model = copy.deepcopy(pristine)
    freeze_bottom_layers(model, NUM_LAYERS)
    backward(model)
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in model.named_parameters() if p.requires_grad}
    assert with_grad and with_grad.isdisjoint(expected_frozen(model, family, NUM_LAYERS, embeddings=True))


def test_freeze_never_unfreezes_and_drops_stale_gradients():
    model = tiny_model("bert")
    backward(model)  # every parameter now holds a gradient
    first = freeze_bottom_layers(model, 2)
    assert all(p.grad is None for name, p in model.named_parameters() if name in first)
    assert freeze_bottom_layers(model, 1) == []  # already frozen: nothing new, nothing unfrozen
    assert frozen_names(model) == first
    assert freeze_bottom_layers(model, 0, embeddings=False) == []


@pytest.mark.parametrize("bad", [-1, NUM_LAYERS + 1, 100])
def test_freeze_rejects_n_out_of_range(bad):
    model = tiny_model("roberta")
    with pytest.raises(ValueError, match=rf"n must be in \[0, {NUM_LAYERS}\].*got {bad}"):
        freeze_bottom_layers(model, bad)
    assert frozen_names(model) == []  # nothing half-done


@pytest.mark.parametrize("bad", [1.0, True, "2", None])
def test_freeze_rejects_non_int_n(bad):
    with pytest.raises(TypeError, match=r"n must be an int in \[0, 3\]"):
        freeze_bottom_layers(tiny_model("bert"), bad)


def test_unsupported_model_is_refused():
    with pytest.raises(TypeError, match="supported families"):
        freeze_bottom_layers(nn.Linear(2, 2), 0)


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_unfreeze_layers_and_unfreeze_all(family):
    model = tiny_model(family)
    everything = freeze_bottom_layers(model, NUM_LAYERS)
    top = unfreeze_layers(model, [NUM_LAYERS - 1])
    assert top == [n for n in everything if n.startswith(PREFIXES[family][1].format(i=NUM_LAYERS - 1))]
    assert frozen_names(model) == [n for n in everything if n not in top]
    emb = unfreeze_layers(model, [], embeddings=True)
    assert emb == [n for n in everything if n.startswith(tuple(PREFIXES[family][0]))]
    assert unfreeze_all(model) == [n for n in everything if n not in top and n not in emb]
    assert frozen_names(model) == [] and unfreeze_all(model) == []
    for bad in ([NUM_LAYERS], [-1], [0.0]):
        with pytest.raises(ValueError, match=r"layer_indices must be ints in \[0, 2\]"):
            unfreeze_layers(model, bad)


def test_count_parameters():
    model = tiny_model("bert")
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == count_parameters(model, trainable_only=False) == total
    counts = []
    for n in range(NUM_LAYERS + 1):
        unfreeze_all(model)
        frozen = set(freeze_bottom_layers(model, n))
        frozen_numel = sum(p.numel() for name, p in model.named_parameters() if name in frozen)
        assert count_parameters(model) == total - frozen_numel
        assert count_parameters(model, trainable_only=False) == total
        counts.append(count_parameters(model))
    assert all(a > b for a, b in zip(counts, counts[1:]))

    class Tied(nn.Module):  # a tensor shared by two modules counts once
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight

    assert count_parameters(Tied()) == 9


def test_only_trainable_parameters_reach_the_optimizer():
    model = tiny_model("distilbert")
    freeze_bottom_layers(model, 2)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in trainable_parameters(model)} == trainable
    groups = trainable_param_groups(model, weight_decay=0.1)
    in_groups = [p for g in groups for p in g["params"]]
    assert len(in_groups) == len(trainable) and {id(p) for p in in_groups} == trainable
    names = {id(p): name for name, p in model.named_parameters()}
    for g in groups:
        assert all(is_no_decay(names[id(p)], p) == (g["weight_decay"] == 0.0) for p in g["params"])
    assert frozen_parameters_in(torch.optim.AdamW(groups)) == []
    # all_param_groups (for gradual unfreezing) holds the frozen ones too, with the same decay split.
    every = all_param_groups(model, weight_decay=0.1)
    assert sum(len(g["params"]) for g in every) == len(list(model.parameters()))
    assert len(frozen_parameters_in(torch.optim.AdamW(every))) == len(frozen_names(model))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        trainable_param_groups(model, 0.1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        all_param_groups(model, -1.0)


# --------------------------------------------------------------------------------------------
# The trap: requires_grad=False does not stop an optimizer that still sees a gradient tensor
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])
def test_adamw_moves_a_frozen_parameter_with_zero_grad_but_not_one_with_none(fused):
    lr, wd = 0.1, 0.5
    theta0 = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    zero_grad = nn.Parameter(theta0.clone(), requires_grad=False)
    none_grad = nn.Parameter(theta0.clone(), requires_grad=False)
    zero_grad.grad = torch.zeros_like(theta0)
    opt = torch.optim.AdamW([zero_grad, none_grad], lr=lr, weight_decay=wd, fused=fused)
    opt.step()
    # Decoupled decay first (θ *= 1 − γλ), then m = v = 0 gives a zero Adam step.
    torch.testing.assert_close(zero_grad.detach(), theta0 * (1 - lr * wd))
    assert torch.equal(none_grad.detach(), theta0) and none_grad not in opt.state


def test_momentum_moves_a_parameter_frozen_after_training():
    theta = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=0.1, momentum=0.9)
    theta.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    opt.step()
    theta.requires_grad_(False)
    opt.zero_grad(set_to_none=False)  # the gradient becomes zeros, not None
    before = theta.detach().clone()
    opt.step()
    # b = μ b + 0 = 0.9 g, so θ keeps moving by γ μ g after it was "frozen".
    torch.testing.assert_close(theta.detach(), before - 0.1 * 0.9 * torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_trap_on_a_model_and_the_fix():
    """Old-style code: optimizer over model.parameters(), freeze later by toggling requires_grad,
    zero_grad(set_to_none=False). The "frozen" layer drifts. freeze_bottom_layers (grad=None), or
    leaving frozen parameters out of the optimizer, keeps it fixed."""
    pristine = tiny_model("bert")

    def run(how: str) -> set[str]:
        model = copy.deepcopy(pristine)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        backward(model, 0)
        opt.step()  # one step with everything trainable: gradients and Adam moments exist
        if how == "requires_grad toggled":
            for p in model.bert.encoder.layer[0].parameters():
                p.requires_grad_(False)
        elif how == "freeze_bottom_layers":
            freeze_bottom_layers(model, 1, embeddings=False)
        elif how == "left out of the optimizer":
            freeze_bottom_layers(model, 1, embeddings=False)
            opt = torch.optim.AdamW(trainable_param_groups(model, 0.1), lr=1e-2)
        before = snapshot(model)
        for seed in (1, 2, 3):
            opt.zero_grad(set_to_none=False)
            backward(model, seed)
            opt.step()
        return {name for name in changed(before, model) if name.startswith("bert.encoder.layer.0.")}

    layer0 = {name for name, _ in pristine.named_parameters() if name.startswith("bert.encoder.layer.0.")}
    assert run("requires_grad toggled") == layer0  # every tensor of the frozen layer moved
    assert run("freeze_bottom_layers") == set()
    assert run("left out of the optimizer") == set()


# --------------------------------------------------------------------------------------------
# Gradual unfreezing
# --------------------------------------------------------------------------------------------
class FakeState:
    def __init__(self, optimizer):
        self.optimizer, self.step = optimizer, 0


def test_gradual_unfreezing_order_is_top_first():
    model = tiny_model("electra")
    callback = GradualUnfreezing(model, every_steps=2)
    state = FakeState(torch.optim.AdamW(all_param_groups(model, 0.01)))
    callback.on_train_begin(state)
    trainable_blocks = []
    for step in range(1, 2 * (NUM_LAYERS + 1) + 2):
        state.step = step
        callback.on_step_end(state)
        layers_on = [i for i in range(NUM_LAYERS)
                     if all(p.requires_grad for p in model.electra.encoder.layer[i].parameters())]
        emb_on = all(p.requires_grad for p in model.electra.embeddings_project.parameters())
        trainable_blocks.append((layers_on, emb_on))
    assert [e["unit"] for e in callback.events] == ["layer 2", "layer 1", "layer 0", "embeddings"]
    assert [e["step"] for e in callback.events] == [2, 4, 6, 8]
    total = count_parameters(model, trainable_only=False)
    assert callback.events[-1]["trainable"] == total
    assert [e["parameters"] for e in callback.events] == [
        sum(p.numel() for p in m.parameters()) for m in [*reversed(model.electra.encoder.layer)]] + [
        sum(p.numel() for p in [*model.electra.embeddings.parameters(), *model.electra.embeddings_project.parameters()])]
    trainable = [e["trainable"] for e in callback.events]
    assert trainable == [trainable[0] + sum(e["parameters"] for e in callback.events[1:i + 1]) for i in range(len(trainable))]
    assert trainable_blocks[0] == ([], False)
    assert trainable_blocks[1] == ([2], False)
    assert trainable_blocks[3] == ([1, 2], False)
    assert trainable_blocks[5] == ([0, 1, 2], False)
    assert trainable_blocks[7] == ([0, 1, 2], True) and frozen_names(model) == []


def test_gradual_unfreezing_arguments():
    model = tiny_model("bert")
    for kwargs in ({}, {"every_steps": 2, "unfreeze_at_steps": [1]}):
        with pytest.raises(ValueError, match="exactly one of every_steps"):
            GradualUnfreezing(model, **kwargs)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every_steps must be an int >= 1"):
            GradualUnfreezing(model, every_steps=bad)
    for bad in ([2, 2], [3, 1], [0, 1], [1.0]):
        with pytest.raises(ValueError, match="unfreeze_at_steps must be strictly increasing"):
            GradualUnfreezing(model, unfreeze_at_steps=bad)
    with pytest.raises(ValueError, match="only 3 units"):
        GradualUnfreezing(model, unfreeze_at_steps=[1, 2, 3, 4], unfreeze_embeddings=False)
    assert GradualUnfreezing(model, unfreeze_at_steps=[1, 2, 3, 4]).schedule[4] == "embeddings"


def test_gradual_unfreezing_needs_the_frozen_parameters_in_the_optimizer():
    model = tiny_model("roberta")
    freeze_bottom_layers(model, NUM_LAYERS)
    callback = GradualUnfreezing(model, every_steps=1)
    with pytest.raises(ValueError, match="not in the optimizer.*all_param_groups"):
        callback.on_train_begin(FakeState(torch.optim.AdamW(trainable_param_groups(model, 0.01))))


def test_why_not_add_param_group_the_schedule_does_not_cover_a_new_group():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([a], lr=1.0)
    scheduler = LambdaLR(opt, lambda s: 0.5 ** s)
    opt.step()
    scheduler.step()
    opt.add_param_group({"params": [b], "lr": opt.param_groups[0]["lr"]})
    opt.step()
    try:
        scheduler.step()
    except ValueError:  # torch >= 2.13: the scheduler's zip over groups is strict
        return
    # older torch: the new group is silently left out of the schedule
    assert opt.param_groups[1]["lr"] != opt.param_groups[0]["lr"]


def run_train(model, optimizer, callbacks, steps: int):
    """``steps`` optimizer steps of ftcourse.train.train, recording which parameters changed."""
    seen = []

    class Recorder:
        def on_train_begin(self, state):
            self.before = snapshot(model)

        def on_step_end(self, state):
            seen.append(changed(self.before, model))
            self.before = snapshot(model)

    loader = [batch(seed) for seed in range(steps)]
    scheduler = LambdaLR(optimizer, lambda s: 1.0 - s / (steps + 1))
    train(model, loader, optimizer, scheduler=scheduler, epochs=1, callbacks=[*callbacks, Recorder()],
          device="cpu", progress=False)
    return seen


def names_of(model, prefixes) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith(tuple(prefixes))}


def test_frozen_layers_do_not_change_during_training():
    model = tiny_model("deberta-v2")
    freeze_bottom_layers(model, 2)
    optimizer = torch.optim.AdamW(trainable_param_groups(model, 0.1), lr=1e-2, fused=True)
    seen = run_train(model, optimizer, [], steps=3)
    moved = set().union(*seen)
    frozen = set(expected_frozen(model, "deberta-v2", 2, embeddings=True))
    assert any(".conv." in name for name in frozen)  # the convolution after layer 0 is frozen with it
    assert moved.isdisjoint(frozen)
    assert names_of(model, [*layer_prefixes("deberta-v2", 2), "classifier.", "pooler."]) <= moved


def test_gradual_unfreezing_during_training():
    model = tiny_model("bert")
    callback = GradualUnfreezing(model, unfreeze_at_steps=[2, 4], unfreeze_embeddings=True)
    # Decay > 0 and fused AdamW, as in the course: a frozen parameter that the optimizer did not
    # skip would be shrunk by weight decay and show up as changed.
    optimizer = torch.optim.AdamW(all_param_groups(model, 0.1), lr=1e-2, fused=True)
    seen = run_train(model, optimizer, [callback], steps=6)
    head = names_of(model, ["classifier.", "bert.pooler."])
    layer = PREFIXES["bert"][1]
    layer2, layer1 = names_of(model, [layer.format(i=2)]), names_of(model, [layer.format(i=1)])
    never = names_of(model, PREFIXES["bert"][0] + [layer.format(i=0)])
    assert [e["unit"] for e in callback.events] == ["layer 2", "layer 1"]
    # seen[k] = parameters changed by optimizer step k+1; layer 2 unfreezes after step 2.
    assert all(head <= s for s in seen)
    assert all(s.isdisjoint(layer2) for s in seen[:2]) and all(layer2 <= s for s in seen[2:])
    assert all(s.isdisjoint(layer1) for s in seen[:4]) and all(layer1 <= s for s in seen[4:])
    assert all(s.isdisjoint(never) for s in seen)


# --------------------------------------------------------------------------------------------
# DeBERTa-v2's encoder.conv belongs to layer 0; numpy arguments; runs; bad input
# --------------------------------------------------------------------------------------------
def test_deberta_conv_is_frozen_with_layer_0():
    model = tiny_model("deberta-v2")
    conv = names_of(model, ["deberta.encoder.conv."])
    assert conv  # conv_kernel_size > 0 in the tiny model
    assert conv <= set(freeze_bottom_layers(model, 1, embeddings=False))
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in conv)
    assert conv <= set(unfreeze_layers(model, [0]))
    unfreeze_all(model)
    assert conv.isdisjoint(freeze_bottom_layers(model, 0))  # the embeddings alone leave it trainable


@pytest.mark.parametrize("family", FAMILIES)
def test_gradual_unfreezing_unfreezes_each_block_whole(family):
    model = tiny_model(family)
    callback = GradualUnfreezing(model, every_steps=1)
    state = FakeState(torch.optim.AdamW(all_param_groups(model, 0.01)))
    callback.on_train_begin(state)
    everything = set(expected_frozen(model, family, NUM_LAYERS, embeddings=True))
    assert set(frozen_names(model)) == everything
    numel = {name: p.numel() for name, p in model.named_parameters()}
    units = [*(layer_prefixes(family, i) for i in reversed(range(NUM_LAYERS))), PREFIXES[family][0]]
    for step, prefixes in enumerate(units, start=1):
        before = set(frozen_names(model))
        state.step = step
        callback.on_step_end(state)
        unfrozen = before - set(frozen_names(model))
        assert unfrozen == names_of(model, prefixes), step  # DeBERTa: conv together with layer 0
        assert callback.events[-1]["parameters"] == sum(numel[n] for n in unfrozen)
    assert frozen_names(model) == []


def test_gradual_unfreezing_is_per_run():
    """One callback object, two train() calls: the second run starts fresh (events and freezing),
    exactly as a new object would."""
    from conftest import synthetic_batches

    def run(model, callback):
        optimizer = torch.optim.AdamW(all_param_groups(model, 0.01), lr=1e-3)
        train(model, synthetic_batches(n_batches=5, batch_size=4), optimizer, epochs=1, callbacks=[callback],
              device="cpu", progress=False)
        return [dict(e) for e in callback.events]

    model = tiny_model("deberta-v2")
    reused = GradualUnfreezing(model, every_steps=2)
    first = run(model, reused)
    assert [e["unit"] for e in first] == ["layer 2", "layer 1"]
    second = run(model, reused)  # the model starts this run with layers 1 and 2 trainable
    fresh_model = tiny_model("deberta-v2")
    fresh = run(fresh_model, GradualUnfreezing(fresh_model, every_steps=2))
    assert second == fresh == first


def test_gradual_unfreezing_refuses_to_unfreeze_another_model():
    model, other = tiny_model("bert"), tiny_model("bert")
    callback = GradualUnfreezing(model, every_steps=1)
    state = FakeState(torch.optim.AdamW(all_param_groups(other, 0.01)))
    state.model = other
    with pytest.raises(ValueError, match="not the model this callback was built for"):
        callback.on_train_begin(state)


def test_numpy_integers_and_arrays_are_accepted():
    import numpy as np

    model, reference = tiny_model("bert"), tiny_model("bert")
    assert freeze_bottom_layers(model, np.int64(2)) == freeze_bottom_layers(reference, 2)
    assert unfreeze_layers(model, np.array([0, 1])) == unfreeze_layers(reference, [0, 1])
    assert unfreeze_layers(model, range(NUM_LAYERS)) == []
    every = GradualUnfreezing(model, every_steps=np.int64(3))
    assert every.schedule == GradualUnfreezing(model, every_steps=3).schedule == {3: 2, 6: 1, 9: 0, 12: "embeddings"}
    at = GradualUnfreezing(model, unfreeze_at_steps=np.array([2, 5]))
    assert at.schedule == {2: 2, 5: 1} and all(type(s) is int for s in at.schedule)


@pytest.mark.parametrize("call", [
    lambda m: freeze_bottom_layers(m, 1, embeddings="False"),
    lambda m: unfreeze_layers(m, [0], embeddings=None),
    lambda m: GradualUnfreezing(m, every_steps=1, unfreeze_embeddings="yes"),
    lambda m: count_parameters(m, trainable_only=1),
])
def test_flags_must_be_bools(call):
    # "False" is truthy: taken as a flag it would freeze (or count) the opposite of what was meant
    with pytest.raises(TypeError, match="must be True or False"):
        call(tiny_model("bert"))


@pytest.mark.parametrize("bad", [1, "01", {0: 1}, None])
def test_unfreeze_layers_needs_a_collection_of_indices(bad):
    with pytest.raises(TypeError, match="layer_indices must be a list of ints"):
        unfreeze_layers(tiny_model("bert"), bad)


@pytest.mark.parametrize("bad, error", [([], ValueError), (5, TypeError), ("12", TypeError), ([1, None], TypeError),
                                        ([2, 2.5], TypeError)])
def test_unfreeze_at_steps_errors(bad, error):
    with pytest.raises(error, match="unfreeze_at_steps must be strictly increasing ints >= 1"):
        GradualUnfreezing(tiny_model("bert"), unfreeze_at_steps=bad)


@pytest.mark.parametrize("bad", [2.0, True])
def test_wrong_types_are_type_errors_that_old_code_still_catches(bad):
    # TypeError, as the rule says; also a ValueError, which GradualUnfreezing raised before
    with pytest.raises(TypeError, match="every_steps must be an int >= 1"):
        GradualUnfreezing(tiny_model("bert"), every_steps=bad)
    with pytest.raises(ValueError, match="every_steps must be an int >= 1"):
        GradualUnfreezing(tiny_model("bert"), every_steps=bad)
