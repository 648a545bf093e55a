"""Tiny randomly initialised sequence classifiers of the five families ``ftcourse.models`` supports.

The one factory for the tests of the model-parts modules (models, freezing, llrd, reinit): every
optional module of a family is switched on, so that each test sees every module the map of
``ftcourse.models.EXTRA_MODULES`` (and the embedding module) can hold.
"""
from __future__ import annotations

FAMILIES = ("bert", "roberta", "electra", "distilbert", "deberta-v2")

# Settings that make each family's optional modules exist, so the tests see them.
_EXTRA = {
    "electra": dict(embedding_size=16),  # != hidden size: ELECTRA adds embeddings_project
    "deberta-v2": dict(
        relative_attention=True, position_buckets=8, max_relative_positions=16,  # encoder.rel_embeddings
        norm_rel_ebd="layer_norm",  # encoder.LayerNorm
        conv_kernel_size=3,  # encoder.conv, applied to layer 0's output
        pos_att_type=["p2c", "c2p"],  # position projections inside every block
        embedding_size=16,  # != hidden size: embeddings.embed_proj
        type_vocab_size=2,  # embeddings.token_type_embeddings (0 by default in DeBERTa-v2)
    ),
}


def tiny_config(family: str, n_layers: int = 3, hidden: int = 32, intermediate: int = 37):
    from transformers import AutoConfig

    if family == "distilbert":
        sizes = dict(dim=hidden, n_layers=n_layers, n_heads=2, hidden_dim=intermediate)
    else:
        sizes = dict(hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=2,
                     intermediate_size=intermediate)
    return AutoConfig.for_model(family, vocab_size=100, max_position_embeddings=64, num_labels=2,
                                **sizes, **_EXTRA.get(family, {}))


def tiny_model(family: str, n_layers: int = 3, seed: int = 0, **sizes):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(family, n_layers, **sizes))
