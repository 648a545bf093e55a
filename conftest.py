"""pytest hook for the notebooks under nbval: report how long each notebook took.

At the repository root (not in notebooks/), so the notebook folder holds only notebooks.

Every notebook has a budget in the ci profile (``ftcourse.course.declarations.BUDGET_MIN``: 2 minutes on 2 CPU
cores; all of them together ``CI_TOTAL_BUDGET_MIN``). nbval reports cells, not notebooks, so this
sums the cells' run times per notebook and prints one line each at the end of the run, marking the
ones over budget. It reports; it does not fail the run, because a shared CI machine's speed varies
from run to run. With ``FTCOURSE_NOTEBOOK_TIMES=FILE`` it also writes the times to FILE (JSON), for
``python -m ftcourse estimate --compare ... --measured FILE``.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from ftcourse.course.declarations import CI_TOTAL_BUDGET_MIN, budget_minutes

TOTAL_BUDGET_S = CI_TOTAL_BUDGET_MIN * 60

_seconds = defaultdict(float)


def pytest_runtest_logreport(report):
    if ".ipynb" in report.nodeid:
        _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("notebook run times")
    for path, seconds in sorted(_seconds.items()):
        budget_s = budget_minutes(Path(path).stem, "ci") * 60
        flag = f"  OVER the {budget_s:.0f} s budget" if seconds > budget_s else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {path}{flag}")
    total = sum(_seconds.values())
    flag = f"  OVER the {TOTAL_BUDGET_S} s budget" if total > TOTAL_BUDGET_S else ""
    terminalreporter.write_line(f"{total:7.1f} s  all notebooks{flag}")
    times_file = os.environ.get("FTCOURSE_NOTEBOOK_TIMES")
    if times_file:
        Path(times_file).write_text(json.dumps({path: round(seconds, 1) for path, seconds in sorted(_seconds.items())},
                                               indent=1) + "\n")
        terminalreporter.write_line(f"notebook times written to {times_file}")
