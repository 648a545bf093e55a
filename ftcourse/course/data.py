"""SST-2 for the course: loading with validation, the three splits, tokenisation, dynamic padding.

Course harness (not a technique module).

Splits (``load_sst2()``):

* ``train``: the 67,349 GLUE SST-2 training rows (phrases and full sentences);
* ``validation``: all 872 GLUE SST-2 dev sentences, for every choice (learning rates,
  checkpoints, when to stop);
* ``test``: the 1,821 labelled SST-2 test sentences (Socher et al. 2013; GLUE hides these
  labels), for the final report only. Its binomial standard error at 85% accuracy is 0.008, a
  quarter of what the 436-sentence half of the dev set gave.

Source, in order: the ``data_dir`` argument, else ``FTCOURSE_DATA_DIR``: a folder holding
``sst2/train.jsonl``, ``sst2/validation.jsonl`` and ``sst2/test.jsonl`` (one
``{"sentence": str, "label": 0|1}`` a line; ``python -m ftcourse get-data DIR`` writes them);
else the hub: train and validation from ``stanfordnlp/sst2``, test from the ``test`` split of
``SetFit/sst2`` (its text column is ``text``). The offline files are the reference; that the hub's
``SetFit/sst2`` test split holds the same 1,821 rows can only be checked online.

Overlap, decided: one test sentence, "what 's next ?", is also a GLUE training phrase. It stays in
both: the test split remains the published 1,821 sentences and train the published 67,349 rows.
It can move a test accuracy by at most 1/1,821 = 0.00055, and a 3,000-row training subset holds
it with probability 3,000/67,349 = 4.5%. (A test checks that it is the only overlap.)

Every file is validated on load: a line that is not JSON, a missing or non-string ``sentence``, a
label other than 0/1, or an empty file raises ``ValueError`` naming the file and the 1-based line.
Loads are cached per process, keyed by the resolved absolute folder and each file's size and
modification time, so a changed ``FTCOURSE_DATA_DIR`` or an edited file is never served stale.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path

import torch

HUB_DATASET = "stanfordnlp/sst2"
HUB_TEST_DATASET = "SetFit/sst2"
SPLITS = ("train", "validation", "test")
FILES = tuple(f"{split}.jsonl" for split in SPLITS)
EXPECTED_ROWS = {"train": 67_349, "validation": 872, "test": 1_821}
EVAL_SUBSET_SEED = 42


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


def data_folder(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The resolved ``sst2`` folder (``data_dir`` or ``FTCOURSE_DATA_DIR``), or None for the hub.

    Raises FileNotFoundError naming every missing file and the setting it came from.
    """
    root = data_dir if data_dir is not None else os.environ.get("FTCOURSE_DATA_DIR")
    if not root:
        return None
    folder = (Path(root).expanduser() / "sst2").resolve()
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        how = "the data_dir argument" if data_dir is not None else "FTCOURSE_DATA_DIR"
        raise FileNotFoundError(
            f"{how} is {str(root)!r}, but {folder} lacks {', '.join(missing)}. Point it at a folder "
            f"holding sst2/{', sst2/'.join(FILES)} (python -m ftcourse get-data DIR writes them), "
            "or unset it to use the hub."
        )
    return folder


