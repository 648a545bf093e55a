"""make_loader(group_by_length=True): transformers' LengthGroupedSampler, seeded and deterministic."""
from __future__ import annotations

import datasets
import pytest
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from ftcourse.course import data as ftdata


class PadOnlyTokenizer:
    """The part of a tokenizer DataCollatorWithPadding uses: ``pad`` (right padding with id 0)."""

    padding_side = "right"
    pad_token_id = 0
    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt", **kw):
        width = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            ids = [int(i) for i in f["input_ids"]]
            out["input_ids"].append(ids + [0] * (width - len(ids)))
            out["attention_mask"].append([1] * len(ids) + [0] * (width - len(ids)))
            out["labels"].append(int(f["labels"]))
        return {k: torch.tensor(v) for k, v in out.items()}


def fake_tokenized(n: int = 400, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 61, (n,), generator=g).tolist()
    # Row i holds token id i + 1 first, so batches can be mapped back to rows.
    return datasets.Dataset.from_dict({
        "input_ids": [[i + 1] + [5] * (length - 1) for i, length in enumerate(lengths)],
        "attention_mask": [[1] * length for length in lengths],
        "labels": [i % 2 for i in range(n)],
    })


def epoch_rows(loader) -> list[list[int]]:
    return [(batch["input_ids"][:, 0] - 1).tolist() for batch in loader]


def padding_fraction(loader) -> float:
    masks = [batch["attention_mask"] for batch in loader]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def test_group_by_length_is_transformers_order_deterministic_and_complete():
    tokenized, tok = fake_tokenized(), PadOnlyTokenizer()
    loader = ftdata.make_loader(tokenized, tok, batch_size=8, shuffle=True, seed=3, group_by_length=True)
    first, second = epoch_rows(loader), epoch_rows(loader)
    # Every row exactly once per epoch; a new order each epoch.
    assert sorted(r for b in first for r in b) == list(range(len(tokenized)))
    assert sorted(r for b in second for r in b) == list(range(len(tokenized)))
    assert first != second
    # Same seed, same batches; another seed, other batches.
    again = ftdata.make_loader(tokenized, tok, batch_size=8, shuffle=True, seed=3, group_by_length=True)
    assert epoch_rows(again) == first
    assert epoch_rows(ftdata.make_loader(tokenized, tok, 8, shuffle=True, seed=4, group_by_length=True)) != first
    # The reference: transformers' get_length_grouped_indices with the same seeded generator.
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    expected = get_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(3))
    assert [r for b in first for r in b] == expected
    # The longest sentence is in the first batch (an out-of-memory error shows up at once).
    assert max(lengths) in [lengths[r] for r in first[0]]


def test_group_by_length_cuts_padding():
    tokenized, tok = fake_tokenized(), PadOnlyTokenizer()
    grouped = padding_fraction(ftdata.make_loader(tokenized, tok, 8, shuffle=True, seed=0, group_by_length=True))
    random = padding_fraction(ftdata.make_loader(tokenized, tok, 8, shuffle=True, seed=0))
    # lengths uniform on 3..60: random batches of 8 are ~40% padding, sorted mega-batches of ~100 rows a few %.
    assert random > 0.3 and grouped < 0.1, (random, grouped)


def test_group_by_length_default_off():
    tokenized, tok = fake_tokenized(40), PadOnlyTokenizer()
    plain = ftdata.make_loader(tokenized, tok, 8, shuffle=False)
    assert [r for b in epoch_rows(plain) for r in b] == list(range(40))  # default: unchanged behaviour


def test_group_by_length_without_shuffle_is_a_fixed_longest_first_order():
    tokenized, tok = fake_tokenized(), PadOnlyTokenizer()
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    loader = ftdata.make_loader(tokenized, tok, 8, shuffle=False, group_by_length=True)
    rows = [r for b in epoch_rows(loader) for r in b]
    assert sorted(rows) == list(range(len(lengths)))  # every row once
    assert rows == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # longest first, ties in row order
    assert epoch_rows(loader) == epoch_rows(loader)  # the same order every pass
    plain = ftdata.make_loader(tokenized, tok, 8, shuffle=False)
    assert padding_fraction(loader) < 0.05 < 0.3 < padding_fraction(plain)


