#!/usr/bin/env bash
# Install, then execute every notebook headless in a profile (default: FTCOURSE_PROFILE, else gpu
# with CUDA, else cpu). Writes results/notebooks/*.ipynb and results/summary.md.
#   bash scripts/run_course.sh [ci|cpu|gpu] [notebook numbers...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${FTCOURSE_VENV:-.venv}/bin/activate"
profile="${1:-}"
[ $# -gt 0 ] && shift
python -m ftcourse info || echo "(ftcourse info reported a problem above: the run may fail)"
python -m ftcourse run ${profile:+--profile "$profile"} ${1:+--notebooks "$@"}
