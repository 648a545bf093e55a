"""What each notebook ran matches its declaration: CI's check of the runs the notebooks' footers recorded.

``scripts/test.sh`` runs the notebooks under nbval with ``FTCOURSE_RUN_RECORD=FILE`` (each footer appends the
notebook's runs there: ``ftcourse.course.notebook.notebook_footer``), then this file with the same variable. Without
it (the unit-test pass, a learner's machine) there is nothing to check and the test is skipped. A learner's
notebook itself never checks: a changed seed or lr there is not an error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftcourse.course.bank import BANK_PROFILE, load_records
from ftcourse.course.declarations import check_runs, declaration, expected_live_runs
from ftcourse.course.notebook import RUN_RECORD_ENV
from ftcourse.course.profiles import get_profile

RECORD = os.environ.get(RUN_RECORD_ENV)
NOTEBOOKS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _records() -> dict:
    lines = [json.loads(line) for line in Path(RECORD).read_text().splitlines() if line.strip()]
    return {line["notebook"]: line for line in lines}  # a notebook run twice: its last run counts


@pytest.mark.skipif(not RECORD, reason=f"{RUN_RECORD_ENV} is not set: no notebook run to check (scripts/test.sh sets it)")
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_notebook_ran_what_it_declares(notebook):
    records = _records()
    assert notebook in records, f"{notebook} recorded no runs: did its footer cell run?"
    record = records[notebook]
    declared = declaration(notebook, get_profile(record["profile"]), **record["options"])
    # a notebook that takes its runs from the seed bank runs its canaries live, and what the bank cannot hold
    live = expected_live_runs(declared, set(load_records()), BANK_PROFILE, record["profile"])
    differences = check_runs(live, record["runs"])
    assert not differences, (f"{notebook} ({record['profile']}) differs from its declaration in "
                             "ftcourse/course/declarations.py:\n" + "\n".join(differences))
