import numpy as np
import pytest
import torch
from tiny_models import FAMILIES, tiny_model

from ftcourse.llrd import (block_lrs, grouped_llrd_param_groups, layer_blocks, llrd_param_groups, plot_layer_lrs,
                           split_layers)
from ftcourse.models import encoder_layers
from ftcourse.param_groups import is_no_decay


def _name_of(model):
    return {id(p): n for n, p in model.named_parameters()}


def _check_partition(model, groups):
    """Every trainable parameter in exactly one group; no frozen parameter anywhere."""
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert len({g["name"] for g in groups}) == len(groups)


@pytest.mark.parametrize("family", FAMILIES)
def test_llrd_lrs_decay_and_partition(family):
    model = tiny_model(family, n_layers=3)
    lr, decay, wd = 1e-3, 0.8, 0.01
    groups = llrd_param_groups(model, lr, decay, weight_decay=wd)
    _check_partition(model, groups)
    expected = {"embeddings": lr * decay**3, "layer_0": lr * decay**2, "layer_1": lr * decay, "layer_2": lr, "head": lr}
    assert block_lrs(groups) == pytest.approx(expected, rel=1e-12)
    assert list(block_lrs(groups)) == list(expected)  # bottom to top
    names = _name_of(model)
    for g in groups:
        kind = g["name"].split(".")[1]
        assert g["weight_decay"] == (wd if kind == "decay" else 0.0)
        assert all(is_no_decay(names[id(p)], p) == (kind == "no_decay") for p in g["params"])
    # the layer groups hold exactly the blocks' parameters
    for i, layer in enumerate(encoder_layers(model)):
        in_group = {id(p) for g in groups if g["name"].startswith(f"layer_{i}.") for p in g["params"]}
        assert {id(p) for p in layer.parameters()} <= in_group


def _block_of(model, groups):
    names = _name_of(model)
    return {names[id(p)]: g["name"].split(".")[0] for g in groups for p in g["params"]}


def test_encoder_level_modules_are_placed_as_documented():
    electra = tiny_model("electra")
    where = _block_of(electra, llrd_param_groups(electra, 1e-3, 0.9))
    assert where["electra.embeddings_project.weight"] == "embeddings"
    assert where["classifier.out_proj.weight"] == "head"

    deberta = tiny_model("deberta-v2")
    where = _block_of(deberta, llrd_param_groups(deberta, 1e-3, 0.9))
    assert where["deberta.encoder.rel_embeddings.weight"] == "embeddings"
    assert where["deberta.encoder.LayerNorm.weight"] == "embeddings"
    assert where["deberta.encoder.conv.conv.weight"] == "layer_0"
    assert where["pooler.dense.weight"] == "head"

    bert = tiny_model("bert")
    where = _block_of(bert, llrd_param_groups(bert, 1e-3, 0.9))
    assert where["bert.pooler.dense.weight"] == "head" and where["classifier.weight"] == "head"

    distilbert = tiny_model("distilbert")
    where = _block_of(distilbert, llrd_param_groups(distilbert, 1e-3, 0.9))
    assert where["distilbert.embeddings.word_embeddings.weight"] == "embeddings"
    assert where["pre_classifier.weight"] == "head"


def test_only_trainable_parameters_and_empty_blocks_dropped():
    model = tiny_model("bert")
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    for p in model.bert.encoder.layer[0].parameters():
        p.requires_grad_(False)
    groups = llrd_param_groups(model, 1e-3, 0.9)
    _check_partition(model, groups)
    assert not any(g["name"].startswith(("embeddings.", "layer_0.")) for g in groups)
    assert all(g["params"] for g in groups)


def test_head_lr_and_decay_one():
    model = tiny_model("roberta")
    lrs = block_lrs(llrd_param_groups(model, 2e-5, 1.0, head_lr=1e-3))
    assert {k: v for k, v in lrs.items() if k != "head"} == {k: 2e-5 for k in lrs if k != "head"}
    assert lrs["head"] == 1e-3


def _article_llrd_lrs(model, init_lr=3.5e-6, head_lr=3.6e-6, multiplier=0.9):
    """roberta_base_AdamW_LLRD of the "Advanced Techniques for Fine-tuning Transformers" article,
    name matching as it wrote it: {param name: lr}."""
    named = list(model.named_parameters())
    lrs = {n: head_lr for n, _ in named if "pooler" in n or "regressor" in n}
    lr = init_lr
    for layer in range(11, -1, -1):
        lrs.update({n: lr for n, _ in named if f"encoder.layer.{layer}." in n})
        lr *= multiplier
    lrs.update({n: lr for n, _ in named if "embeddings" in n})
    return lrs


