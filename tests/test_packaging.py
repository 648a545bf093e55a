"""environment.yml and pyproject.toml must name the same packages."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> set[str]:
    """Every package pyproject.toml names: dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_name(r) for r in extra}
    return names


def test_environment_yml_matches_pyproject():
    wanted = _declared()
    listed = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-\[\]<>=!~ ]+?)\s*(#.*)?$", line)
        if m and not m.group(1).startswith(("pip", "python")) and m.group(1) != "-e .":
            listed.add(_name(m.group(1)))
    assert wanted == listed, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash scripts/test.sh"
    assert command in readme and command in ci


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_name(name)] = version
    return pins


def test_constraints_pin_every_declared_package():
    declared = _declared()
    pins = _constraints()
    assert declared <= set(pins), f"declared but not pinned in constraints.txt: {sorted(declared - set(pins))}"
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert f'timm=={pins["timm"]}' in test_sh  # the one test-only package, installed by scripts/test.sh


def test_setup_and_ci_install_with_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "constraints.txt" in setup and '-c "$constraints"' in setup
    assert "bash scripts/setup.sh" in (ROOT / "scripts" / "test.sh").read_text()


def test_every_notebook_import_is_declared():
    import json

    declared = _declared()
    import_names = {"sklearn": "scikit-learn", "PIL": "pillow", "IPython": "ipykernel", "yaml": "pyyaml"}
    stdlib = set(__import__("sys").stdlib_module_names)
    found = set()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for line in "".join(cell["source"]).splitlines():
                m = re.match(r"\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", line)
                if m:
                    found.add(m.group(1))
    # optional: imported inside try/except with a fallback (05 checks against timm's optimizers where
    # timm imports; its requirement torchvision comes from PyPI as a CUDA build, so it is not declared)
    optional = {"timm"}
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for name in optional:
                for m in re.finditer(rf"^\s*(?:from|import)\s+{name}\b.*$", source, re.M):
                    before, after = source[: m.start()], source[m.end():]
                    assert "try:" in before and "except" in after, f"{path.name}: unguarded import of {name}"
    third_party = {import_names.get(n, n) for n in found - stdlib - {"ftcourse"} - optional}
    assert {_name(n) for n in third_party} <= declared | {"torch"}, sorted({_name(n) for n in third_party} - declared)
