# Which index torch comes from, for scripts/setup.sh (sourced; tests/test_setup_script.py runs it with a fake curl,
# nvidia-smi and uname on PATH). choose_torch_index sets torch_index (empty: PyPI) and torch_index_why.
#
# PyPI's torch for Linux is the CUDA build: with its NVIDIA libraries, several GB, of no use without an NVIDIA GPU.
# The CPU-only build from download.pytorch.org is a fraction of that. So, when TORCH_INDEX is unset:
#   an NVIDIA GPU (nvidia-smi lists one)  -> PyPI (the CUDA build is the point);
#   not Linux (macOS, Windows)            -> PyPI (its torch there has no CUDA libraries);
#   Linux without a GPU                   -> the CPU index if it answers within 5 s, else PyPI (as in CI, which
#                                            reaches only PyPI: it keeps the torch==2.13.0 it always installed).
CPU_INDEX="https://download.pytorch.org/whl/cpu"

choose_torch_index() {
  torch_index=""
  if [ -n "${TORCH_INDEX:-}" ]; then
    torch_index="$TORCH_INDEX"
    torch_index_why="TORCH_INDEX is set"
    return 0
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_index_why="an NVIDIA GPU is here (nvidia-smi lists it): PyPI's torch, a CUDA build"
    return 0
  fi
  local system
  system="$(uname -s 2>/dev/null || echo unknown)"
  if [ "$system" != "Linux" ]; then
    torch_index_why="$system: PyPI's torch there has no CUDA libraries, so it is already the small build"
    return 0
  fi
  if ! command -v curl >/dev/null 2>&1; then
    torch_index_why="no NVIDIA GPU, but no curl to check $CPU_INDEX: PyPI's torch (on Linux the CUDA build, several GB; TORCH_INDEX=$CPU_INDEX for the CPU build)"
    return 0
  fi
  local code
  code="$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$CPU_INDEX/" 2>/dev/null)" || true
  case "$code" in
    2??|3??)
      torch_index="$CPU_INDEX"
      torch_index_why="no NVIDIA GPU (no nvidia-smi) and $CPU_INDEX answers (HTTP $code): the CPU-only build, a fraction of PyPI's CUDA build"
      ;;
    *)
      torch_index_why="no NVIDIA GPU, but $CPU_INDEX did not answer (HTTP ${code:-none}, 5 s allowed): PyPI's torch (on Linux the CUDA build, several GB)"
      ;;
  esac
  return 0
}
