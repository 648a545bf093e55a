"""SST-2 (GLUE) for the course: loading, fixed splits, tokenisation, dynamic padding.

Splits. GLUE's SST-2 test labels are hidden, so the 872 labelled GLUE validation sentences are
split into two disjoint, label-stratified halves with a fixed seed: ``validation`` (model
selection, early stopping) and ``test`` (the final report only). ``train`` is the 67,349 GLUE
training rows (phrases and sentences).

Source, in order: the ``data_dir`` argument, else ``FTCOURSE_DATA_DIR``: a folder holding
``sst2/train.jsonl`` and ``sst2/validation.jsonl`` (one ``{"sentence": str, "label": 0|1}`` a
line); else the hub dataset ``stanfordnlp/sst2``. Both give the same rows, hence the same splits.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

HUB_DATASET = "stanfordnlp/sst2"
SPLIT_SEED = 42


@contextlib.contextmanager
def _quiet_datasets():
    """No datasets progress bars in notebook outputs (they are noise at these sizes)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _local_dir(data_dir: str | os.PathLike | None) -> Path | None:
    root = data_dir if data_dir is not None else os.environ.get("FTCOURSE_DATA_DIR")
    if not root:
        return None
    folder = Path(root).expanduser() / "sst2"
    missing = [f for f in ("train.jsonl", "validation.jsonl") if not (folder / f).is_file()]
    if missing:
        how = "the data_dir argument" if data_dir is not None else "FTCOURSE_DATA_DIR"
        raise FileNotFoundError(
            f"{how} is {str(root)!r}, but {folder} lacks {', '.join(missing)}. Point it at a folder "
            "holding sst2/train.jsonl and sst2/validation.jsonl, or unset it to use the hub."
        )
    return folder


def _load_raw(data_dir=None):
    import datasets

    folder = _local_dir(data_dir)
    if folder is not None:
        files = {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl")}
        raw = datasets.load_dataset("json", data_files=files)
    else:
        try:
            raw = datasets.load_dataset(HUB_DATASET)
        except Exception as err:  # offline, no cache: say exactly what to do
            raise RuntimeError(
                f"SST-2 could not be loaded: no data folder was given and the hub dataset {HUB_DATASET!r} "
                f"is not reachable ({type(err).__name__}: {err}). Fix: set FTCOURSE_DATA_DIR (or pass "
                "data_dir=...) to a folder holding sst2/train.jsonl and sst2/validation.jsonl, "
                "or connect to the internet."
            ) from err
    keep = ["sentence", "label"]
    return {split: raw[split].select_columns(keep) for split in ("train", "validation")}


@functools.lru_cache(maxsize=4)
def _load_sst2_cached(data_dir):
    import datasets

    # Label-stratified halves of GLUE validation, fixed seed: the same split from either source.
    # Stratifying needs a ClassLabel column: the local JSON gives plain ints, the hub a ClassLabel.
    labels = datasets.ClassLabel(names=["negative", "positive"])
    as_int = datasets.Value("int64")
    with _quiet_datasets():
        raw = _load_raw(data_dir)
        halves = raw["validation"].cast_column("label", labels).train_test_split(
            test_size=0.5, stratify_by_column="label", seed=SPLIT_SEED
        )
        return datasets.DatasetDict(
            train=raw["train"].cast_column("label", as_int),
            validation=halves["train"].cast_column("label", as_int),
            test=halves["test"].cast_column("label", as_int),
        )


def load_sst2(data_dir: str | os.PathLike | None = None):
    """SST-2 as a ``DatasetDict`` with ``train``, ``validation`` and ``test`` (see module docstring)."""
    key = str(data_dir) if data_dir is not None else os.environ.get("FTCOURSE_DATA_DIR") or None
    return _load_sst2_cached(key)


def train_subset(train, size: int, seed: int):
    """``size`` training rows drawn reproducibly (same rows for the same size and seed)."""
    if not 0 < size <= len(train):
        raise ValueError(f"size must be in [1, {len(train)}], got {size}")
    return train.shuffle(seed=seed).select(range(size))


def tokenize(dataset, tokenizer, max_length: int):
    """Token ids without padding (``Dataset.map(batched=True)``); the collator pads each batch."""
    def encode(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=max_length)

    with _quiet_datasets():
        tokenized = dataset.map(encode, batched=True, remove_columns=["sentence"])
    return tokenized.rename_column("label", "labels")


def token_length_stats(tokenized) -> dict:
    """Token counts (with special tokens) of a tokenised split: mean, percentiles, max."""
    lengths = torch.tensor([len(ids) for ids in tokenized["input_ids"]], dtype=torch.float64)
    q = torch.quantile(lengths, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return {"n": len(lengths), "mean": lengths.mean().item(), "median": q[0].item(),
            "p90": q[1].item(), "p99": q[2].item(), "max": int(lengths.max().item())}


def make_loader(tokenized, tokenizer, batch_size: int, shuffle: bool, seed: int = 0, group_by_length: bool = False):
    """A DataLoader that pads each batch to its own longest sentence (``DataCollatorWithPadding``).

    Dynamic padding: SST-2 sentences are ~25 tokens on average, so padding every batch to a fixed
    max_length would spend most of the compute on padding tokens.

    ``group_by_length``: batches of sentences of similar length, so that the padding within a batch
    shrinks further. With ``shuffle`` (training): transformers' ``LengthGroupedSampler`` (what
    ``Trainer`` uses for ``train_sampling_strategy="group_by_length"``): each epoch, a seeded random
    permutation is cut into mega-batches of ``min(50, n // (4 * batch_size))`` batches, each sorted
    by length (longest first), and the longest sentence of all goes in the first batch.
    Deterministic for a given ``seed``; a different order every epoch. Without ``shuffle``
    (evaluation): one fixed order, longest first (ties in row order). A mean loss or an accuracy
    does not depend on the order; anything that lines predictions up with rows does, so keep the
    default there.
    """
    from transformers import DataCollatorWithPadding

    # Every loader gets its own generator, shuffled or not: a DataLoader without one draws a seed
    # from the global torch RNG each time it is iterated, so each evaluation would shift the
    # dropout masks of all later training steps (evaluating more often would change training).
    generator = torch.Generator().manual_seed(seed)
    dataset = tokenized.with_format("torch")
    collate = DataCollatorWithPadding(tokenizer)
    if group_by_length:
        lengths = [len(ids) for ids in tokenized["input_ids"]]
        if shuffle:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
        else:
            sampler = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep row order
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate,
    )


@functools.lru_cache(maxsize=4)
def cached_tokenizer(model_id: str):
    """The tokenizer of ``model_id``, loaded once per process."""
    from .models import load_tokenizer

    return load_tokenizer(model_id)


@functools.lru_cache(maxsize=8)
def tokenized_splits(model_id: str, max_length: int, train_size: int, data_seed: int, data_dir=None):
    """Tokenised ``train`` (a subset of ``train_size`` rows), ``validation`` and ``test``; cached."""
    import datasets

    sst2 = load_sst2(data_dir)
    tokenizer = cached_tokenizer(model_id)
    subset = train_subset(sst2["train"], train_size, data_seed)
    return datasets.DatasetDict(
        train=tokenize(subset, tokenizer, max_length),
        validation=tokenize(sst2["validation"], tokenizer, max_length),
        test=tokenize(sst2["test"], tokenizer, max_length),
    )
