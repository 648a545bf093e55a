"""README's "What the evidence says": every notebook's claims table, from the committed notebooks.

Each notebook shows its claims table (``ftcourse.experiment.save_claims``) as a markdown output; this
script collects those outputs, in notebook order, into README.md between ``<!-- evidence:begin -->``
and ``<!-- evidence:end -->``.

    python scripts/evidence.py          # rewrite README's section from the notebooks' outputs
    python scripts/evidence.py --check  # exit 1 if README and the notebooks disagree (a test runs this)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
HEADER = "| claim | source | effect (95% CI) | verdict | notebook |"
BEGIN, END = "<!-- evidence:begin -->", "<!-- evidence:end -->"


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks {BEGIN} ... {END}", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    wanted = f"{head}{BEGIN}\n{section()}\n{END}{tail}"
    if wanted == text:
        return 0
    if args.check:
        print("README.md's evidence section differs from the notebooks' claims tables: run python scripts/evidence.py",
              file=sys.stderr)
        return 1
    readme.write_text(wanted)
    print("updated README.md's evidence section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
