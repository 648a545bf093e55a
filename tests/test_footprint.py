"""ftcourse.course.footprint: notebook 12's step costs count the right parameters and refuse bad input."""
import pytest
import torch

from ftcourse.course.footprint import prepare, step_footprint
from ftcourse.lora import lora_layers, trainable_parameters

from conftest import tiny_bert

MODEL_ID = "tiny-bert"


@pytest.fixture
def tiny_models(monkeypatch):
    # step_footprint loads its model by id: a small config-built BERT instead of MiniLM
    from ftcourse.course import pretrained

    monkeypatch.setattr(pretrained, "load_model", lambda model_id, num_labels=2: tiny_bert(model_id))


def test_prepare_trains_what_each_mode_says(tiny_models):
    counts = {}
    for mode in ("full", "lora", "head"):
        model = prepare(tiny_bert(MODEL_ID), mode, rank=4)
        counts[mode] = trainable_parameters(model)
        assert (len(lora_layers(model)) > 0) == (mode == "lora")
    assert counts["full"][0] == counts["full"][1]
    assert counts["head"][0] < counts["lora"][0] < counts["full"][0]
    # LoRA adds r * (in + out) per adapted layer and trains the head besides
    model = prepare(tiny_bert(MODEL_ID), "lora", rank=4)
    adapters = sum(4 * (layer.in_features + layer.out_features) for _, layer in lora_layers(model))
    assert counts["lora"][0] == adapters + counts["head"][0]


def test_checkpointing_keeps_the_gradients(tiny_models):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = prepare(tiny_bert(MODEL_ID), "lora", rank=4, checkpointing=checkpointing).double().train()
        assert model.is_activation_checkpointing == checkpointing  # so equal gradients are not a no-op's
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        ids = torch.randint(5, 90, (3, 9), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-12)


def test_bad_input_names_the_argument(tiny_models):
    with pytest.raises(ValueError, match="mode must be one of full, lora, head"):
        step_footprint(MODEL_ID, "adapter")
    with pytest.raises(ValueError, match="length must be an int >= 2"):
        step_footprint(MODEL_ID, "full", length=1)


def test_a_step_footprint_reports_counts_time_and_memory(tiny_models):
    full = step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1)
    lora = step_footprint(MODEL_ID, "lora", batch_size=2, length=8, steps=1, rank=2)
    assert full["trainable"] == full["total"] and lora["trainable"] < lora["total"]
    assert full["optimizer_state_mb"] > lora["optimizer_state_mb"] > 0  # Adam keeps 2 states a trainable weight
    assert full["step_s"] > 0 and full["peak_mb"] == full["peak_mb"]


def test_a_step_footprint_runs_under_the_precision_it_is_given(tiny_models):
    # notebook 04 times fp32 and bf16 in fresh processes with this function
    bf16 = step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1, precision="bf16")
    fp32 = step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1)
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert bf16["optimizer_state_mb"] == fp32["optimizer_state_mb"]  # the master weights and Adam's state stay fp32
    with pytest.raises(ValueError, match="amp must be one of"):
        step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1, precision="fp8")


def test_a_step_footprint_freezes_the_bottom_blocks_it_is_given(tiny_models):
    # notebook 03 measures each frozen configuration in a fresh process with this function
    from ftcourse.course.pretrained import load_model
    from ftcourse.freezing import count_parameters, freeze_bottom_layers

    full = step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1)
    counts = []
    for n in (0, 1):
        frozen = step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1, frozen_layers=n)
        expected = load_model(MODEL_ID)
        freeze_bottom_layers(expected, n, embeddings=True)
        assert frozen["trainable"] == count_parameters(expected) < full["trainable"]
        assert frozen["optimizer_state_mb"] < full["optimizer_state_mb"]  # no Adam state for frozen weights
        counts.append(frozen["trainable"])
    assert counts[1] < counts[0]
    for bad in (-1, 99, 1.0, True):
        with pytest.raises(ValueError, match="frozen_layers must be None or an int in 0.."):
            step_footprint(MODEL_ID, "full", batch_size=2, length=8, steps=1, frozen_layers=bad)
    with pytest.raises(ValueError, match="frozen_layers applies to mode 'full' only"):
        step_footprint(MODEL_ID, "lora", batch_size=2, length=8, steps=1, frozen_layers=1)
