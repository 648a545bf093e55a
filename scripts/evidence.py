"""The claims ledger (docs/claims.md), its forest plot (docs/claims_forest.png) and README's time table, from the
committed notebooks' outputs.

Each notebook shows its claims table (``ftcourse.course.reports.save_claims``) as a markdown output; this
script collects those outputs, in notebook order, into docs/claims.md between ``<!-- evidence:begin -->``
and ``<!-- evidence:end -->``, and draws every quantitative claim into docs/claims_forest.png (README shows
it). Each notebook's timing footer (its last cell) gives the elapsed time, profile, runs and machine of its
committed execution: they go into README.md between ``<!-- times:begin -->`` and ``<!-- times:end -->``.

A claims table of another shape (a Markdown table with ``claim`` and ``verdict`` columns whose header is not
``HEADER``) is never skipped silently: both modes stop and name it, unless its notebook is in
``AWAITING_REBUILD`` (executed before the current verdict rules, listed under the ledger), and a notebook in
that list whose table has the current shape stops them too, so the list cannot go stale.

    python scripts/evidence.py          # rewrite the ledger, the forest plot and README's time table
    python scripts/evidence.py --check  # exit 1 if they and the notebooks disagree (a test runs this)
    python scripts/evidence.py --ci-times TIMES.json  # first record a ci run's nbval times (conftest.py's
                                        # FTCOURSE_NOTEBOOK_TIMES file) in benchmarks/ci_times.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

from ftcourse.course.notebook import read_footer as footer
from ftcourse.course.declarations import budget_minutes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
CLAIMS_DOC = ROOT / "docs" / "claims.md"
HEADER = "| claim | source | scope | effect (interval) | test | verdict | notebook |"
FOREST = ROOT / "docs" / "claims_forest.png"
BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"
TIMES_BEGIN, TIMES_END = "<!-- times:begin -->", "<!-- times:end -->"
# Executed before the verdict rules of ftcourse.stats: their committed outputs show a claims table of the older shape
# (claim | source | effect (95% CI) | verdict | notebook). They enter the ledger when they are re-executed; remove
# each one here then (the check says so).
AWAITING_REBUILD = ()


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _claims_like(header: str) -> bool:
    """A Markdown table header with a claim and a verdict column: a claims table, whatever its other columns."""
    cells = [c.strip().lower() for c in header.strip().strip("|").split("|")] if header.startswith("|") else []
    return "claim" in cells and "verdict" in cells


def notebook_claims(path: Path) -> tuple[list[str], list[str]]:
    """The rows of the last claims table a notebook shows (none if it shows none), and the headers of the claims-like
    tables it shows in another shape."""
    rows, other = [], []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if text.startswith(HEADER):
                rows = [line for line in text.splitlines()[2:] if line.startswith("|")]
            elif text and _claims_like(text.splitlines()[0]):
                other.append(text.splitlines()[0])
    return rows, other


def shape_problems() -> list[str]:
    """Notebooks whose claims tables the ledger would skip for their shape (and stale AWAITING_REBUILD entries)."""
    problems = []
    for path in notebooks():
        rows, other = notebook_claims(path)
        if other and path.stem not in AWAITING_REBUILD:
            problems.append(f"{path.name}: shows a claims table whose header is {other[-1]!r}, not {HEADER!r}, so the "
                            "ledger would skip it: render it with ftcourse.course.reports.save_claims and re-execute")
        elif path.stem in AWAITING_REBUILD and (rows or not other):
            problems.append(f"{path.name}: is in AWAITING_REBUILD (scripts/evidence.py) but shows "
                            + ("a claims table of the current shape" if rows else "no claims table of the old shape")
                            + ": remove it from the list")
    return problems


def notebook_forest_claims(path: Path) -> list[dict]:
    """The numbers of the last claims table a notebook shows (its ``CLAIMS_MIME`` output), for the forest plot."""
    from ftcourse.course.reports import CLAIMS_MIME

    claims = []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get(CLAIMS_MIME)
            if data:
                claims = list(data["claims"])
    return claims


def forest_png() -> bytes | None:
    """The course-wide forest plot of every quantitative claim in the notebooks' committed outputs (PNG bytes), or
    None when no notebook shows one yet. Drawn deterministically (no timestamps in the file), so --check can compare."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftcourse.course.reports import forest_plot

    claims = [c for path in notebooks() for c in notebook_forest_claims(path)]
    if not claims:
        return None
    ax = forest_plot(claims)
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(ax.figure)
    return buffer.getvalue()


def section() -> str:
    lines, pending, missing = [HEADER, "|---|---|---|---|---|---|---|"], [], []
    for path in notebooks():
        rows, _ = notebook_claims(path)
        lines += rows
        if not rows:
            (pending if path.stem in AWAITING_REBUILD else missing).append(path.name)
    note = ""
    if pending:
        note += (f"\n\nNot yet in this table (executed before these verdict rules: their committed claims tables are "
                 f"of the older shape, and enter this table when the notebook is re-executed): {', '.join(pending)}.")
    if missing:
        note += f"\n\nNo claims table in their committed outputs: {', '.join(missing)}."
    return "\n".join(lines) + note


