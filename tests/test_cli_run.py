"""``python -m ftcourse run``: executes notebooks headless, writes them, the per-notebook tables and the
figures, and collects everything into summary.md (a two-cell notebook, no model)."""
from __future__ import annotations

import base64
import os

import nbformat

from ftcourse.cli import main, save_figures

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
from ftcourse.experiment import save_summary
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
    for name in ("train.jsonl", "validation.jsonl"):
        (tmp_path / "sst2" / name).write_text('{"sentence": "fine", "label": 1}\n')
    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FTCOURSE_PROFILE", "ci")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch " in out and "device: " in out and "profile: ci" in out and "found" in out

    monkeypatch.setenv("FTCOURSE_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["info"]) == 1
    assert "MISSING sst2/train.jsonl" in capsys.readouterr().out

    monkeypatch.delenv("FTCOURSE_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["info"]) == 1
    assert "set FTCOURSE_DATA_DIR" in capsys.readouterr().out

    monkeypatch.setenv("FTCOURSE_PROFILE", "laptop")
    assert main(["info"]) == 1
    assert "'laptop' is not one of ci, cpu, gpu" in capsys.readouterr().out