def test_matches_the_advanced_techniques_article_recipe_and_shows_its_missing_head():
    model = tiny_model("roberta", n_layers=12)
    reference = _article_llrd_lrs(model)
    ours = {}
    names = _name_of(model)
    for g in llrd_param_groups(model, 3.5e-6, 0.9, weight_decay=0.01, head_lr=3.6e-6):
        ours.update({names[id(p)]: g["lr"] for p in g["params"]})
    for name, lr in reference.items():
        assert ours[name] == pytest.approx(lr, rel=1e-12), name
    # its name filter ("pooler"/"regressor") never matches RobertaForSequenceClassification's head
    missed = set(ours) - set(reference)
    assert missed and all(n.startswith("classifier.") for n in missed)


def test_split_layers():
    assert [len(r) for r in split_layers(6, 4)] == [2, 2, 1, 1]
    assert [list(r) for r in split_layers(12, 3)] == [list(range(0, 4)), list(range(4, 8)), list(range(8, 12))]
    assert [len(r) for r in split_layers(5, 5)] == [1] * 5
    assert [list(r) for r in split_layers(3, 1)] == [[0, 1, 2]]


def test_grouped_llrd_advanced_techniques_article_recipe():
    model = tiny_model("roberta", n_layers=12)
    groups = grouped_llrd_param_groups(model, [1e-6, 1.75e-6, 3.5e-6], weight_decay=0.01, head_lr=3.6e-6)
    _check_partition(model, groups)
    lrs = block_lrs(groups)
    assert lrs["embeddings"] == 1e-6
    assert [lrs[f"layer_{i}"] for i in range(12)] == [1e-6] * 4 + [1.75e-6] * 4 + [3.5e-6] * 4
    assert lrs["head"] == 3.6e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_llrd_partition_and_default_head(family):
    model = tiny_model(family, n_layers=5)
    groups = grouped_llrd_param_groups(model, [1e-5, 2e-5], weight_decay=0.1)
    _check_partition(model, groups)
    lrs = block_lrs(groups)
    assert [lrs[b] for b in ["embeddings", "layer_0", "layer_1", "layer_2", "layer_3", "layer_4", "head"]] == \
        [1e-5, 1e-5, 1e-5, 1e-5, 2e-5, 2e-5, 2e-5]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0.0, decay=0.9), "lr must be"), (dict(lr=-1e-5, decay=0.9), "lr must be"),
    (dict(lr=float("nan"), decay=0.9), "lr must be"),
    (dict(lr=1e-5, decay=0.0), r"decay must be in \(0, 1\]"), (dict(lr=1e-5, decay=1.01), r"decay must be in \(0, 1\]"),
    (dict(lr=1e-5, decay=-0.5), r"decay must be in \(0, 1\]"),
    (dict(lr=1e-5, decay=0.9, weight_decay=-0.01), "weight_decay must be"),
    (dict(lr=1e-5, decay=0.9, head_lr=0.0), "head_lr must be"),
])
def test_llrd_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        llrd_param_groups(tiny_model("bert"), **kwargs)


@pytest.mark.parametrize("group_lrs, match", [
    ([], "group_lrs must be"), (1e-5, "group_lrs must be"), ([1e-5, 0.0], r"group_lrs\[1\] must be"),
    ([1e-5] * 4, "between 1 and the number of layers"),
])
def test_grouped_llrd_errors(group_lrs, match):
    with pytest.raises(ValueError, match=match):
        grouped_llrd_param_groups(tiny_model("bert", n_layers=3), group_lrs)


def test_unsupported_family_is_a_type_error():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(TypeError, match="supported families"):
        llrd_param_groups(model, 1e-5, 0.9)


