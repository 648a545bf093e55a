"""``python -m ftcourse copy MODULE --into FOLDER``: a technique module, with exactly the files its copy line names,
into one package folder of your project.

Course harness (not a technique module).

Each technique module's docstring names what to copy with it (``Copy alone.`` or ``Copy with: models.py,
param_groups.py.``; ``tests/test_copy_contract.py`` holds every module to its line). This copies those
files into FOLDER, makes ``FOLDER/__init__.py`` when it is missing (the modules import their siblings
relatively, so FOLDER must be a package), and prints the import line to use. A file already in FOLDER
with other contents is not overwritten unless asked (``--force``): it may be yours.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
COPY_LINE = re.compile(r"^Copy (alone\.|with: ([a-z_]+\.py(, [a-z_]+\.py)*)\.)$")
# What the import line shows for each module: its main names. A module not listed shows its __all__ (or its public
# functions and classes), at most MAX_SHOWN of them.
MAIN_NAMES = {
    "accumulation": ("accumulation_windows", "summed_loss"),
    "amp": ("Precision",),
    "batch_size": ("find_max_batch_size", "accumulation_for"),
    "early_stopping": ("EarlyStopping", "EarlyStoppingCallback"),
    "freezing": ("freeze_bottom_layers", "GradualUnfreezing"),
    "llrd": ("llrd_param_groups", "grouped_llrd_param_groups"),
    "lr_finder": ("lr_range_test",),
    "memory": ("PeakMemory",),
    "models": ("encoder_layers", "embeddings"),
    "param_groups": ("decay_param_groups",),
    "reinit": ("reinit_top_layers", "init_classifier_head"),
    "schedules": ("get_schedule",),
    "stats": ("compare", "paired_t", "mcnemar"),
    "swa": ("SWACallback",),
    "train": ("train", "evaluate", "set_seed"),
}
MAX_SHOWN = 3


class CopyError(Exception):
    """A copy that cannot be made as asked: its message is one line, the problem and the fix."""


def technique_modules() -> list[str]:
    """The names ``copy`` takes: ``ftcourse/<name>.py`` as ``name``, ``ftcourse/optim/<name>.py`` as ``optim/name``."""
    top = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    optim = [f"optim/{p.stem}" for p in (PACKAGE / "optim").glob("*.py") if p.stem != "__init__"]
    return sorted(top) + sorted(optim)


def copy_line(path: Path) -> list[str]:
    """The sibling files the module's docstring names (empty for ``Copy alone.``)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines = [line for line in doc.splitlines() if COPY_LINE.match(line)]
    if len(lines) != 1:
        raise CopyError(f"{path.name}: its docstring needs exactly one 'Copy alone.' / 'Copy with: a.py, b.py.' line")
    match = COPY_LINE.match(lines[0])
    return [] if match.group(2) is None else match.group(2).split(", ")


def main_names(module: str, path: Path) -> list[str]:
    """The names the printed import line shows (see ``MAIN_NAMES``)."""
    if module in MAIN_NAMES:
        return list(MAIN_NAMES[module])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts][:MAX_SHOWN]
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")][:MAX_SHOWN]


def copy_module(module: str, into: str | Path, force: bool = False) -> dict:
    """Copy ``module`` (a name of :func:`technique_modules`) and the files its copy line names into the package folder
    ``into``; return ``{"copied": [...], "unchanged": [...], "made_init": bool, "import": "from pkg.mod import ..."}``.

    Raises CopyError (nothing written) for an unknown module, a folder name that is not a Python identifier, or a file
    in ``into`` with other contents (unless ``force``)."""
    modules = technique_modules()
    name = module.removesuffix(".py").replace(".", "/").removeprefix("ftcourse/")
    if name not in modules:
        raise CopyError(f"no technique module {module!r}; the technique modules are: {', '.join(modules)}")
    source = PACKAGE / f"{name}.py"
    target = Path(into).expanduser()
    package = target.resolve().name
    if not package.isidentifier():
        raise CopyError(f"--into {str(into)!r}: the folder's name {package!r} is not a Python package name (letters, "
                        "digits and _, not starting with a digit): the copy imports its siblings as one package")
    files = [source.name, *copy_line(source)]
    clashes = [f for f in files if (target / f).is_file() and (target / f).read_bytes() != (source.parent / f).read_bytes()]
    if clashes and not force:
        raise CopyError(f"{', '.join(str(target / f) for f in clashes)} already there with other contents: "
                        "keep yours (copy into another folder) or pass --force to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    made_init = not (target / "__init__.py").exists()
    if made_init:
        (target / "__init__.py").write_text("")
    copied, unchanged = [], []
    for f in files:
        if (target / f).is_file() and (target / f).read_bytes() == (source.parent / f).read_bytes():
            unchanged.append(f)
        else:
            shutil.copyfile(source.parent / f, target / f)
            copied.append(f)
    line = f"from {package}.{source.stem} import {', '.join(main_names(name, source))}"
    return {"copied": copied, "unchanged": unchanged, "made_init": made_init, "import": line, "folder": target,
            "package": package}


def report(result: dict) -> str:
    """What ``copy`` prints: what it wrote, and the import line."""
    folder = result["folder"]
    parts = []
    if result["copied"]:
        parts.append(f"copied {', '.join(result['copied'])} into {folder}/")
    if result["unchanged"]:
        parts.append(f"already there: {', '.join(result['unchanged'])}")
    if result["made_init"]:
        parts.append(f"made {folder / '__init__.py'} (a package: the files import each other relatively)")
    return ("; ".join(parts) + "\n"
            f"import it (from the folder that holds {result['package']}/, or with that folder on sys.path):\n"
            f"    {result['import']}")
