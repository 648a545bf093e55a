"""``python -m ftcourse copy MODULE --into FOLDER``: a technique module with exactly the files its copy line names, in
a package folder, importable with the line it prints, with no ``ftcourse`` importable."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ftcourse.course.cli import main
from ftcourse.course.copying import PACKAGE, copy_line, technique_modules


def _copy(capsys, module, into, *extra):
    code = main(["copy", module, "--into", str(into), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _import_line(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if line.strip().startswith("from "))


def _run_without_ftcourse(code: str, cwd):
    program = "import sys\nsys.modules['ftcourse'] = None  # any 'import ftcourse' now fails\n" + code
    return subprocess.run([sys.executable, "-c", program], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_copy_llrd_into_an_empty_folder_then_import_it(tmp_path, capsys):
    code, out, _ = _copy(capsys, "llrd", tmp_path / "mypkg")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "mypkg").iterdir()) == ["__init__.py", "llrd.py", "models.py", "param_groups.py"]
    line = _import_line(out)
    assert line == "from mypkg.llrd import llrd_param_groups, grouped_llrd_param_groups"
    done = _run_without_ftcourse(f"{line}\nprint(llrd_param_groups.__module__)", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "mypkg.llrd"


def test_every_technique_module_copies_and_imports_with_the_printed_line(tmp_path, capsys):
    lines = {}
    for module in technique_modules():
        folder = tmp_path / f"pkg_{module.replace('/', '_')}"
        code, out, err = _copy(capsys, module, folder)
        assert code == 0, err
        path = PACKAGE / f"{module}.py"
        assert sorted(p.name for p in folder.iterdir()) == sorted({"__init__.py", path.name, *copy_line(path)})
        lines[module] = _import_line(out)
    assert lines["optim/adam"] == "from pkg_optim_adam.adam import Adam, AdamW"
    program = ("import traceback\nfailed = {}\n"
               f"for module, line in {lines!r}.items():\n"
               "    try:\n        exec(line, {})\n"
               "    except Exception:\n        failed[module] = traceback.format_exc(limit=2)\n"
               "print(repr(failed))")
    done = _run_without_ftcourse(program, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert eval(done.stdout.strip().splitlines()[-1]) == {}


def test_an_unknown_module_lists_the_technique_modules(tmp_path, capsys):
    code, out, err = _copy(capsys, "lorax", tmp_path / "mypkg")
    assert code == 2 and out == ""
    assert err.startswith("ftcourse copy: no technique module 'lorax'; the technique modules are: accumulation, amp,")
    assert "llrd" in err and "optim/adam" in err and "course" not in err.split("are:")[1]
    assert not (tmp_path / "mypkg").exists()


def test_an_existing_package_keeps_its_init_and_its_own_files(tmp_path, capsys):
    folder = tmp_path / "mypkg"
    folder.mkdir()
    (folder / "__init__.py").write_text("VERSION = 1\n")
    (folder / "models.py").write_text("# my own models.py\n")
    code, _, err = _copy(capsys, "reinit", folder)
    assert code == 2 and "models.py already there with other contents" in err and "--force" in err
    assert (folder / "models.py").read_text() == "# my own models.py\n" and not (folder / "reinit.py").exists()
    code, out, _ = _copy(capsys, "reinit", folder, "--force")
    assert code == 0 and (folder / "models.py").read_bytes() == (PACKAGE / "models.py").read_bytes()
    assert (folder / "__init__.py").read_text() == "VERSION = 1\n" and "made" not in out
    code, out, _ = _copy(capsys, "reinit", folder)  # again: nothing to do, nothing refused
    assert code == 0 and "already there: reinit.py, models.py" in out


def test_the_folder_must_be_a_package_name(tmp_path, capsys):
    code, _, err = _copy(capsys, "stats", tmp_path / "my-pkg")
    assert code == 2 and "'my-pkg' is not a Python package name" in err


@pytest.mark.parametrize("name", ["optim.adam", "ftcourse.optim.adam", "optim/adam.py"])
def test_module_spellings(tmp_path, capsys, name):
    code, out, _ = _copy(capsys, name, tmp_path / "opt")
    assert code == 0 and _import_line(out) == "from opt.adam import Adam, AdamW"