def test_fused_adamw_and_linear_warmup_keep_the_ratios():
    from transformers import get_scheduler

    model = tiny_model("bert", n_layers=4)
    groups = llrd_param_groups(model, 1e-3, 0.7, weight_decay=0.01, head_lr=2e-3)
    initial = [g["lr"] for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, fused=True)
    assert [g["name"] for g in optimizer.param_groups] == [g["name"] for g in groups]  # extra key kept
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=3, num_training_steps=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    input_ids = torch.randint(0, 100, (4, 8))
    factors = []
    for _ in range(9):
        model(input_ids=input_ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        lrs = [g["lr"] for g in optimizer.param_groups]
        ratio = [lr / lr0 for lr, lr0 in zip(lrs, initial)]
        assert ratio == pytest.approx([ratio[0]] * len(ratio), rel=1e-12, abs=0)  # one factor for all groups
        factors.append(ratio[0])
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    assert factors[:4] == pytest.approx([0, 1 / 3, 2 / 3, 1])  # warmup, then linear decay
    assert factors[4] == pytest.approx(6 / 7)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert block_lrs(optimizer.param_groups)["head"] == pytest.approx(2e-3 * 1 / 7)  # after 9 scheduler steps


def test_plot_layer_lrs():
    import matplotlib

    matplotlib.use("Agg")
    model = tiny_model("bert", n_layers=4)
    llrd = llrd_param_groups(model, 1e-3, 0.5)
    ax = plot_layer_lrs(llrd, label="LLRD")
    plot_layer_lrs(grouped_llrd_param_groups(model, [1e-4, 1e-3]), ax=ax, label="grouped")
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == pytest.approx([1e-3 / 16, 1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3, 1e-3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["emb", "L0", "L1", "L2", "L3", "head"]
    with pytest.raises(ValueError, match="name"):
        block_lrs([{"params": [], "lr": 1.0}])


def test_layer_blocks_cover_every_parameter_once():
    model = tiny_model("bert")
    named = [n for params in layer_blocks(model).values() for n, _ in params]
    assert sorted(named) == sorted(n for n, _ in model.named_parameters())


# --------------------------------------------------------------------------------------------
# Zhang et al. 2021's convention, the one map of parts, numpy arguments, bad input
# --------------------------------------------------------------------------------------------
def _zhang_llrd_lrs(model, learning_rate, decay):
    """get_optimizer_grouped_parameters of Zhang et al.'s released code (revisit-bert-finetuning,
    run_glue.py), rewritten as {param name: lr}: head ("classifier"/"pooler") at the lr, then
    lr *= decay *before* each layer, from the top block down to the embeddings."""
    lrs = {n: learning_rate for n, _ in model.named_parameters() if "classifier" in n or "pooler" in n}
    layers = [model.bert.embeddings] + list(model.bert.encoder.layer)
    names = {id(p): n for n, p in model.named_parameters()}
    lr = learning_rate
    for layer in reversed(layers):
        lr *= decay
        lrs.update({names[id(p)]: lr for p in layer.parameters()})
    return lrs


def test_zhang_convention_block_by_block():
    """llrd_param_groups(model, lr=lr * xi, decay=xi, head_lr=lr) is Zhang et al.'s convention: the
    head lr, the top block lr*xi, block i lr*xi^(L-i), the embeddings lr*xi^(L+1)."""
    n_layers, lr, xi = 4, 2e-5, 0.8
    model = tiny_model("bert", n_layers=n_layers)
    groups = llrd_param_groups(model, lr=lr * xi, decay=xi, head_lr=lr)
    expected = {"embeddings": lr * xi ** (n_layers + 1),
                **{f"layer_{i}": lr * xi ** (n_layers - i) for i in range(n_layers)}, "head": lr}
    assert block_lrs(groups) == pytest.approx(expected, rel=1e-12)
    assert block_lrs(groups)["layer_3"] == pytest.approx(lr * xi)  # the top block is already decayed once
    # and parameter by parameter against the reference loop: every parameter it selects, same lr
    reference = _zhang_llrd_lrs(model, lr, xi)
    names = _name_of(model)
    ours = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert set(reference) == set(ours)
    for name, ref_lr in reference.items():
        assert ours[name] == pytest.approx(ref_lr, rel=1e-12), name


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_gets_the_lr_of_its_block(family):
    from ftcourse.models import parameter_blocks

    model = tiny_model(family, n_layers=3)
    groups = llrd_param_groups(model, 1e-3, 0.5)
    _check_partition(model, groups)
    lrs, names = block_lrs(groups), _name_of(model)
    by_name = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    for name, block in parameter_blocks(model).items():
        assert by_name[name] == lrs[block if isinstance(block, str) else f"layer_{block}"], name
    if family == "deberta-v2":  # the convolution after layer 0 trains at layer 0's lr
        conv = [n for n in by_name if n.startswith("deberta.encoder.conv.")]
        assert conv and all(by_name[n] == lrs["layer_0"] == 1e-3 * 0.5 ** 2 for n in conv)


def test_numpy_numbers_and_arrays_are_accepted():
    model = tiny_model("bert", n_layers=3)
    as_python = block_lrs(grouped_llrd_param_groups(model, [1e-5, 2e-5, 3e-5], weight_decay=0.01))
    assert block_lrs(grouped_llrd_param_groups(model, np.array([1e-5, 2e-5, 3e-5]), weight_decay=np.float64(0.01))) \
        == as_python
    assert block_lrs(grouped_llrd_param_groups(model, (1e-5, 2e-5, 3e-5))) == as_python
    reference = block_lrs(llrd_param_groups(model, 1e-3, 0.9, head_lr=2e-3))
    for lr, decay in [(np.float64(1e-3), np.float64(0.9)), (1e-3, np.float32(0.9))]:
        assert block_lrs(llrd_param_groups(model, lr, decay, head_lr=np.float32(2e-3))) == pytest.approx(reference,
                                                                                                     rel=1e-6)
    assert [len(r) for r in split_layers(np.int64(6), np.int64(4))] == [2, 2, 1, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr="1e-5", decay=0.9), "lr must be a finite number"), (dict(lr=True, decay=0.9), "lr must be"),
    (dict(lr=1e-5, decay="0.9"), "decay must be a number in"), (dict(lr=1e-5, decay=True), "decay must be"),
    (dict(lr=1e-5, decay=0.9, head_lr="1e-3"), "head_lr must be"),
])
def test_llrd_wrong_types_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        llrd_param_groups(tiny_model("bert"), **kwargs)


