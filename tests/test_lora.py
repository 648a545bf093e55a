"""ftcourse.lora: LoRA adapters (Hu et al. 2021), checked against Hugging Face peft and on a Trainer.

* The family map (``ftcourse.models.LINEAR_NAMES``) names real Linear layers of every block of every family.
* Same numbers as peft's default LoRA in float64, all five families: the same initial ``A`` from the same
  seed, outputs, gradients of ``lora_A``/``lora_B`` and the head, merged weights, trainable parameters.
* Zero-initialised ``B``: the wrapped model is the original at step 0, bit for bit.
* merge_lora, lora_state_dict / load_lora_state_dict, a Trainer run, refused arguments.
* Gradient checkpointing: non-reentrant gives the gradients of no checkpointing; reentrant, with every base
  weight frozen and no input requiring grad, silently gives the adapters no gradient at all.

Tiny offline models (tests/tiny_models.py, tests/conftest.py), CPU, a few seconds.
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from conftest import synthetic_batches, tiny_classifier
from tiny_models import FAMILIES, tiny_model
from torch import nn

from ftcourse.lora import (
    LoRALinear,
    add_lora,
    enable_gradient_checkpointing,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
)
from ftcourse.models import HEAD, LINEAR_NAMES, LINEAR_ROLES, SUPPORTED_FAMILIES, block_modules, encoder_layers

ALL_TARGETS = LINEAR_ROLES

# peft 0.21.2 calls transformers 5.24's deprecated is_gradient_checkpointing: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def _batch(seed=0, batch_size=4, seq_len=9):
    return synthetic_batches(1, batch_size=batch_size, seq_len=seq_len, seed=seed)[0]


def _head_names(model) -> list[str]:
    """The head block's modules that hold parameters (pooler + classifier), as named in the model."""
    return [name for name, module in block_modules(model)[HEAD] if any(True for _ in module.parameters())]


def _randomize_b(model, seed=2):
    """A non-zero B everywhere, so that the adapters change the outputs and A gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            w = layer.lora_B.weight
            w.copy_(torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype) * 0.5)


# --------------------------------------------------------------------------------------------- the family map

@pytest.mark.parametrize("family", FAMILIES)
def test_linear_names_are_real_linear_layers_of_every_block(family):
    assert set(SUPPORTED_FAMILIES) == set(FAMILIES) == set(LINEAR_NAMES)
    paths = LINEAR_NAMES[family]
    assert tuple(paths) == ALL_TARGETS and len(set(paths.values())) == len(paths)
    for model in (tiny_model(family, n_layers=2), tiny_classifier(family, num_layers=2)):
        for block in encoder_layers(model):
            linears = {name for name, m in block.named_modules() if isinstance(m, nn.Linear)}
            assert set(paths.values()) <= linears, (family, set(paths.values()) - linears)
            # every Linear of a block has a logical name, except DeBERTa-v2's relative-position projections
            assert linears - set(paths.values()) <= {"attention.self.pos_key_proj", "attention.self.pos_query_proj"}
            hidden = model.config.hidden_size
            inner = model.config.hidden_dim if family == "distilbert" else model.config.intermediate_size
            shapes = {role: (block.get_submodule(p).in_features, block.get_submodule(p).out_features)
                      for role, p in paths.items()}
            assert shapes == {"query": (hidden, hidden), "key": (hidden, hidden), "value": (hidden, hidden),
                              "attention_output": (hidden, hidden), "intermediate": (hidden, inner),
                              "output": (inner, hidden)}


def test_default_targets_are_peft_defaults():
    """add_lora's default (query, value) wraps the layers peft picks by itself for each family it knows."""
    peft = pytest.importorskip("peft")
    for family in ("bert", "roberta", "electra", "deberta-v2"):
        ours, theirs = tiny_model(family, n_layers=2), tiny_model(family, n_layers=2)
        add_lora(ours)
        peft_model = peft.get_peft_model(theirs, peft.LoraConfig())  # no target_modules: peft's own default
        wrapped = sorted(n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                         if isinstance(m, peft.tuners.lora.Linear))
        assert wrapped == sorted(n for n, _ in lora_layers(ours)), family
        assert len(wrapped) == 2 * 2
    # peft 0.21.2 has no default for DistilBERT: it needs target_modules=["q_lin", "v_lin"] (LINEAR_NAMES).
    with pytest.raises(ValueError, match="target_modules"):
        peft.get_peft_model(tiny_model("distilbert", n_layers=2), peft.LoraConfig())


