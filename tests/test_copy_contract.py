"""The copy contract: every technique module says which sibling files to copy with it, and works
copied with exactly those into another package, with no ``ftcourse`` importable.

Technique modules are what people copy into their projects; the course harness (data, profiles,
experiment, recipe, plan, estimate, cli, notebook) is what the notebooks use, and no technique module imports it.
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
HARNESS = {
    "data", "profiles", "experiment", "recipe", "cli", "notebook", "plan", "estimate", "__main__", "__init__",
}
TECHNIQUE = sorted(
    [p.stem for p in PACKAGE.glob("*.py") if p.stem not in HARNESS]
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
    names = {p.stem for p in PACKAGE.glob("*.py")}
    assert HARNESS - {"__main__", "__init__"} <= names
    assert {"train", "stats", "memory", "llrd", "swa"} <= set(TECHNIQUE)


@pytest.mark.parametrize("module", TECHNIQUE)
def test_imports_are_exactly_the_copy_line(module):
    path = PACKAGE / f"{module}.py"
    named = {name[: -len(".py")] for name in _copy_line(path)}
    imports = _package_imports(path)
    assert not {i for i in imports if i.startswith("ftcourse")}, f"{module}: absolute ftcourse import {imports}"
    assert imports <= named, f"{module}.py imports {sorted(imports - named)} that its copy line does not name"
    assert not imports & HARNESS, f"{module}.py imports the course harness"


@pytest.mark.parametrize("module", TECHNIQUE)
def test_copied_with_its_named_files_it_imports_without_ftcourse(tmp_path, module):
    path = PACKAGE / f"{module}.py"
    target = tmp_path / "myproject"
    target.mkdir()
    (target / "__init__.py").write_text("")
    for name in [path.name, *_copy_line(path)]:
        shutil.copy(path.parent / name, target / name)
    code = ("import sys; sys.modules['ftcourse'] = None  # any 'import ftcourse' now fails\n"
            f"import importlib; importlib.import_module('myproject.{path.stem}')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{module} copied with {_copy_line(path)}:\n{done.stderr[-2000:]}"


def test_package_docstring_and_readme_show_both_layers():
    import ftcourse

    doc = ftcourse.__doc__
    for module in TECHNIQUE:
        if "/" not in module and not module.startswith("_"):
            assert f"``{module}``" in doc, module
    for module in HARNESS - {"__main__", "__init__"}:
        assert f"``{module}``" in doc, module
    readme = (PACKAGE.parent / "README.md").read_text()
    assert "files to copy" in readme
