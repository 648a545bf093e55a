"""Shared test fixtures: tiny models built offline from configs, and synthetic batches."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

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


WORDS = {1: ["good", "great", "fine", "lovely", "superb"], 0: ["bad", "awful", "dull", "poor", "boring"]}


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        length = int(rng.integers(1, 12))
        words = [str(rng.choice(WORDS[label]))] + ["the", "movie", "was", "a", "film"][: length % 5] * (1 + length // 5)
        rows.append({"sentence": " ".join(words), "label": label})
    return rows


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    """A small SST-2-shaped folder (48 / 16 / 24 sentences of a learnable toy language) as FTCOURSE_DATA_DIR,
    and a ci profile sized to it: with ``tiny_bert`` as model_factory, a fine_tune run takes a fraction of a second."""
    from ftcourse.course import data as ftdata
    from ftcourse.course.profiles import get_profile

    folder = tmp_path / "sst2"
    folder.mkdir()
    for split, n, seed in (("train", 48, 0), ("validation", 16, 1), ("test", 24, 2)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _sentences(n, seed)))
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path))
    ftdata.cache_clear()
    profile = get_profile("ci").replace(train_size=48, val_size=None, test_size=None, epochs=2, evals_per_epoch=2,
                                        batch_size=8, eval_batch_size=8, seeds=(0, 1), lr=1e-3, warmup_ratio=0.0)
    yield profile
    ftdata.cache_clear()


def tiny_bert(model_id):
    import transformers as tf

    config = tf.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, num_labels=2)
    return tf.BertForSequenceClassification(config)


def metric_results(rng, n, effects, sd):
    """One row per (label, seed) with only the metric: fast random inputs for ``ftcourse.stats.compare``."""
    import pandas as pd

    base = rng.normal(0.9, 0.01, n)
    rows = [{"label": "base", "seed": s, "test_accuracy": base[s]} for s in range(n)]
    for lab, eff in effects.items():
        vals = base + eff + rng.normal(0, sd, n)
        rows += [{"label": lab, "seed": s, "test_accuracy": vals[s]} for s in range(n)]
    return pd.DataFrame(rows)