# ---------------------------------------------------------------------------------------------- LoRALinear

def test_lora_linear_computes_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    weight, bias = base.weight.detach().clone(), base.bias.detach().clone()
    layer = LoRALinear(base, r=3, alpha=12)
    assert layer.base is base and not any(p.requires_grad for p in base.parameters())
    assert layer.lora_A.weight.shape == (3, 6) and layer.lora_B.weight.shape == (5, 3)
    assert layer.lora_A.bias is None and layer.lora_B.bias is None
    assert layer.scaling == 4.0 and isinstance(layer.dropout, nn.Identity)
    assert isinstance(LoRALinear(nn.Linear(6, 5), 3, 12, dropout=0.1).dropout, nn.Dropout)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not all zero
    bound = 1 / math.sqrt(6)
    assert 0 < layer.lora_A.weight.abs().max() <= bound
    x = torch.randn(4, 6)
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base layer
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    expected = x @ weight.T + bias + 4.0 * (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
    torch.testing.assert_close(layer(x), expected)
    assert not torch.allclose(layer(x), base(x))
    # the adapters follow the base layer's dtype
    assert LoRALinear(nn.Linear(6, 5).double(), 2, 2).lora_A.weight.dtype == torch.float64


def test_lora_linear_initialises_exactly_as_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Linear(7, 9).double()
    theirs_base = copy.deepcopy(base)

    class Holder(nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.proj = proj

    torch.manual_seed(3)
    ours = LoRALinear(base, r=4, alpha=8)
    after_ours = torch.rand(1)
    torch.manual_seed(3)
    theirs = peft.get_peft_model(Holder(theirs_base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["proj"]))
    after_theirs = torch.rand(1)
    layer = theirs.base_model.model.proj
    assert torch.equal(ours.lora_A.weight, layer.lora_A["default"].weight)  # same draws, same float64 cast
    assert torch.equal(ours.lora_B.weight, layer.lora_B["default"].weight)
    assert ours.scaling == layer.scaling["default"]
    assert after_ours == after_theirs  # the random generator moved on by the same amount


# -------------------------------------------------------------------------------------------------- add_lora

@pytest.mark.parametrize("family", FAMILIES)
def test_add_lora_wraps_targets_and_freezes_the_rest(family):
    model = tiny_model(family, n_layers=3)
    before = trainable_parameters(model)
    targets = ("value", "intermediate", "query")
    assert add_lora(model, r=4, alpha=8, targets=targets) is model
    layers = lora_layers(model)
    paths = LINEAR_NAMES[family]
    blocks = [next(n for n, m in model.named_modules() if m is block) for block in encoder_layers(model)]
    expected = [f"{block}.{paths[t]}" for block in blocks for t in ("query", "value", "intermediate")]
    assert [n for n, _ in layers] == expected  # block by block, in the block's module order
    head_params = {id(p) for _, m in block_modules(model)[HEAD] for p in m.parameters()}
    adapter_params = {id(p) for _, layer in layers for p in (layer.lora_A.weight, layer.lora_B.weight)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == adapter_params | head_params
    hidden = layers[0][1].in_features
    inner = layers[2][1].out_features
    n_adapter = 3 * 4 * ((hidden + hidden) + (hidden + hidden) + (hidden + inner))
    n_head = sum(p.numel() for _, m in block_modules(model)[HEAD] for p in m.parameters())
    assert trainable_parameters(model) == (n_adapter + n_head, before[1] + n_adapter)

    model = add_lora(tiny_model(family, n_layers=2), train_head=False)
    assert {id(p) for p in model.parameters() if p.requires_grad} == \
        {id(p) for _, layer in lora_layers(model) for p in (layer.lora_A.weight, layer.lora_B.weight)}


def test_add_lora_drops_stale_gradients_of_frozen_parameters():
    model = tiny_model("bert", n_layers=2)
    model(**_batch()).loss.backward()
    add_lora(model)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrapped_model_is_the_original_at_step_zero(family):
    original = tiny_model(family, n_layers=2).eval()
    model = add_lora(copy.deepcopy(original), r=4, alpha=32, targets=ALL_TARGETS).eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, original(**batch).logits)
    # and at step 0 only B gets a gradient: dL/dA = B^T (...) = 0 while B = 0
    model(**batch).loss.backward()
    for name, layer in lora_layers(model):
        assert torch.count_nonzero(layer.lora_A.weight.grad) == 0, name
    assert any(torch.count_nonzero(layer.lora_B.weight.grad) > 0 for _, layer in lora_layers(model))


# ------------------------------------------------------------------------------------------ parity with peft

def _peft_pair(family, targets=ALL_TARGETS, r=3, alpha=7, seed=1):  # scaling 7/3: no power of 2, so order of ops shows
    """(ours, peft model) adapted from the same float64 tiny model with the same seed, head trained by both."""
    peft = pytest.importorskip("peft")
    base = tiny_model(family, n_layers=2).double()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(seed)
    add_lora(ours, r=r, alpha=alpha, targets=targets)
    names = [n for n, _ in lora_layers(ours)]
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=names, modules_to_save=_head_names(base))
    torch.manual_seed(seed)
    return ours.eval(), peft.get_peft_model(theirs, config).eval()


def _peft_layer(peft_model, name):
    return peft_model.get_submodule(f"base_model.model.{name}")


def _our_name(peft_name: str) -> str:
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".modules_to_save.default.", ".").replace(".default.", ".")


