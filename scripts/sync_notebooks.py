"""Keep the parts every notebook shares in sync with one source: pyproject.toml.

The repository URL (``[project.urls] Repository``) and the version (``[project] version``) live
there only. From them this script writes, in each of notebooks/[0-9][0-9]_*.ipynb:

* the Open-in-Colab badge (second line of the first cell), pointing at the notebook of the release
  tag ``v<version>``, and the paragraph that says how to choose a profile on Colab;
* the install block at the top of the setup cell (second cell): on Colab only, ``%pip install``
  of ``ftcourse[offline]`` from the repository at tag ``v<version>`` with the tested versions (that
  tag's ``constraints.txt`` without its torch pin: Colab's torch stays), then a check that says
  whether the runtime must restart; when the tag or the repository cannot be reached, one line says
  so and gives the alternative (install from ``main``, or a wheel) instead of pip's traceback;
* the footer as the last cell;
* the notebook metadata: kernelspec (so JupyterLab does not mark the notebook modified when it
  opens it) and Colab's GPU runtime request (accelerator GPU, T4);

and in README.md, the notebook table between ``<!-- notebooks:begin -->`` and ``<!-- notebooks:end -->``.

    python scripts/sync_notebooks.py          # rewrite what is out of sync
    python scripts/sync_notebooks.py --check  # exit 1 and list what is out of sync (a test runs this)

Release step: bump ``version`` in pyproject.toml and ``__version__`` in ftcourse/__init__.py,
run this script, commit, then ``git tag v<version> && git push --tags``: the notebooks' install
line and badges name that tag.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BEGIN, END = "# --- install (scripts/sync_notebooks.py) ---", "# --- end of install ---"
# 04's declaration depends on what its training cell decided; the footer records it with the runs, for CI's check.
FOOTER_DECLARATION_OPTIONS = {"04_mixed_precision": ", fast=run_training"}


def footer(stem: str) -> str:
    """The last cell: the footer (how long, where, which runs); CI checks its run records against the declaration."""
    return ("# Footer: how long this notebook took, in which profile, on which machine, and the fine-tuning runs it made\n"
            "# (CI checks them against the notebook's declaration in ftcourse/course/declarations.py).\n"
            f"from ftcourse.course.notebook import notebook_footer\n\n"
            f"notebook_footer({stem!r}{FOOTER_DECLARATION_OPTIONS.get(stem, '')})")


PROFILE_NOTE = ("**Profiles.** Sizes (model, data, epochs, seeds) come from a profile: `ci` (tiny, for automated "
                "checks), `cpu` (a laptop: minutes) or `gpu` (Colab GPU, a larger model). Locally, set "
                "`FTCOURSE_PROFILE` before starting Jupyter. On Colab, variables can't be set before the kernel "
                "starts: run `%env FTCOURSE_PROFILE=cpu` (or `ci`, `gpu`) in a cell above the setup cell, or "
                "change it and restart the runtime. Without it: `gpu` on a GPU runtime, `cpu` otherwise.")
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def project() -> tuple[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["urls"]["Repository"].rstrip("/"), meta["version"]


def badge_url(repo: str, version: str, name: str) -> str:
    path = repo.split("github.com/", 1)[1]
    return f"https://colab.research.google.com/github/{path}/blob/v{version}/notebooks/{name}"


def badge(repo: str, version: str, name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({badge_url(repo, version, name)})")


# relative: the runtime's working directory (Colab: /content), no path of one machine's
CONSTRAINTS_PATH = "ftcourse-constraints.txt"


def raw_url(repo: str, version: str, path: str) -> str:
    """The raw file at the release tag (GitHub's raw host)."""
    return f"https://raw.githubusercontent.com/{repo.split('github.com/', 1)[1]}/v{version}/{path}"


def install_block(repo: str, version: str) -> str:
    """Colab only: the release ``v<version>`` with the versions it was tested with (its tag's constraints.txt, less
    the torch pin: Colab's torch is built for its GPU and CUDA), then whether the runtime must restart. The tag's
    constraints are fetched first, which also checks that the tag and the repository can be reached: when they
    cannot, one line says so and what to do instead, rather than pip's traceback."""
    tag, spec = f"v{version}", f"ftcourse[offline] @ git+{repo}"
    return (
        f"{BEGIN}\n"
        "import sys\n\n"
        "if \"google.colab\" in sys.modules:  # Colab: this release with its tested versions; torch stays Colab's\n"
        "    import importlib.util, urllib.request\n\n"
        "    try:\n"
        f"        pins = urllib.request.urlopen(\"{raw_url(repo, version, 'constraints.txt')}\", timeout=30).read().decode()\n"
        "    except OSError as err:  # no such tag (HTTP 404), or GitHub unreachable\n"
        f"        problem = (f\"ftcourse {tag} cannot be fetched from {repo} ({{err}}); instead install from main: \"\n"
        f"                   \"%pip install '{spec}@main', or upload a wheel and %pip install it\")\n"
        "        if importlib.util.find_spec(\"ftcourse\") is None:\n"
        "            raise SystemExit(problem) from None  # one line, and the notebook stops here\n"
        "        print(problem + \"; using the ftcourse already installed\")\n"
        "    else:\n"
        f"        with open(\"{CONSTRAINTS_PATH}\", \"w\") as f:\n"
        "            f.write(\"\".join(line for line in pins.splitlines(True) if not line.startswith(\"torch==\")))\n"
        f"        %pip install -q -c {CONSTRAINTS_PATH} \"{spec}@{tag}\"\n"
        "        from ftcourse.course.notebook import restart_if_upgraded\n\n"
        "        restart_if_upgraded()  # says so if an upgraded package needs a runtime restart\n"
        f"{END}"
    )


def _strip_old_install(source: str) -> str:
    """The setup cell without its install block (the generated one, or the older subprocess one)."""
    if BEGIN in source:
        return source.split(END, 1)[1].lstrip("\n")
    lines = source.splitlines()
    if lines and lines[0].startswith("# Setup: on Colab"):
        # older cells: a comment, `import sys`, an `if "google.colab"` block of subprocess lines, a blank line
        end = next(i for i, line in enumerate(lines) if i > 1 and not line.strip())
        return "\n".join(lines[end + 1:]).lstrip("\n")
    return source


def sync_notebook(path: Path, repo: str, version: str) -> list[str]:
    """Bring one notebook in sync; return what changed (empty: it already was)."""
    nb = nbformat.read(path, as_version=4)
    changes = []
    title = nb.cells[0]
    lines = title.source.splitlines()
    wanted_badge = badge(repo, version, path.name)
    badge_at = next((i for i, line in enumerate(lines) if "colab-badge.svg" in line), None)
    if badge_at is None:
        lines[1:1] = ["", wanted_badge]
        badge_at = 2
    elif lines[badge_at] != wanted_badge:
        lines[badge_at] = wanted_badge
    note_at = next((i for i, line in enumerate(lines) if line.startswith("**Profiles.**")), None)
    if note_at is None:
        lines[badge_at + 1:badge_at + 1] = ["", PROFILE_NOTE]
    else:
        lines[note_at] = PROFILE_NOTE
    # an older sentence about profiles, now said by the note
    lines = [line for line in lines if not line.startswith("Sizes (model, data, epochs, seeds) come from a **profile**")]
    source = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n")
    if source != title.source:
        title.source = source
        changes.append("title cell (badge, profile note)")

    setup = nb.cells[1]
    wanted = install_block(repo, version) + "\n\n" + _strip_old_install(setup.source)
    if setup.cell_type != "code" or "notebook_setup" not in setup.source:
        raise SystemExit(f"{path.name}: the second cell must be the setup cell (it calls notebook_setup())")
    if setup.source != wanted:
        setup.source = wanted
        changes.append("setup cell install block")

    last = nb.cells[-1]
    wanted_footer = footer(path.stem)
    if not (last.cell_type == "code" and last.source == wanted_footer):
        if last.cell_type == "code" and "notebook_footer" in last.source:
            last.source = wanted_footer
        else:
            nb.cells.append(nbformat.v4.new_code_cell(wanted_footer))
        changes.append("timing footer")
    last = nb.cells[-1]
    if "harness" not in last.metadata.get("tags", []):  # bookkeeping: counted in the harness share of the code
        last.metadata["tags"] = [*last.metadata.get("tags", []), "harness"]
        changes.append("footer tagged harness")

    for key, value in (("kernelspec", KERNELSPEC), ("language_info", {"name": "python"}), *COLAB_METADATA.items()):
        if nb.metadata.get(key) != value:
            nb.metadata[key] = value
            changes.append(f"metadata {key}")
    if changes:
        write_notebook(nb, path)
    return changes


def write_notebook(nb, path: Path) -> None:
    """``nbformat.write``, but with the keys in the order the file had them: nbformat sorts them, which would rewrite
    the outputs of every notebook saved otherwise, and a sync must change only what it syncs."""
    import copy
    import json

    from nbformat.v4.rwbase import split_lines

    nbformat.validate(nb)
    path.write_text(json.dumps(split_lines(copy.deepcopy(nb)), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def readme_table(repo: str, version: str, notebooks: list[Path]) -> str:
    rows = ["| # | notebook | Colab |", "|---|---|---|"]
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        title = nb.cells[0].source.splitlines()[0].lstrip("# ").split("·", 1)[-1].strip()
        rows.append(f"| {path.name[:2]} | [{title}](notebooks/{path.name}) | {badge(repo, version, path.name)} |")
    return "\n".join(rows)


def sync_readme(repo: str, version: str, notebooks: list[Path], write: bool) -> list[str]:
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- notebooks:begin -->", "<!-- notebooks:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {begin} ... {end} around the notebook table")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    wanted = f"{head}{begin}\n{readme_table(repo, version, notebooks)}\n{end}{tail}"
    if wanted == text:
        return []
    if write:
        readme.write_text(wanted)
    return ["README.md notebook table"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of sync")
    args = parser.parse_args(argv)
    repo, version = project()
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    stale = {}
    for path in notebooks:
        if args.check:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                probe = Path(tmp) / path.name
                probe.write_bytes(path.read_bytes())
                changes = sync_notebook(probe, repo, version)
        else:
            changes = sync_notebook(path, repo, version)
        if changes:
            stale[path.name] = changes
    readme = sync_readme(repo, version, notebooks, write=not args.check)
    if readme:
        stale["README.md"] = readme
    for name, changes in stale.items():
        print(f"{'out of sync' if args.check else 'updated'}: {name}: {', '.join(changes)}")
    if args.check and stale:
        print("run: python scripts/sync_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
