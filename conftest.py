"""pytest hook for the notebooks under nbval: report how long each notebook took.

At the repository root (not in notebooks/), so the notebook folder holds only notebooks.

Every notebook has a budget in the ci profile (2 minutes on 2 CPU cores; all of them together 20).
nbval reports cells, not notebooks, so this sums the cells' run times per notebook and prints one
line each at the end of the run, marking the ones over budget. It reports; it does not fail the
run, because a shared CI machine's speed varies from run to run.
"""
from __future__ import annotations

from collections import defaultdict

NOTEBOOK_BUDGET_S = 120
TOTAL_BUDGET_S = 20 * 60

_seconds = defaultdict(float)


def pytest_runtest_logreport(report):
    if ".ipynb" in report.nodeid:
        _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("notebook run times")
    for path, seconds in sorted(_seconds.items()):
        flag = f"  OVER the {NOTEBOOK_BUDGET_S} s budget" if seconds > NOTEBOOK_BUDGET_S else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {path}{flag}")
    total = sum(_seconds.values())
    flag = f"  OVER the {TOTAL_BUDGET_S} s budget" if total > TOTAL_BUDGET_S else ""
    terminalreporter.write_line(f"{total:7.1f} s  all notebooks{flag}")