def test_sorted_evaluation_gives_the_same_metrics():
    from ftcourse.train import evaluate

    class MeanEmbedding(torch.nn.Module):
        """Logits from the mean of the non-padding token embeddings: padding cannot leak in."""

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(500, 2, dtype=torch.float64)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float64)
            logits = (self.emb(input_ids) * mask).sum(1) / mask.sum(1)
            return type("Out", (), {"logits": logits})

    torch.manual_seed(0)
    model, tokenized, tok = MeanEmbedding(), fake_tokenized(), PadOnlyTokenizer()
    plain = evaluate(model, ftdata.make_loader(tokenized, tok, 16, shuffle=False), torch.device("cpu"))
    grouped = evaluate(model, ftdata.make_loader(tokenized, tok, 16, shuffle=False, group_by_length=True), torch.device("cpu"))
    assert grouped["n"] == plain["n"] == len(tokenized) and grouped["accuracy"] == plain["accuracy"]
    assert grouped["loss"] == pytest.approx(plain["loss"], rel=1e-12)


def test_sorted_evaluation_returns_predictions_in_row_order():
    from ftcourse.train import evaluate

    class FirstTokenParity(torch.nn.Module):
        """Predicts the parity of the first token id (= row + 1 in fake_tokenized): a row-specific answer."""

        def forward(self, input_ids, attention_mask):
            first = input_ids[:, 0]
            return type("Out", (), {"logits": torch.stack([(first % 2 == 1).double(), (first % 2 == 0).double()], -1)})

    tokenized, tok = fake_tokenized(), PadOnlyTokenizer()
    model = FirstTokenParity()
    plain = evaluate(model, ftdata.make_loader(tokenized, tok, 16, shuffle=False), torch.device("cpu"), return_predictions=True)
    grouped = evaluate(model, ftdata.make_loader(tokenized, tok, 16, shuffle=False, group_by_length=True),
                       torch.device("cpu"), return_predictions=True)
    rows = torch.arange(len(tokenized))
    expected = ((rows + 1) % 2 == 0).long().numpy()  # row r holds token r + 1 first
    assert (plain["predictions"] == expected).all() and (grouped["predictions"] == expected).all()
    assert (grouped["labels"] == (rows % 2).numpy()).all()
    # A shuffled loader has no fixed order to undo: a clear error, not silently misaligned predictions.
    with pytest.raises(ValueError, match="fixed order"):
        evaluate(model, ftdata.make_loader(tokenized, tok, 16, shuffle=True), torch.device("cpu"), return_predictions=True)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("group_by_length", [False, True])
def test_iterating_a_loader_leaves_the_global_rng_alone(shuffle, group_by_length):
    """A DataLoader without its own generator draws a seed from the global torch RNG on every pass,
    so each evaluation would shift the dropout masks of all later training steps."""
    loader = ftdata.make_loader(fake_tokenized(64), PadOnlyTokenizer(), 8, shuffle=shuffle, group_by_length=group_by_length)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for _ in range(2):
        list(loader)
    assert torch.equal(torch.rand(3), expected)


def test_evaluating_often_does_not_change_training_with_grouped_loaders():
    from tiny_models import tiny_model

    from ftcourse.train import set_seed, train

    tokenized, tok = fake_tokenized(96), PadOnlyTokenizer()

    def losses(evals_per_epoch):
        set_seed(0)
        model = tiny_model("bert", dropout=0.1) if False else tiny_model("bert")
        model.config.hidden_dropout_prob = 0.1
        train_loader = ftdata.make_loader(tokenized, tok, 8, shuffle=True, seed=0, group_by_length=True)
        eval_loader = ftdata.make_loader(tokenized.select(range(32)), tok, 16, shuffle=False, group_by_length=True)
        history = train(model, train_loader, torch.optim.AdamW(model.parameters(), lr=1e-3), epochs=2,
                        eval_loader=eval_loader, evals_per_epoch=evals_per_epoch, progress=False)
        return [row["loss"] for row in history.steps]

    assert losses(1) == losses(12)