@pytest.mark.parametrize("family", FAMILIES)
def test_same_numbers_as_peft(family):
    ours, theirs = _peft_pair(family)
    layers = lora_layers(ours)
    assert len(layers) == 2 * len(ALL_TARGETS)
    for name, layer in layers:  # same seed: the same A (B is zero in both)
        assert torch.equal(layer.lora_A.weight, _peft_layer(theirs, name).lora_A["default"].weight), name
        assert layer.lora_A.weight.dtype == torch.float64
    _randomize_b(ours)
    with torch.no_grad():  # identical adapters, B non-zero so the comparison is not trivial
        for name, layer in layers:
            _peft_layer(theirs, name).lora_A["default"].weight.copy_(layer.lora_A.weight)
            _peft_layer(theirs, name).lora_B["default"].weight.copy_(layer.lora_B.weight)

    # the same parameters train: adapters + head (peft's head is a trainable copy, the original frozen)
    ours_trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert {_our_name(n) for n, p in theirs.named_parameters() if p.requires_grad} == ours_trainable
    n_head = sum(p.numel() for n in _head_names(ours) for p in ours.get_submodule(n).parameters())
    trainable, total = trainable_parameters(ours)
    assert theirs.get_nb_trainable_parameters() == (trainable, total + n_head)

    batch = _batch()
    out_ours, out_theirs = ours(**batch), theirs(**batch)
    assert torch.equal(out_ours.logits, out_theirs.logits)
    with torch.no_grad():  # not trivially equal: the adapters change the outputs
        assert not torch.allclose(out_ours.logits, tiny_model(family, n_layers=2).double().eval()(**batch).logits)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    for name, layer in layers:
        peft_layer = _peft_layer(theirs, name)
        assert torch.equal(layer.lora_A.weight.grad, peft_layer.lora_A["default"].weight.grad), name
        assert torch.equal(layer.lora_B.weight.grad, peft_layer.lora_B["default"].weight.grad), name
        assert torch.count_nonzero(layer.lora_A.weight.grad) > 0, name
    grads = {_our_name(n): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    for name, p in ours.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, grads[name]), name

    merged_ours = merge_lora(ours).state_dict()
    merged_theirs = theirs.merge_and_unload().state_dict()
    assert list(merged_ours) == list(merged_theirs)
    for key in merged_ours:
        assert torch.equal(merged_ours[key], merged_theirs[key]), key


