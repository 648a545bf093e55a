#!/usr/bin/env bash
# Make (or reuse) the virtual environment and install ftcourse into it, with the tested versions.
# torch comes first, chosen for the machine: pip resolving a bare `torch` requirement on a machine
# without torch downloads a multi-GB CUDA build, which a CPU-only laptop does not need.
#   FTCOURSE_VENV         where the environment lives (default: .venv)
#   TORCH_SPEC            the torch requirement (default: torch==2.13.0)
#   TORCH_INDEX           an index for torch (default: chosen by scripts/torch_index.sh: without an NVIDIA GPU on
#                         Linux, https://download.pytorch.org/whl/cpu for the small CPU build if it answers, else PyPI)
#   FTCOURSE_EXTRAS       extras to install (default: dev,offline)
#   FTCOURSE_CONSTRAINTS  a pip constraints file (default: constraints.txt, the tested versions; empty: none)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FTCOURSE_VENV:-.venv}"
constraints="${FTCOURSE_CONSTRAINTS-constraints.txt}"
pin=()
[ -n "$constraints" ] && pin=(-c "$constraints")
if [ ! -x "$venv/bin/python" ]; then
  echo "== setup: creating the virtual environment $venv"
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
echo "== setup: upgrading pip"
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  # shellcheck source=scripts/torch_index.sh
  . scripts/torch_index.sh
  choose_torch_index
  echo "== setup: installing ${TORCH_SPEC:-torch==2.13.0} first from ${torch_index:-PyPI}: $torch_index_why"
  if [ -n "$torch_index" ]; then
    python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" --index-url "$torch_index"
  else
    python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
echo "== setup: installing ftcourse[${FTCOURSE_EXTRAS:-dev,offline}]${constraints:+ with the versions of $constraints}"
python -m pip install -q "${pin[@]}" -e ".[${FTCOURSE_EXTRAS:-dev,offline}]"
python -c "import torch, transformers; print(f'== setup: torch {torch.__version__} (CUDA: {torch.cuda.is_available()}), transformers {transformers.__version__}')"
