import pytest
import torch
from tiny_models import FAMILIES, tiny_config, tiny_model
from torch import nn

from ftcourse.models import encoder_layers
from ftcourse.reinit import HEAD_INITS, classifier_head, find_pooler, init_classifier_head, reinit_top_layers

POOLER = {"bert": "bert.pooler", "deberta-v2": "pooler", "roberta": None, "electra": None, "distilbert": None}


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _layer_prefix(model, i):
    names = {id(m): n for n, m in model.named_modules()}
    return names[id(encoder_layers(model)[i])] + "."


@pytest.mark.parametrize("family", FAMILIES)
def test_reinit_changes_exactly_the_top_layers_and_pooler(family):
    model = tiny_model(family, n_layers=3)
    before = _snapshot(model)
    done = reinit_top_layers(model, 2)
    top = [_layer_prefix(model, i) for i in (1, 2)]
    assert done == [p[:-1] for p in top] + ([POOLER[family]] if POOLER[family] else [])
    expected = {n for n in before if n.startswith(tuple(top))}
    if POOLER[family]:
        expected |= {n for n in before if n.startswith(POOLER[family] + ".")}
    changed = _changed(model, before)
    assert changed <= expected
    # a fresh tiny model's biases and LayerNorms are already 0 and 1: only its matrices must change
    assert {n for n in expected if before[n].ndim == 2} <= changed
    for n in before:
        if n.startswith(_layer_prefix(model, 0)):
            assert torch.equal(dict(model.named_parameters())[n], before[n])  # bottom layer bit-identical


@pytest.mark.parametrize("family", FAMILIES)
def test_find_pooler(family):
    found = find_pooler(tiny_model(family))
    assert (found[0] if found else None) == POOLER[family]


def test_n_zero_and_n_all_and_pooler_switch():
    model = tiny_model("bert", n_layers=3)
    before = _snapshot(model)
    assert reinit_top_layers(model, 0, reinit_pooler=False) == []
    assert not _changed(model, before)
    assert reinit_top_layers(model, 0) == ["bert.pooler"]
    assert _changed(model, before) == {"bert.pooler.dense.weight"}  # the bias was already 0
    assert reinit_top_layers(model, 3, reinit_pooler=False) == [f"bert.encoder.layer.{i}" for i in range(3)]


@pytest.mark.parametrize("n", [-1, 4, 1.0, True, None])
def test_n_out_of_range(n):
    with pytest.raises(ValueError, match=r"n must be an integer in \[0, 3\]"):
        reinit_top_layers(tiny_model("bert", n_layers=3), n)


def test_unknown_module_type_is_not_skipped_silently():
    model = tiny_model("bert", n_layers=2)
    # Conv1d is supported now (DeBERTa-v2's encoder.conv): a Conv2d is still a module nobody expects here
    model.bert.encoder.layer[1].extra = nn.Conv2d(4, 4, 1)
    with pytest.raises(TypeError, match="Conv2d at 'bert.encoder.layer.1.extra'"):
        reinit_top_layers(model, 1)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A 'pretrained' checkpoint whose weights look trained, not freshly initialised:
    matrices with std 3x initializer_range, LayerNorm weights 1.5 and non-zero biases."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert", n_layers=4, hidden=256, intermediate=512))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.mul_(3.0)
            elif name.endswith("LayerNorm.weight"):
                p.fill_(1.5)
            else:
                p.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(path)
    return path


def _load(path):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    return AutoModelForSequenceClassification.from_pretrained(path)


def test_init_weights_trap_and_fix_after_from_pretrained(pretrained_dir):
    model = _load(pretrained_dir)
    before = _snapshot(model)
    # The tutorial way: silently a no-op on loaded weights in transformers 5.
    top = model.bert.encoder.layer[-1]
    model._init_weights(top.output.dense)
    top.apply(model._init_weights)
    assert not _changed(model, before)

    done = reinit_top_layers(model, 2)
    assert done == ["bert.encoder.layer.2", "bert.encoder.layer.3", "bert.pooler"]
    changed = _changed(model, before)
    for n in before:
        in_top = n.startswith(("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler."))
        assert (n in changed) == in_top, n  # top layers all changed; everything else bit-identical

    std = model.config.initializer_range
    params = dict(model.named_parameters())
    top_weights = torch.cat([p.flatten() for n, p in params.items() if n.startswith("bert.encoder.layer.3.") and p.ndim == 2])
    assert top_weights.std().item() == pytest.approx(std, rel=0.02)
    assert abs(top_weights.mean().item()) < 3 * std / top_weights.numel() ** 0.5 * 3
    for n, p in params.items():
        if n.startswith(("bert.encoder.layer.2.", "bert.encoder.layer.3.", "bert.pooler.")):
            if n.endswith("LayerNorm.weight"):
                assert torch.all(p == 1), n
            elif n.endswith(".bias"):
                assert torch.all(p == 0), n
            else:
                assert p.std().item() == pytest.approx(std, rel=0.15), n
    assert params["bert.encoder.layer.1.output.LayerNorm.weight"].eq(1.5).all()  # untouched below


