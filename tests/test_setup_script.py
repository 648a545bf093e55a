"""scripts/setup.sh's choice of torch index (scripts/torch_index.sh), with a fake curl, nvidia-smi and uname on PATH."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASH = shutil.which("bash")


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def choose(tmp_path, *, gpu=None, system="Linux", http=None, torch_index=None):
    """Run choose_torch_index with only fake tools on PATH; return (index, why, curl's arguments or None).
    ``gpu``: None (no nvidia-smi), True (lists a GPU), False (nvidia-smi fails: no driver). ``http``: None (no curl),
    or the code curl prints ("000" with exit 28: no answer)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    log = tmp_path / "curl.args"
    _tool(fake, "uname", f"echo {system}")
    if gpu is not None:
        _tool(fake, "nvidia-smi", "echo 'GPU 0: Tesla T4 (UUID: GPU-1)'; exit 0" if gpu else "exit 9")
    if http is not None:
        _tool(fake, "curl", f'echo "$@" > {log}; printf %s {http}; [ {http} != 000 ] || exit 28')
    env = {"PATH": str(fake)} | ({"TORCH_INDEX": torch_index} if torch_index else {})
    script = f'. "{ROOT}/scripts/torch_index.sh"; choose_torch_index; printf "%s\\n%s\\n" "$torch_index" "$torch_index_why"'
    done = subprocess.run([BASH, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    index, why = done.stdout.split("\n")[:2]
    return index, why, log.read_text().split() if log.exists() else None


def test_linux_without_gpu_takes_the_cpu_build_when_its_index_answers(tmp_path):
    index, why, curl = choose(tmp_path, http="200")
    assert index == CPU_INDEX and "the CPU-only build" in why and "HTTP 200" in why
    assert curl[:4] == ["-s", "--max-time", "5", "-o"] and curl[-1] == CPU_INDEX + "/"


def test_ci_falls_back_to_pypi_when_the_index_does_not_answer(tmp_path):
    # CI: no nvidia-smi, only PyPI reachable: torch==2.13.0 from PyPI as before, and the log says why
    index, why, curl = choose(tmp_path, http="000")
    assert index == "" and "did not answer (HTTP 000, 5 s allowed)" in why and "PyPI's torch" in why
    assert curl is not None


def test_an_nvidia_gpu_keeps_pypis_cuda_build_without_probing(tmp_path):
    index, why, curl = choose(tmp_path, gpu=True, http="200")
    assert index == "" and why.startswith("an NVIDIA GPU is here") and curl is None


def test_nvidia_smi_without_a_working_driver_counts_as_no_gpu(tmp_path):
    index, _, curl = choose(tmp_path, gpu=False, http="200")
    assert index == CPU_INDEX and curl is not None


@pytest.mark.parametrize("system", ["Darwin", "MINGW64_NT-10.0"])
def test_macos_and_windows_take_pypi(tmp_path, system):
    index, why, curl = choose(tmp_path, system=system, http="200")
    assert index == "" and why.startswith(system) and curl is None


def test_torch_index_set_wins(tmp_path):
    index, why, curl = choose(tmp_path, gpu=True, http="200", torch_index="https://example.org/simple")
    assert (index, why, curl) == ("https://example.org/simple", "TORCH_INDEX is set", None)


def test_no_curl_falls_back_and_says_how_to_get_the_cpu_build(tmp_path):
    index, why, _ = choose(tmp_path)
    assert index == "" and "no curl" in why and f"TORCH_INDEX={CPU_INDEX}" in why


def test_setup_uses_the_choice_and_environment_yml_says_how_to_get_the_cpu_build():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert ". scripts/torch_index.sh" in setup and "choose_torch_index" in setup
    assert '--index-url "$torch_index"' in setup and "$torch_index_why" in setup
    assert CPU_INDEX in (ROOT / "environment.yml").read_text()
