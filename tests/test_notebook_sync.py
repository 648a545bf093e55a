"""The notebooks' shared cells, the version and the notebook helpers."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import types
from pathlib import Path

import nbformat
import pytest

import ftcourse
from ftcourse.course import notebook as ftnb

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_and_readme_are_in_sync_with_pyproject():
    done = subprocess.run([sys.executable, "scripts/sync_notebooks.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_version_and_one_repository_url():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["version"] == ftcourse.__version__
    url, tag = meta["urls"]["Repository"], f"v{meta['version']}"
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert f"git+{url}@{tag}" in nb.cells[1].source and "%pip install" in nb.cells[1].source, path.name
        assert f"blob/{tag}/notebooks/{path.name}" in nb.cells[0].source, path.name
        assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"]["gpuType"] == "T4"
        assert f"notebook_footer({path.stem!r}" in nb.cells[-1].source, path.name
        assert "subprocess" not in nb.cells[1].source


def test_restart_is_asked_for_only_when_a_loaded_package_changed(monkeypatch, capsys):
    from importlib import metadata

    monkeypatch.setitem(sys.modules, "fakepkg", types.SimpleNamespace(__version__="1.0"))
    monkeypatch.setattr(metadata, "version", lambda name: {"fakepkg": "2.0"}[name])
    assert ftnb.restart_if_upgraded(("fakepkg",)) is True
    assert "RESTART NEEDED: fakepkg 1.0 is loaded, 2.0 is installed" in capsys.readouterr().out
    monkeypatch.setattr(metadata, "version", lambda name: "1.0")
    assert ftnb.restart_if_upgraded(("fakepkg",)) is False
    assert ftnb.restart_if_upgraded(("not_imported_anywhere",)) is False


def test_footer_says_elapsed_time_profile_machine_and_versions(monkeypatch, capsys):
    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    ftnb.notebook_setup()
    assert ftnb.notebook_footer() is None  # printed once: a return value would show again as the cell's result
    text = capsys.readouterr().out
    assert "elapsed:" in text and "in the ci profile" in text and "machine: " in text and "torch " in text
    assert "min (" in text and "fine-tuning runs: none" in text
    import torch

    assert torch.backends.cpu.get_cpu_capability() in text  # bit-identity holds at one capability and thread count


def test_the_footer_records_the_runs_for_ci_and_never_checks_them_itself(tmp_path, monkeypatch, capsys):
    import json

    from ftcourse.course import runner

    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    ftnb.notebook_setup()
    # a learner's extra run: the footer shows it, and does not fail
    runner._RUNS_MADE.append({"label": "mine", "key": "r1-x", "recipe": {"seed": 9}, "custom": [], "train_examples": 64,
                              "epochs": 1, "evals_per_epoch": 1, "train_time_s": 1.0, "eval_time_s": 1.0, "total_s": 3.0})
    ftnb.notebook_footer("01_baseline")
    assert "fine-tuning runs: 1 (" in capsys.readouterr().out
    record = tmp_path / "runs.jsonl"
    monkeypatch.setenv(ftnb.RUN_RECORD_ENV, str(record))
    import numpy as np

    ftnb.notebook_footer("04_mixed_precision", fast=np.bool_(False))  # what 04's cell decided: a numpy bool
    line = json.loads(record.read_text())
    assert line["notebook"] == "04_mixed_precision" and line["options"] == {"fast": False}
    assert line["profile"] == "ci" and line["runs"][0]["recipe"] == {"seed": 9}
    ftnb.notebook_setup()
    assert runner.runs_made() == []  # every notebook starts afresh


def test_readme_evidence_section_matches_the_notebooks():
    done = subprocess.run([sys.executable, "scripts/evidence.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_claims_table_shows_as_markdown_for_the_evidence_script():
    from ftcourse.course.reports import claim, claims_table

    table = claims_table([claim("c", "s", effect="+0.01", test="t", verdict="better")], "01_demo")
    markdown = table._repr_mimebundle_()["text/markdown"]
    assert markdown.startswith("| claim | source | scope | effect (interval) | test | verdict | notebook |")
    assert "| c | s |  | +0.01 | t | better | 01_demo |" in markdown
    assert table.loc[1, "verdict"] == "better"


def test_evidence_records_the_nbval_times_by_notebook(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("evidence", ROOT / "scripts" / "evidence.py")
    evidence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evidence)
    # conftest.py's FTCOURSE_NOTEBOOK_TIMES file: nbval's item paths, seconds
    (tmp_path / "times.json").write_text(json.dumps({"notebooks/07_llrd.ipynb": 54.4, "notebooks/01_baseline.ipynb": 44.6}))
    evidence.record_ci_times(tmp_path / "times.json", tmp_path / "ci_times.json")
    recorded = json.loads((tmp_path / "ci_times.json").read_text())
    assert recorded["seconds"] == {"07_llrd": 54.4, "01_baseline": 44.6}
    assert recorded["machine"] and recorded["measured_at"][:2] == "20"
    # the committed file has the shape times_section() reads, one time per notebook
    committed = json.loads((ROOT / "benchmarks" / "ci_times.json").read_text())
    assert set(committed) == set(recorded)
    assert sorted(committed["seconds"]) == sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(SystemExit, match="no notebook times"):
        evidence.record_ci_times(tmp_path / "empty.json", tmp_path / "ci_times.json")


def _code_lines(cell) -> int:
    return sum(1 for line in cell.source.splitlines() if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_the_lesson_comes_first_and_the_harness_stays_small(path):
    # cells tagged "harness" (declarations, canaries, footers) are at most 15% of a notebook's code, none longer than
    # ~30 lines, and, in a notebook rebuilt lesson-first (a cell tagged "lesson"), none stands before the lesson
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    code = [c for c in cells if c.cell_type == "code"]
    harness = [c for c in code if "harness" in c.metadata.get("tags", [])]
    assert harness, f"{path.name}: the footer is not tagged harness (python scripts/sync_notebooks.py)"
    assert sum(map(_code_lines, harness)) <= 0.15 * sum(map(_code_lines, code)), path.name
    assert all(_code_lines(c) <= 30 for c in harness), path.name
    lesson = [i for i, c in enumerate(cells) if "lesson" in c.metadata.get("tags", [])]
    if lesson:
        first_harness = min(i for i, c in enumerate(cells) if "harness" in c.metadata.get("tags", []))
        assert first_harness > lesson[0], f"{path.name}: a harness cell stands before the lesson"
        assert any(cells[i].cell_type == "code" for i in lesson), f"{path.name}: the lesson has no code"


def test_every_rebuilt_notebook_has_a_solutions_notebook():
    import nbformat

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if any("lesson" in c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells):
            solutions = ROOT / "solutions" / f"{path.stem}_solutions.ipynb"
            assert solutions.is_file(), f"{path.name} is rebuilt lesson-first but has no {solutions.relative_to(ROOT)}"


def _install_block() -> str:
    """The generated install block of notebook 01, as IPython would run it (``%pip`` as a call)."""
    from IPython.core.inputtransformer2 import TransformerManager

    source = nbformat.read(ROOT / "notebooks" / "01_baseline.ipynb", as_version=4).cells[1].source
    block = source[:source.index("# --- end of install ---")]
    return TransformerManager().transform_cell(block)


class _FakeIPython:
    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


def _colab(monkeypatch, fetch):
    """Run the install block as on Colab; ``fetch(url)`` plays GitHub. Returns the %pip calls made."""
    import urllib.request

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: fetch(url))
    ipython = _FakeIPython()
    exec(_install_block(), {"get_ipython": lambda: ipython})
    return ipython.magics


def test_colab_installs_the_release_with_its_tested_versions_and_colabs_torch(monkeypatch, tmp_path):
    import io

    monkeypatch.chdir(tmp_path)  # the block writes its constraints file into the working directory

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tag, repo = f"v{meta['version']}", meta["urls"]["Repository"]
    fetched = []

    def github(url):
        fetched.append(url)
        return io.BytesIO((ROOT / "constraints.txt").read_bytes())

    magics = _colab(monkeypatch, github)
    assert fetched == [f"https://raw.githubusercontent.com/ftcourse/ftcourse/{tag}/constraints.txt"]
    assert magics == [("pip", f'install -q -c ftcourse-constraints.txt "ftcourse[offline] @ git+{repo}@{tag}"')]
    pins = (tmp_path / "ftcourse-constraints.txt").read_text()
    assert "transformers==" in pins and "datasets==" in pins  # the tested versions ...
    assert "torch==" not in pins  # ... except torch: Colab's is built for its GPU


def test_colab_without_the_tag_says_so_in_one_line_instead_of_pips_traceback(monkeypatch, capsys):
    import importlib.util
    import urllib.error

    def missing_tag(url):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ftcourse" else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as stop:
        _colab(monkeypatch, missing_tag)
    message = str(stop.value)
    assert "\n" not in message and "cannot be fetched from https://github.com/ftcourse/ftcourse (HTTP Error 404" in message
    assert "git+https://github.com/ftcourse/ftcourse@main" in message and "wheel" in message
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)  # installed before: say so, then go on
    assert _colab(monkeypatch, missing_tag) == []
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and out.endswith("; using the ftcourse already installed")


def test_release_check_fails_while_the_notebooks_point_at_a_missing_tag(tmp_path):
    import shutil

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    shutil.copy(ROOT / "scripts" / "release_check.sh", repo / "scripts" / "release_check.sh")
    (repo / "pyproject.toml").write_text('[project]\nname = "ftcourse"\nversion = "9.8.7"\n')
    (repo / "notebooks" / "01_demo.ipynb").write_text('{"source": "%pip install \\"ftcourse @ git+https://x/y@v9.8.7\\""}\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True)

    def check():
        return subprocess.run(["bash", str(repo / "scripts" / "release_check.sh")], capture_output=True, text=True)

    done = check()
    assert done.returncode == 1 and "1 notebooks point at v9.8.7" in done.stderr and "git has no tag v9.8.7" in done.stderr
    subprocess.run([*git, "tag", "v9.8.7"], check=True)
    done = check()
    assert done.returncode == 0 and "v9.8.7 exists" in done.stdout
    (repo / "pyproject.toml").write_text('[project]\nversion = "9.9.0"\n')  # bumped, notebooks not synced
    done = check()
    assert done.returncode == 1 and "no notebook points at v9.9.0" in done.stderr


def _evidence_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("evidence_under_test", ROOT / "scripts" / "evidence.py")
    evidence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evidence)
    return evidence


def _notebook_with_table(path, header: str) -> None:
    rule = "|" + "---|" * (header.count("|") - 1)
    table = f"{header}\n{rule}\n| c | s | e | better | {path.stem} |\n"
    output = nbformat.v4.new_output("execute_result", data={"text/markdown": table, "text/plain": "table"}, execution_count=1)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("table", outputs=[output])]), path)


def test_evidence_check_fails_when_a_claims_table_would_be_skipped_for_its_shape(tmp_path, monkeypatch, capsys):
    import shutil

    evidence = _evidence_module()
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    monkeypatch.setattr(evidence, "NOTEBOOKS", notebooks)
    assert evidence.shape_problems() == []  # the committed notebooks: nothing skipped unannounced
    _notebook_with_table(notebooks / "12_new.ipynb", "| claim | source | effect (95% CI) | verdict | notebook |")
    assert evidence.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "12_new.ipynb: shows a claims table whose header is '| claim | source | effect (95% CI) | verdict" in err
    assert "the ledger would skip it" in err
    assert evidence.main([]) == 1  # nor does the writing mode skip it
    assert "12_new.ipynb" in capsys.readouterr().err


def test_evidence_awaiting_rebuild_cannot_go_stale(tmp_path, monkeypatch):
    evidence = _evidence_module()
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setattr(evidence, "NOTEBOOKS", notebooks)
    monkeypatch.setattr(evidence, "AWAITING_REBUILD", ("02_rebuilt",))
    _notebook_with_table(notebooks / "02_rebuilt.ipynb", evidence.HEADER)  # re-executed: now the current shape
    assert evidence.shape_problems() == [
        "02_rebuilt.ipynb: is in AWAITING_REBUILD (scripts/evidence.py) but shows a claims table of the current shape: "
        "remove it from the list"]
    section = evidence.section()
    assert "| c | s | e | better | 02_rebuilt |" in section
