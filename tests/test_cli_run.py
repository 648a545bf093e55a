"""``python -m ftcourse run``: executes notebooks headless, writes them, the per-notebook tables and the
figures, and collects everything into summary.md (a two-cell notebook, no model)."""
from __future__ import annotations

import base64
import os

import nbformat
import pytest

from ftcourse.course.cli import main, save_figures

# a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_save_figures_writes_every_png(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()}),
        nbformat.v4.new_output("stream", text="hi"),
    ]), nbformat.v4.new_code_cell("y", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "fig"}),
    ])])
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(nb, path)
    paths = save_figures(path, tmp_path / "figures")
    assert [p.name for p in paths] == ["07_demo_1.png", "07_demo_2.png"]
    assert all(p.read_bytes() == PNG for p in paths)


def test_run_writes_notebooks_tables_figures_and_summary(tmp_path):
    source = f'''
import base64, pandas as pd
from IPython.display import Image, display
from ftcourse.course.reports import save_summary
display(Image(data=base64.b64decode("{base64.b64encode(PNG).decode()}")))
save_summary("99_demo", pd.DataFrame({{"mean ± std": ["0.5000 ± 0.0100"]}}, index=["baseline"]))
'''
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), notebooks / "99_demo.ipynb")
    results = tmp_path / "results"
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--results-dir", str(results)]) == 0
    assert (results / "notebooks" / "99_demo.ipynb").is_file()
    summary = (results / "summary.md").read_text()
    assert "# ftcourse results (ci profile)" in summary and "| 99_demo.ipynb |" in summary
    assert "0.5000 ± 0.0100" in summary and "![](figures/99_demo_1.png)" in summary
    assert (results / "figures" / "99_demo_1.png").read_bytes() == PNG


def test_run_keeps_matplotlib_figures_even_with_a_non_interactive_backend(tmp_path, monkeypatch):
    # CI exports MPLBACKEND=Agg; a notebook executed under it would lose every plt.show() figure.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    source = "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), notebooks / "98_plot.ipynb")
    results = tmp_path / "results"
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--results-dir", str(results)]) == 0
    executed = nbformat.read(results / "notebooks" / "98_plot.ipynb", as_version=4)
    assert any("image/png" in out.get("data", {}) for out in executed.cells[0].outputs)
    assert (results / "figures" / "98_plot_1.png").is_file()
    assert os.environ["MPLBACKEND"] == "Agg"  # the caller's environment is restored


def test_info_reports_what_is_found_and_how_to_fix_what_is_not(tmp_path, monkeypatch, capsys):
    (tmp_path / "sst2").mkdir()
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        (tmp_path / "sst2" / name).write_text('{"sentence": "fine", "label": 1}\n')
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch " in out and "device: " in out and "profile: ci" in out and "found" in out

    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["info"]) == 1
    assert "MISSING sst2/train.jsonl, sst2/validation.jsonl, sst2/test.jsonl" in capsys.readouterr().out
    (tmp_path / "sst2" / "test.jsonl").unlink()
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path))
    assert main(["info"]) == 1
    assert "MISSING sst2/test.jsonl" in capsys.readouterr().out

    monkeypatch.delenv("FTCOURSE_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info"]) == 1
    assert "set FTCOURSE_DATA_DIR" in capsys.readouterr().out

    monkeypatch.setenv("FTCOURSE_PROFILE", "laptop")
    assert main(["info"]) == 1
    assert "'laptop' is not one of ci, cpu, gpu" in capsys.readouterr().out


def _demo_notebooks(tmp_path, sources: dict):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name, source in sources.items():
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in source]), notebooks / name)
    return notebooks


def test_a_failing_notebook_keeps_its_outputs_and_the_rest_still_run(tmp_path, capsys):
    notebooks = _demo_notebooks(tmp_path, {
        "97_fails.ipynb": ["print('before the error')", "raise RuntimeError('boom')", "print('never')"],
        "98_fine.ipynb": [
            "from ftcourse.course.reports import claim, save_claims\n"
            "from ftcourse.stats import failure_rates\n"
            "save_claims('98_fine', [claim('c', 's', effect='+0.01', verdict='better'),\n"
            "                        claim('d', 's', failure_rates([1, 1, 0], [0, 0, 0]))])",
        ],
    })
    results = tmp_path / "results"
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--results-dir", str(results)]) == 1
    failed = nbformat.read(results / "notebooks" / "97_fails.ipynb", as_version=4)
    assert "before the error" in failed.cells[0].outputs[0]["text"]
    assert failed.cells[1].outputs[0]["output_type"] == "error"
    assert (results / "notebooks" / "98_fine.ipynb").is_file()
    summary = (results / "summary.md").read_text()
    assert "| 97_fails.ipynb |" in summary and "FAILED: RuntimeError: boom" in summary and "| 98_fine.ipynb |" in summary
    claims = (results / "claims.md").read_text()
    assert "| c | s |  | +0.01 | — | better | 98_fine |" in claims
    assert "| d | s |  | 2/3 vs 0/3 failed" in claims and (results / "claims_forest.png").is_file()
    assert "97_fails" in capsys.readouterr().err


def test_bad_profile_and_notebook_names_list_the_valid_ones(tmp_path, capsys):
    notebooks = _demo_notebooks(tmp_path, {"01_demo.ipynb": ["1"]})
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", "bogus", "--notebook-dir", str(notebooks)])
    assert exc.value.code == 2 and "ci" in capsys.readouterr().err
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--notebooks", "99",
                 "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "'99'" in err and "valid: 01" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # --notebooks with no names is a mistake, not "all of them"
        main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--notebooks"])
    assert exc.value.code == 2 and "--notebooks" in capsys.readouterr().err


def test_an_unwritable_results_dir_is_one_line(tmp_path, capsys):
    notebooks = _demo_notebooks(tmp_path, {"01_demo.ipynb": ["1"]})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--results-dir", str(blocker / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftcourse run: cannot write to --results-dir") and "\n" not in err


def test_saved_notebooks_keep_the_last_state_of_progress_bars():
    from ftcourse.course.cli import _coalesce_streams, render_terminal_text

    assert render_terminal_text("a  10%\rb  50%\rc 100%\n") == "c 100%\n"
    assert render_terminal_text("outer 0%\n\rinner 5%\x1b[A\n\rinner 9%\x1b[A\r\x1b[32mouter 50%\x1b[0m") \
        .splitlines()[0] == "outer 50%"
    # what tqdm writes around bar.write(): clear the bar line, the message, redraw the bar
    outputs = [nbformat.v4.new_output("stream", name="stdout", text=t)
               for t in ("\rrun 0/2", "\rrun 1/2", "\r       \r", "seed 0: 0.81\n", "\rrun 1/2", "\rrun 2/2\n")]
    merged = _coalesce_streams(outputs)
    assert [o["text"] for o in merged] == ["seed 0: 0.81\nrun 2/2\n"]


def test_a_rerun_replaces_the_earlier_tables_of_its_notebooks(tmp_path):
    """Regression: "99_demo.claims.md" matches both stale-table patterns and was unlinked twice."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), notebooks / "99_demo.ipynb")
    results = tmp_path / "results"
    results.mkdir()
    for name in ("99_demo.claims.md", "99_demo.md", "98_other.md"):
        (results / name).write_text("stale")
    assert main(["run", "--profile", "ci", "--notebook-dir", str(notebooks), "--results-dir", str(results)]) == 0
    assert not (results / "99_demo.claims.md").exists() and not (results / "99_demo.md").exists()
    assert (results / "98_other.md").read_text() == "stale"