def times_section() -> str:
    """Per notebook: the committed (cpu) run's footer, the ci profile's nbval time (benchmarks/ci_times.json, written
    from a ci run) and the gpu profile's estimate on a T4 (the declarations at the T4 throughput
    ftcourse.course.declarations assumes: not measured; a notebook on the seed bank: its live runs, the canaries)."""
    from ftcourse.course import declarations as declared
    from ftcourse.course.profiles import PROFILES

    ci = json.loads((ROOT / "benchmarks" / "ci_times.json").read_text())
    lines = ["| notebook | committed run: profile | elapsed (min) | budget (min) | fine-tuning runs | ci: nbval (min) | "
             "gpu on a T4: estimated (min) |", "|---|---|---|---|---|---|---|"]
    machines, seconds, runs, profiles, ci_total, gpu_total = set(), 0, 0, set(), 0.0, 0.0
    for path in notebooks():
        gpu = PROFILES["gpu"]
        options = {"fast": True} if path.stem.startswith("04") else {}  # a T4 trains fp16 at speed
        d = declared.declaration(path.stem, gpu, **options)
        if d.banked:  # the gpu profile analyses the cpu bank: it runs its canaries (and any custom arm) live
            d = declared.expected_live_runs(d, set(), "cpu", "gpu")
        gpu_s = declared.seconds(d, declared.T4_TRAIN_PER_S, declared.T4_EVAL_PER_S, declared.T4_RUN_OVERHEAD_S)
        ci_s = ci["seconds"].get(path.stem)
        ci_total, gpu_total = ci_total + (ci_s or 0), gpu_total + gpu_s
        tail = f"{ci_s / 60:.1f} | {gpu_s / 60:.0f} |" if ci_s is not None else f"- | {gpu_s / 60:.0f} |"
        f = footer(path)
        if not f:
            lines.append(f"| {path.stem} | not executed | - | - | - | {tail}")
            continue
        machines.add(f["machine"])
        seconds, runs = seconds + f["seconds"], runs + f["runs"]
        profiles.add(f["profile"])
        lines.append(f"| {path.stem} | {f['profile']} | {f['seconds'] / 60:.1f} | {budget_minutes(path.stem, f['profile']):g} | "
                     f"{f['runs']} | {tail}")
    hours, minutes = divmod(round(seconds / 60), 60)
    lines.append(f"| all notebooks | {', '.join(sorted(profiles))} | {seconds / 60:.1f} ({hours} h {minutes:02d} min) | "
                 f"- | {runs} | {ci_total / 60:.1f} | {gpu_total / 60:.0f} |")
    return ("\n".join(lines) + "\n\nCommitted runs and ci: " + "; ".join(sorted(machines))
            + f" (ci: {ci['measured_at']}, {ci['machine']}). The gpu column is an estimate, not a measurement: the "
            f"declarations at the T4 throughput `ftcourse/course/declarations.py` assumes ({declared.T4_TRAIN_PER_S:.0f} "
            f"training examples/s, {declared.T4_EVAL_PER_S:.0f} evaluation sentences/s, {declared.T4_RUN_OVERHEAD_S:.0f} s a run; derived there "
            "from published T4 figures).")


def record_ci_times(times_json: Path, out: Path = ROOT / "benchmarks" / "ci_times.json") -> None:
    """``out`` (benchmarks/ci_times.json) from the times conftest.py wrote under nbval in the ci profile, dated, with
    the machine."""
    import time

    from ftcourse.course.notebook import machine_description

    # the notebooks only: a solutions notebook (solutions/NN_name_solutions.ipynb) has its own budget, not a row
    seconds = {Path(name).stem: value for name, value in json.loads(times_json.read_text()).items()
               if Path(name).parent.name == "notebooks"}
    if not seconds:
        raise SystemExit(f"--ci-times {times_json}: no notebook times in it")
    out.write_text(json.dumps({
        "what": "nbval run time of each notebook in the ci profile (sum of its cells, conftest.py)",
        "measured_at": time.strftime("%Y-%m-%d"), "machine": machine_description(), "seconds": seconds}, indent=1) + "\n")


def replace_between(text: str, begin: str, end: str, body: str, name: str = "README.md") -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{name} lacks {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--ci-times", metavar="TIMES_JSON", help="record these nbval times in benchmarks/ci_times.json")
    args = parser.parse_args(argv)
    if args.ci_times:
        record_ci_times(Path(args.ci_times))
    problems = shape_problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    readme, ledger = README.read_text(), CLAIMS_DOC.read_text()
    wanted_readme = replace_between(readme, TIMES_BEGIN, TIMES_END, times_section())
    wanted_ledger = replace_between(ledger, BEGIN, END, section(), name=str(CLAIMS_DOC.relative_to(ROOT)))
    png = forest_png()
    forest_stale = (png is not None) and (not FOREST.is_file() or FOREST.read_bytes() != png)
    if wanted_readme == readme and wanted_ledger == ledger and not forest_stale:
        return 0
    if args.check:
        print("docs/claims.md's ledger, README.md's time table or docs/claims_forest.png differs from the notebooks' "
              "outputs: run python scripts/evidence.py", file=sys.stderr)
        return 1
    README.write_text(wanted_readme)
    CLAIMS_DOC.write_text(wanted_ledger)
    if png is not None:
        FOREST.parent.mkdir(parents=True, exist_ok=True)
        FOREST.write_bytes(png)
    print("updated docs/claims.md's ledger, README.md's time table and docs/claims_forest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