@pytest.mark.parametrize("group_lrs", [{1e-5, 2e-5}, {"a": 1e-5}, (lr for lr in [1e-5]), "1e-5",
                                       [[1e-5, 2e-5]], np.array([[1e-5, 2e-5]]), np.array(1e-5), [1e-5, "2e-5"]])
def test_grouped_llrd_wrong_types_are_type_errors(group_lrs):
    with pytest.raises(TypeError, match="group_lrs"):
        grouped_llrd_param_groups(tiny_model("bert", n_layers=3), group_lrs)


@pytest.mark.parametrize("args, error", [((6, 0), ValueError), ((0, 1), ValueError), ((6, 7), ValueError),
                                         ((6.0, 2), TypeError), ((6, True), TypeError), ((6, "2"), TypeError)])
def test_split_layers_errors(args, error):
    with pytest.raises(error, match="n_groups|n_layers"):
        split_layers(*args)


@pytest.mark.parametrize("groups, error, match", [
    ([{"params": [], "lr": 1.0, "name": "classifier.decay"}], ValueError, "name"),  # was an IndexError
    ([{"params": [], "lr": 1.0, "name": "layer_x.decay"}], ValueError, "name"),
    ([{"params": [], "name": "layer_1.decay"}], ValueError, "no 'lr'"),  # was a KeyError
    ({"params": [], "lr": 1.0, "name": "head.decay"}, TypeError, "one dict"),  # one group, not a list
    ([("head.decay", 1.0)], TypeError, r"groups\[0\]"),
])
def test_block_lrs_bad_groups(groups, error, match):
    with pytest.raises(error, match=match):
        block_lrs(groups)


def test_block_lrs_orders_layers_numerically():
    groups = [{"params": [], "lr": float(i), "name": f"layer_{i}.decay"} for i in (10, 2, 1)]
    groups += [{"params": [], "lr": 9.0, "name": "head.no_decay"},
               {"params": [], "lr": 0.5, "name": "embeddings.decay"}]
    assert list(block_lrs(groups)) == ["embeddings", "layer_1", "layer_2", "layer_10", "head"]


def test_default_weight_decay_is_the_courses_and_lamb_keeps_its_trust_ratio():
    """The default was 0.0: with it, ``LAMB(llrd_param_groups(...))`` had weight decay 0 in every group,
    and LAMB applies its trust ratio only where the weight decay is not 0, so it silently became Adam."""
    import warnings

    from ftcourse.llrd import COURSE_WEIGHT_DECAY
    from ftcourse.optim import LAMB

    assert COURSE_WEIGHT_DECAY == 0.01
    model = tiny_model("bert", n_layers=3)
    for groups in (llrd_param_groups(model, 1e-3, 0.9), grouped_llrd_param_groups(model, [1e-4, 1e-3])):
        assert {g["weight_decay"] for g in groups if g["name"].endswith(".decay")} == {0.01}
        assert {g["weight_decay"] for g in groups if g["name"].endswith(".no_decay")} == {0.0}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "trust ratio never applies" warning
            LAMB(groups, lr=1e-3)
