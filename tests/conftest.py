"""Shared test fixtures: tiny models built offline from configs, and synthetic batches."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_classifier(family: str = "bert", num_layers: int = 3, hidden: int = 16, dropout: float = 0.0, num_labels: int = 2):
    """A randomly initialised sequence classifier of ``family`` small enough for unit tests."""
    import transformers as tf

    common = dict(vocab_size=100, max_position_embeddings=64, num_labels=num_labels)
    if family == "distilbert":
        config = tf.DistilBertConfig(dim=hidden, n_layers=num_layers, n_heads=2, hidden_dim=2 * hidden,
                                     dropout=dropout, attention_dropout=dropout, seq_classif_dropout=dropout, **common)
        return tf.DistilBertForSequenceClassification(config)
    kw = dict(hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=2, intermediate_size=2 * hidden,
              hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **common)
    classes = {
        "bert": (tf.BertConfig, tf.BertForSequenceClassification),
        "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification),
        "electra": (tf.ElectraConfig, tf.ElectraForSequenceClassification),
        "deberta-v2": (tf.DebertaV2Config, tf.DebertaV2ForSequenceClassification),
    }
    if family == "electra":
        kw["embedding_size"] = hidden // 2
    if family == "deberta-v2":
        kw["pooler_dropout"] = dropout
    config_cls, model_cls = classes[family]
    return model_cls(config_cls(**kw))


def synthetic_batches(n_batches: int = 8, batch_size: int = 8, seq_len: int = 12, vocab: int = 100, seed: int = 0):
    """Padded batches whose label is learnable (is token 7 present?), as a list a loop can iterate."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        lengths = torch.randint(4, seq_len + 1, (batch_size,), generator=g)
        ids = torch.randint(10, vocab, (batch_size, seq_len), generator=g)
        labels = torch.randint(0, 2, (batch_size,), generator=g)
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
        ids[labels == 1, 1] = 7
        ids = ids * mask
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


@pytest.fixture
def shared_data_dir() -> Path:
    root = Path(os.environ.get("FTCOURSE_DATA_DIR", SHARED_DATA))
    if not (root / "sst2" / "train.jsonl").is_file():
        pytest.skip("SST-2 JSON Lines not found (set FTCOURSE_DATA_DIR)")
    return root