# ----------------------------------------------------------------------------------------- merge, save, load

@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2"])
def test_merge_lora_folds_updates_into_plain_linear_layers(family):
    model = add_lora(tiny_model(family, n_layers=2), r=3, alpha=7, targets=ALL_TARGETS).eval()
    _randomize_b(model)
    expected = {name: layer.base.weight.detach() + (layer.lora_B.weight @ layer.lora_A.weight).detach() * layer.scaling
                for name, layer in lora_layers(model)}
    batch = _batch()
    with torch.no_grad():
        before = model(**batch).logits
        assert merge_lora(model) is model
        after = model(**batch).logits
    assert lora_layers(model) == []
    for name, weight in expected.items():
        layer = model.get_submodule(name)
        assert type(layer) is nn.Linear and torch.equal(layer.weight, weight), name
        assert not layer.weight.requires_grad
    torch.testing.assert_close(after, before)
    assert not torch.allclose(before, tiny_model(family, n_layers=2).eval()(**batch).logits)
    with pytest.raises(ValueError, match="no LoRA layer"):
        merge_lora(model)


def test_lora_state_dict_round_trip():
    torch.manual_seed(0)
    model = add_lora(tiny_model("bert", n_layers=2), r=4, targets=("query", "value", "output")).eval()
    _randomize_b(model)
    with torch.no_grad():
        for _, module in block_modules(model)[HEAD]:
            for p in module.parameters():
                p.add_(0.1)  # a trained head, not the one a fresh model has
    sd = lora_state_dict(model)
    adapters = {f"{n}.{ab}.weight" for n, _ in lora_layers(model) for ab in ("lora_A", "lora_B")}
    head = {n for n, p in model.named_parameters() if n.startswith(("bert.pooler.", "classifier."))}
    assert set(sd) == adapters | head and len(adapters) == 2 * 3 * 2
    assert sum(t.numel() for t in sd.values()) == trainable_parameters(model)[0]
    assert not any(t.requires_grad for t in sd.values())
    batch = _batch()
    with torch.no_grad():
        expected = model(**batch).logits

    def fresh():
        torch.manual_seed(7)  # another seed: other A, other head, until loaded
        return add_lora(tiny_model("bert", n_layers=2), r=4, targets=("query", "value", "output")).eval()

    for load in (load_lora_state_dict, lambda m, s: m.load_state_dict(s, strict=False)):
        other = fresh()
        with torch.no_grad():
            assert not torch.allclose(other(**batch).logits, expected)
            load(other, copy.deepcopy(sd))
            assert torch.equal(other(**batch).logits, expected)

    other = fresh()
    untouched = copy.deepcopy(other.state_dict())
    extra = dict(sd, **{"bert.encoder.layer.0.attention.self.key.lora_A.weight": torch.zeros(4, 32)})
    missing = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    for bad in (extra, missing):
        with pytest.raises(ValueError, match="unexpected keys.*missing keys"):
            load_lora_state_dict(other, bad)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in untouched.items())  # nothing loaded
    with pytest.raises(ValueError, match="missing keys"):  # the same weights, other targets
        load_lora_state_dict(add_lora(tiny_model("bert", n_layers=2), r=4, targets=ALL_TARGETS), sd)
    with pytest.raises(ValueError, match="unexpected keys"):  # a head where the model trains none
        load_lora_state_dict(add_lora(tiny_model("bert", n_layers=2), r=4, targets=("query", "value", "output"),
                                      train_head=False), sd)
    with pytest.raises(ValueError, match="no LoRA layer"):
        lora_state_dict(tiny_model("bert", n_layers=2))


