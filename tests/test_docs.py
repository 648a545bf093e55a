"""The newcomer's page and the docs: README stays short, every relative link resolves, the workshop's estimates are
the declarations' own."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # a '# comment' in code is no heading
    return {slug(line) for line in text.splitlines() if line.startswith("#")}


def test_readme_is_a_short_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes: move the detail to docs/ (it must stay <= 15 KB)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_file():
            broken.append(f"{target} (no file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved})")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading #{fragment} in {resolved.name})")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[gone](missing.md) [here](#title) [nowhere](#no-such)\n")
    targets = LINK.findall(page.read_text())
    assert targets == ["missing.md", "#title", "#no-such"]
    assert not (tmp_path / "missing.md").is_file() and "title" in anchors(page) and "no-such" not in anchors(page)
    assert slug("## Pre-flight: what `run` and `estimate` check first") == "pre-flight-what-run-and-estimate-check-first"


def test_readme_has_what_a_newcomer_needs():
    readme = (ROOT / "README.md").read_text()
    for needed in ("## Prerequisites", "## Install", "## Open notebook 01", "<!-- notebooks:begin -->",
                   "<!-- times:begin -->", "](docs/claims_forest.png)", "](docs/claims.md)", "## Where results go",
                   "## Colab", "python -m ftcourse copy", "bash scripts/test.sh"):
        assert needed in readme, needed
    install = readme.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert len([line for line in install.splitlines() if line.strip()]) == 3  # three commands


def test_the_workshop_path_minutes_are_the_declarations_at_the_t4_throughput():
    from ftcourse.course import declarations as declared
    from ftcourse.course.profiles import PROFILES

    text = (ROOT / "docs" / "workshop.md").read_text()
    prose = " ".join(text.split())
    assert "estimated, not measured" in prose and 'notebook_setup("ci")' in prose
    assert "worked solutions notebook in `solutions/`" in prose
    path = re.findall(r"^\| [0-9:–]+ \| (\d\d_\w+) \| .* \| (\d+) \|$", text, re.M)
    assert [stem for stem, _ in path] == ["01_baseline", "02_gradient_accumulation", "10_early_stopping",
                                          "11_putting_it_together"]
    for stem, minutes in path:
        d = declared.declaration(stem, PROFILES["gpu"])
        if d.banked:  # the gpu profile analyses the cpu bank: it runs its canaries (and any custom arm) live
            d = declared.expected_live_runs(d, set(), "cpu", "gpu")
        seconds = declared.seconds(d, declared.T4_TRAIN_PER_S, declared.T4_EVAL_PER_S, declared.T4_RUN_OVERHEAD_S)
        assert int(minutes) == round(seconds / 60), stem