def test_reinit_respects_the_seed(pretrained_dir):
    runs = []
    for seed in (0, 0, 1):
        model = _load(pretrained_dir)
        torch.manual_seed(seed)
        reinit_top_layers(model, 1)
        runs.append(model.bert.encoder.layer[-1].intermediate.dense.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


HEADS = {"bert": ["classifier"], "roberta": ["classifier.dense", "classifier.out_proj"],
         "electra": ["classifier.dense", "classifier.out_proj"], "distilbert": ["pre_classifier", "classifier"],
         "deberta-v2": ["classifier"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_classifier_head_modules(family):
    assert [n for n, _ in classifier_head(tiny_model(family))] == HEADS[family]


@pytest.mark.parametrize("method, expected_std", [
    ("normal", lambda fan_in, fan_out: 0.02),
    ("xavier_uniform", lambda fan_in, fan_out: (2 / (fan_in + fan_out)) ** 0.5),
    ("kaiming_normal", lambda fan_in, fan_out: (2 / fan_in) ** 0.5),
])
def test_init_classifier_head_statistics(method, expected_std):
    model = tiny_model("distilbert", n_layers=1, hidden=512, intermediate=64)
    before = _snapshot(model)
    torch.manual_seed(0)
    assert init_classifier_head(model, method) == ["pre_classifier", "classifier"]
    w = model.pre_classifier.weight
    assert w.std().item() == pytest.approx(expected_std(w.shape[1], w.shape[0]), rel=0.03)
    assert torch.all(model.pre_classifier.bias == 0) and torch.all(model.classifier.bias == 0)
    assert _changed(model, before) <= {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"}


def test_init_classifier_head_bad_method():
    with pytest.raises(ValueError, match="method must be one of " + ", ".join(HEAD_INITS)):
        init_classifier_head(tiny_model("bert"), "orthogonal")


# --------------------------------------------------------------------------------------------
# DeBERTa-v2's encoder.conv is part of layer 0; numpy n; bad input
# --------------------------------------------------------------------------------------------
def test_deberta_conv_is_reinitialised_with_layer_0_only():
    model = tiny_model("deberta-v2", n_layers=3)
    conv = {n for n, _ in model.named_parameters() if n.startswith("deberta.encoder.conv.")}
    assert conv
    before = _snapshot(model)
    assert "deberta.encoder.conv" not in reinit_top_layers(model, 2)
    assert _changed(model, before).isdisjoint(conv)  # n < L: layer 0, conv included, untouched

    with torch.no_grad():  # make it look trained, so that a re-initialisation shows everywhere
        model.deberta.encoder.conv.conv.weight.mul_(5.0)
        model.deberta.encoder.conv.conv.bias.fill_(0.3)
        model.deberta.encoder.conv.LayerNorm.weight.fill_(1.5)
        model.deberta.encoder.conv.LayerNorm.bias.fill_(-0.1)
    before = _snapshot(model)
    done = reinit_top_layers(model, 3, reinit_pooler=False)
    assert done == ["deberta.encoder.layer.0", "deberta.encoder.conv", "deberta.encoder.layer.1",
                    "deberta.encoder.layer.2"]
    assert conv <= _changed(model, before)
    conv_module = model.deberta.encoder.conv
    assert conv_module.conv.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.1)
    assert torch.all(conv_module.conv.bias == 0) and torch.all(conv_module.LayerNorm.bias == 0)
    assert torch.all(conv_module.LayerNorm.weight == 1)


def test_numpy_n_is_accepted():
    import numpy as np

    runs = []
    for n in (1, np.int64(1)):
        model = tiny_model("bert", n_layers=3)
        torch.manual_seed(0)
        runs.append((reinit_top_layers(model, n), _snapshot(model)))
    assert runs[0][0] == runs[1][0] == ["bert.encoder.layer.2", "bert.pooler"]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


@pytest.mark.parametrize("n", [1.0, True, None, "1"])
def test_wrong_type_n_is_a_type_error_that_old_code_still_catches(n):
    with pytest.raises(TypeError, match=r"n must be an integer in \[0, 3\]"):
        reinit_top_layers(tiny_model("bert", n_layers=3), n)


def test_flag_and_method_types():
    model = tiny_model("bert")
    with pytest.raises(TypeError, match="reinit_pooler must be True or False"):
        reinit_top_layers(model, 1, reinit_pooler="no")
    with pytest.raises(TypeError, match="method must be one of"):
        init_classifier_head(model, None)


def test_bad_initializer_range_is_refused_for_the_head_too():
    model = tiny_model("bert")
    model.config.initializer_range = -0.02
    with pytest.raises(ValueError, match="initializer_range must be a number > 0"):
        init_classifier_head(model, "normal")
    assert init_classifier_head(model, "xavier_uniform") == ["classifier"]  # needs no std
