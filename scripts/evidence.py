"""README's "What the evidence says" and its time table, from the committed notebooks' outputs.

Each notebook shows its claims table (``ftcourse.experiment.save_claims``) as a markdown output; this
script collects those outputs, in notebook order, into README.md between ``<!-- evidence:begin -->``
and ``<!-- evidence:end -->``. Each notebook's timing footer (its last cell) gives the elapsed time,
profile, runs and machine of its committed execution: they go between ``<!-- times:begin -->`` and
``<!-- times:end -->``.

    python scripts/evidence.py          # rewrite README's section from the notebooks' outputs
    python scripts/evidence.py --check  # exit 1 if README and the notebooks disagree (a test runs this)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
HEADER = "| claim | source | effect (95% CI) | verdict | notebook |"
BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"
TIMES_BEGIN, TIMES_END = "<!-- times:begin -->", "<!-- times:end -->"
BUDGET_MIN = {"05": 15, "11": 15}  # every other notebook: 10 minutes in the cpu profile


def notebook_claims(path: Path) -> list[str]:
    """The rows of the last claims table a notebook shows (none if it shows none)."""
    rows = []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown", "")
            if text.startswith(HEADER):
                rows = [line for line in text.splitlines()[2:] if line.startswith("|")]
    return rows


def section() -> str:
    lines, missing = [HEADER, "|---|---|---|---|---|"], []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        rows = notebook_claims(path)
        lines += rows
        if not rows:
            missing.append(path.name)
    note = (f"\n\nNot yet in this table (no claims table in their committed outputs): {', '.join(missing)}."
            if missing else "")
    return "\n".join(lines) + note


def footer(path: Path) -> dict:
    """The timing footer of a notebook's committed outputs: elapsed seconds, profile, runs, machine."""
    cells = nbformat.read(path, as_version=4).cells
    text = "".join(o.get("text", "") for o in cells[-1].get("outputs", []) if o.get("output_type") == "stream")
    found = re.search(r"elapsed: ([0-9.]+) min \(([0-9]+) s\) in the (\w+) profile", text)
    if not found:
        return {}
    runs = re.search(r"fine-tuning runs: ([0-9]+)", text)
    machine = re.search(r"machine: (.*)", text)
    return {"minutes": found.group(1), "seconds": int(found.group(2)), "profile": found.group(3), "runs": int(runs.group(1)) if runs else 0,
            "machine": machine.group(1).strip() if machine else "?"}


def times_section() -> str:
    lines = ["| notebook | committed run: profile | elapsed (min) | budget (min) | fine-tuning runs |", "|---|---|---|---|---|"]
    machines = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        f = footer(path)
        if not f:
            lines.append(f"| {path.stem} | not executed | - | - | - |")
            continue
        machines.add(f["machine"])
        lines.append(f"| {path.stem} | {f['profile']} | {f['minutes']} | {BUDGET_MIN.get(path.name[:2], 10)} | "
                     f"{f['runs']} |")
    return "\n".join(lines) + "\n\nMachine: " + "; ".join(sorted(machines))


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"README.md lacks {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    wanted = replace_between(text, BEGIN, END, section())
    wanted = replace_between(wanted, TIMES_BEGIN, TIMES_END, times_section())
    if wanted == text:
        return 0
    if args.check:
        print("README.md's evidence section or time table differs from the notebooks' outputs: run "
              "python scripts/evidence.py",
              file=sys.stderr)
        return 1
    readme.write_text(wanted)
    print("updated README.md's evidence section and time table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