# --------------------------------------------------------------------------------------------------- Trainer

@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_trains_only_the_adapters_and_head(tmp_path, checkpointing):
    pytest.importorskip("accelerate")
    import datasets
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = add_lora(tiny_classifier("bert", num_layers=2), r=4, alpha=8)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = [{k: v[i].tolist() for k, v in b.items()} for b in synthetic_batches(4, 8, 8) for i in range(8)]
    data = datasets.Dataset.from_list(rows)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=8,
                             max_steps=3, learning_rate=1e-2, logging_steps=1, save_strategy="no", disable_tqdm=True,
                             seed=0, dataloader_num_workers=0, activation_checkpointing=checkpointing)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()

    assert all(layer.gradient_checkpointing == checkpointing for layer in encoder_layers(model))
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    params = dict(model.named_parameters())
    for name, p in params.items():
        moved = not torch.equal(p, start[name])
        assert moved == p.requires_grad, name  # frozen ones bit-identical, every trainable one moved
    # A moves too: its gradient is non-zero from step 2 on, once B is
    assert all(not torch.equal(layer.lora_A.weight, start[f"{n}.lora_A.weight"]) for n, layer in lora_layers(model))
    assert all(math.isfinite(row["loss"]) for row in trainer.state.log_history if "loss" in row)


# ----------------------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(r=0), ValueError, "r .*>= 1"),
    (dict(r=-2), ValueError, "r .*>= 1"),
    (dict(r=2.0), TypeError, "r .*int"),
    (dict(r=True), TypeError, "r .*int"),
    (dict(alpha=0), ValueError, "alpha .*> 0"),
    (dict(alpha=-1.0), ValueError, "alpha .*> 0"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(alpha="16"), TypeError, "alpha"),
    (dict(dropout=1.0), ValueError, r"dropout .*\[0, 1\)"),
    (dict(dropout=-0.1), ValueError, r"dropout .*\[0, 1\)"),
    (dict(dropout=float("nan")), ValueError, "dropout"),
    (dict(dropout=None), TypeError, "dropout"),
    (dict(targets=("query", "qkv")), ValueError,
     r"targets.*'qkv'.*query, key, value, attention_output, intermediate, output"),
    (dict(targets="query"), TypeError, r"targets.*\('query',\)"),
    (dict(targets=()), ValueError, "targets"),
    (dict(targets=(1,)), TypeError, "targets"),
    (dict(train_head="yes"), TypeError, "train_head"),
])
def test_bad_arguments_are_refused_naming_the_argument(kwargs, error, match):
    model = tiny_model("bert", n_layers=2)
    with pytest.raises(error, match=match):
        add_lora(model, **kwargs)
    assert lora_layers(model) == [] and all(p.requires_grad for p in model.parameters())  # nothing changed
    if set(kwargs) <= {"r", "alpha", "dropout"}:
        with pytest.raises(error, match=match):
            LoRALinear(nn.Linear(4, 4), **{"r": 2, "alpha": 4, **kwargs})