def read_jsonl(path: str | os.PathLike) -> dict[str, list]:
    """``{"sentence": [...], "label": [...]}`` from a JSON Lines file, every line validated.

    Raises ValueError naming the file and the 1-based line for a line that is not JSON (or not an
    object), a missing or non-string ``sentence``, a ``label`` other than 0 or 1, and for a file with
    no rows. Blank lines are skipped.
    """
    path = Path(path)
    sentences, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object like {{\"sentence\": str, \"label\": 0 or 1}}, "
                                 f"got {type(row).__name__}")
            sentence, label = row.get("sentence"), row.get("label")
            if not isinstance(sentence, str):
                raise ValueError(f"{where}: 'sentence' must be a string, got "
                                 f"{'nothing' if 'sentence' not in row else repr(sentence)}")
            if isinstance(label, bool) or label not in (0, 1):
                raise ValueError(f"{where}: 'label' must be 0 (negative) or 1 (positive), got {label!r}")
            sentences.append(sentence)
            labels.append(int(label))
    if not sentences:
        raise ValueError(f"{path}: the file has no rows (expected one {{\"sentence\": str, \"label\": 0|1}} a line)")
    return {"sentence": sentences, "label": labels}


def _file_key(folder: Path) -> tuple:
    stats = [(folder / f).stat() for f in FILES]
    return (str(folder), tuple((f, s.st_size, s.st_mtime_ns) for f, s in zip(FILES, stats)))


def _check_hub_rows(split: str, sentences, labels) -> None:
    for i, (sentence, label) in enumerate(zip(sentences, labels)):
        if not isinstance(sentence, str) or label not in (0, 1):
            raise ValueError(f"hub dataset, split {split!r}, row {i}: expected a string sentence and a 0/1 label, "
                             f"got {sentence!r} and {label!r}")


LOAD_FIX = (f"Fix: set FTCOURSE_DATA_DIR (or pass data_dir=...) to a folder holding sst2/{', sst2/'.join(FILES)}, "
            "or connect to the internet.")
# get-data is how that folder is made, so pointing it at FTCOURSE_DATA_DIR would go in a circle
GET_DATA_FIX = ("get-data downloads from the hub: run `python -m ftcourse get-data DIR` on a machine with internet "
                "access and copy DIR/sst2/ (three .jsonl files, 5.6 MB) here, or copy that machine's Hugging Face "
                "cache (~/.cache/huggingface) here.")


def hub_offline() -> str | None:
    """The setting that forbids the hub (``"HF_HUB_OFFLINE=1"``; also ``HF_DATASETS_OFFLINE``, and the values
    true, yes and on, as huggingface_hub reads them), or None when the hub may be used."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        value = os.environ.get(name, "").strip()
        if value.lower() in ("1", "true", "yes", "on"):
            return f"{name}={value}"
    return None


def _load_hub(fix: str = LOAD_FIX):
    import datasets

    try:
        raw = datasets.load_dataset(HUB_DATASET)
        test = datasets.load_dataset(HUB_TEST_DATASET, split="test")
    except Exception as err:  # offline, no cache: say exactly what to do
        raise RuntimeError(
            f"SST-2 could not be loaded: no data folder was given and the hub datasets {HUB_DATASET!r} / "
            f"{HUB_TEST_DATASET!r} are not reachable ({type(err).__name__}: {err}). {fix}"
        ) from err
    columns = {
        "train": (raw["train"]["sentence"], raw["train"]["label"]),
        "validation": (raw["validation"]["sentence"], raw["validation"]["label"]),
        "test": (test["text"], test["label"]),
    }
    out = {}
    for split, (sentences, labels) in columns.items():
        sentences, labels = list(sentences), [int(v) for v in labels]
        _check_hub_rows(split, sentences, labels)
        out[split] = {"sentence": sentences, "label": labels}
    return out


@functools.lru_cache(maxsize=4)
def _load_cached(key):
    import datasets

    if key == ("hub",):
        columns = _load_hub()
    else:
        folder = Path(key[0])
        columns = {split: read_jsonl(folder / f"{split}.jsonl") for split in SPLITS}
    features = datasets.Features(sentence=datasets.Value("string"), label=datasets.Value("int64"))
    with _quiet_datasets():
        return datasets.DatasetDict({split: datasets.Dataset.from_dict(columns[split], features=features)
                                     for split in SPLITS})


def load_sst2(data_dir: str | os.PathLike | None = None):
    """SST-2 as a ``DatasetDict`` with ``train``, ``validation`` and ``test`` (module docstring)."""
    folder = data_folder(data_dir)
    return _load_cached(("hub",) if folder is None else _file_key(folder))


def write_jsonl(rows: dict[str, list], path: str | os.PathLike) -> int:
    """Write ``{"sentence": [...], "label": [...]}`` as JSON Lines (the format :func:`read_jsonl`
    reads); return the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for sentence, label in zip(rows["sentence"], rows["label"], strict=True):
            f.write(json.dumps({"sentence": sentence, "label": int(label)}, ensure_ascii=False) + "\n")
    return len(rows["sentence"])


def get_data(directory: str | os.PathLike) -> dict[str, int]:
    """Download SST-2 from the hub and write ``DIRECTORY/sst2/{train,validation,test}.jsonl`` for
    offline use (``FTCOURSE_DATA_DIR=DIRECTORY``); return the rows written per split. Every row is
    validated as it would be on load. Offline (``HF_HUB_OFFLINE=1``) it still reads the local hub cache, and
    when that lacks the datasets its RuntimeError says how to get the files from another machine."""
    folder = Path(directory).expanduser().resolve() / "sst2"
    columns = _load_hub(GET_DATA_FIX)
    written = {split: write_jsonl(columns[split], folder / f"{split}.jsonl") for split in SPLITS}
    for split in SPLITS:
        read_jsonl(folder / f"{split}.jsonl")  # the files read back as the course reads them
    return written


def cache_clear() -> None:
    """Forget every cached load and tokenisation of this process."""
    _load_cached.cache_clear()
    _tokenized_cached.cache_clear()
    cached_tokenizer.cache_clear()


def train_subset(train, size: int, seed: int):
    """``size`` training rows drawn reproducibly (same rows for the same size and seed)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= len(train):
        raise ValueError(f"size must be an int in [1, {len(train)}], got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        # datasets' shuffle(seed=None) draws a fresh seed: the "reproducible" subset would change every call
        raise ValueError(f"seed must be an int >= 0 (the same seed draws the same rows), got {seed!r}")
    return train.shuffle(seed=seed).select(range(size))


def stratified_subset(dataset, size: int | None, seed: int = EVAL_SUBSET_SEED):
    """A fixed, label-stratified subset of ``size`` rows (None or ``len(dataset)``: all of it).

    Each label keeps its share (rounded, the remainder to the first labels); the chosen rows keep
    their original order, so predictions line up with the subset's rows. Used by the ``ci`` profile
    to evaluate on part of validation and test within its time budget.
    """
    if size is None or size == len(dataset):
        return dataset
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= len(dataset):
        raise ValueError(f"size must be None (all rows) or an int in [1, {len(dataset)}], got {size!r}")
    import numpy as np

    labels = np.asarray(dataset["label"])
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    quotas = np.floor(counts * size / len(labels)).astype(int)
    quotas[: size - quotas.sum()] += 1
    chosen = [rng.choice(np.flatnonzero(labels == v), q, replace=False) for v, q in zip(values, quotas)]
    return dataset.select(sorted(int(i) for i in np.concatenate(chosen)))


def tokenize(dataset, tokenizer, max_length: int):
    """Token ids without padding (``Dataset.map(batched=True)``); the collator pads each batch.

    ``max_length`` must leave room for a token besides [CLS] and [SEP]: a smaller one would truncate every
    sentence to nothing (or fail inside the tokenizer with a message about overflowing tokens)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length must be an int >= 3 (tokens, with [CLS] and [SEP]), got {max_length!r}")
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
    (evaluation): one fixed order, longest first (ties in row order); a mean loss or an accuracy
    does not depend on the order, and ``ftcourse.train.evaluate(..., return_predictions=True)``
    puts predictions back in row order.
    """
    from transformers import DataCollatorWithPadding

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if len(tokenized) == 0:
        raise ValueError("make_loader: the dataset is empty")
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
        # The loader's own generator is a second one: the loader draws a worker seed from it at the
        # start of every pass, which must not move the sampler's permutation off transformers' order.
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                                           generator=torch.Generator().manual_seed(seed))
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
    from .pretrained import load_tokenizer

    return load_tokenizer(model_id)


@functools.lru_cache(maxsize=8)
def _tokenized_cached(load_key, model_id, max_length, train_size, data_seed, val_size, test_size):
    import datasets

    sst2 = _load_cached(load_key)
    tokenizer = cached_tokenizer(model_id)
    subset = train_subset(sst2["train"], train_size, data_seed)
    return datasets.DatasetDict(
        train=tokenize(subset, tokenizer, max_length),
        validation=tokenize(stratified_subset(sst2["validation"], val_size), tokenizer, max_length),
        test=tokenize(stratified_subset(sst2["test"], test_size), tokenizer, max_length),
    )


def tokenized_splits(model_id: str, max_length: int, train_size: int, data_seed: int, data_dir=None, *,
                     val_size: int | None = None, test_size: int | None = None):
    """Tokenised ``train`` (``train_size`` rows drawn with ``data_seed``), ``validation`` and ``test``
    (all rows, or fixed stratified subsets of ``val_size`` / ``test_size``); cached per process."""
    folder = data_folder(data_dir)
    load_key = ("hub",) if folder is None else _file_key(folder)
    return _tokenized_cached(load_key, model_id, max_length, train_size, data_seed, val_size, test_size)


def profile_splits(profile, train_size: int | None = None, data_dir=None):
    """``tokenized_splits`` with the sizes of ``profile`` (its ``train_size`` unless given, and its
    ``val_size`` / ``test_size``: all of validation and test in ``cpu`` and ``gpu``)."""
    return tokenized_splits(profile.model_id, profile.max_length, train_size or profile.train_size,
                            profile.data_seed, data_dir, val_size=profile.val_size, test_size=profile.test_size)