def test_lora_is_applied_once_and_only_where_it_fits():
    model = add_lora(tiny_model("bert", n_layers=2))
    with pytest.raises(ValueError, match="already has 4 LoRA layers"):
        add_lora(model, targets=("key",))
    with pytest.raises(ValueError, match="already a LoRALinear"):
        LoRALinear(lora_layers(model)[0][1], 2, 4)
    with pytest.raises(TypeError, match="base must be an nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), 2, 4)
    with pytest.raises(TypeError, match="supported families"):
        add_lora(nn.Sequential(nn.Linear(4, 4)))

    # a block whose layer is not where the map says: the message lists the logical names and the block's Linear layers
    model = tiny_model("bert", n_layers=2)
    encoder_layers(model)[1].attention.self.value = nn.Identity()
    with pytest.raises(ValueError,
                       match=r"'value'.*block 1.*query, key, value, attention_output.*attention\.self\.query"):
        add_lora(model)
    assert lora_layers(model) == [] and all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------- gradient checkpointing

def _lora_bert():
    """Float64 tiny BERT, dropout off, LoRA on every Linear of every block with non-zero B, in train mode
    (checkpointing acts only in training mode)."""
    torch.manual_seed(0)
    model = add_lora(tiny_classifier("bert", num_layers=2, dropout=0.0).double(), r=2, alpha=4, targets=ALL_TARGETS)
    _randomize_b(model)
    return model.train()


def _gradients(model, batch):
    """Trainable parameters' gradients after one backward pass, and how often the first adapter's forward ran."""
    calls = []
    hook = lora_layers(model)[0][1].register_forward_hook(lambda *args: calls.append(1))
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    hook.remove()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)


def test_non_reentrant_checkpointing_gives_the_same_gradients():
    model, batch = _lora_bert(), _batch()
    reference, calls = _gradients(model, batch)
    assert calls == 1 and all(g is not None and torch.count_nonzero(g) > 0 for g in reference.values())

    checkpointed = copy.deepcopy(model)
    # the brief's call; in transformers 5.24 a deprecated alias of activation_checkpointing_enable
    with pytest.warns(FutureWarning, match="activation_checkpointing_enable"):
        checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    grads, calls = _gradients(checkpointed, batch)
    assert calls == 2  # the block's forward ran again in the backward pass: checkpointing is on
    assert grads.keys() == reference.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, reference[name], rtol=0, atol=0, msg=name)  # float64, same ops: identical

    helped = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the helper uses the current API
        assert enable_gradient_checkpointing(helped) is helped
    helped.disable_input_require_grads()  # non-reentrant needs no input that requires grad
    grads, calls = _gradients(helped, batch)
    assert calls == 2
    for name, g in grads.items():
        torch.testing.assert_close(g, reference[name], rtol=0, atol=0, msg=name)


def test_reentrant_checkpointing_starves_the_adapters_without_input_grads():
    """torch's reentrant checkpoint differentiates a block only through its inputs that require grad. With LoRA
    nothing below the adapters does (embeddings frozen), so every adapter silently gets grad None; the head still
    trains. transformers 5.24's activation_checkpointing_enable registers enable_input_require_grads by itself
    (for input_ids models), which hides the pitfall; removing that hook shows it."""
    model, batch = _lora_bert(), _batch()
    reference, _ = _gradients(model, batch)
    adapters = {f"{n}.{ab}.weight" for n, _ in lora_layers(model) for ab in ("lora_A", "lora_B")}
    head = set(reference) - adapters
    assert head and adapters

    # transformers 5.24: the default is non-reentrant; with use_reentrant=True its own input-grad hook saves the day
    for kwargs in (None, {"use_reentrant": True}):
        checkpointed = copy.deepcopy(model)
        checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        assert getattr(encoder_layers(checkpointed)[0], "_gradient_checkpointing_func").keywords == \
            (kwargs or {"use_reentrant": False})
        grads, calls = _gradients(checkpointed, batch)
        assert calls == 2
        assert all(torch.equal(grads[n], reference[n]) for n in reference), kwargs

    # the pitfall: reentrant, no input requiring grad (the hook removed, as with a hand-rolled checkpoint)
    starved = copy.deepcopy(model)
    starved.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    starved.disable_input_require_grads()
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        grads, calls = _gradients(starved, batch)
    assert calls == 1  # no recomputation: the checkpointed blocks are outside the graph
    assert all(grads[n] is None for n in adapters)  # no gradient, and no error
    assert all(torch.equal(grads[n], reference[n]) for n in head)  # the head's are right

    # the reentrant workaround: make the embeddings' output require grad
    starved.enable_input_require_grads()
    grads, calls = _gradients(starved, batch)
    assert calls == 2 and all(torch.equal(grads[n], reference[n]) for n in reference)
