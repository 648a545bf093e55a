#!/usr/bin/env bash
# Install, then run the whole test suite: unit tests, then every notebook under nbval in the ci
# profile. This is the command .ci/run calls. Offline: set FTCOURSE_DATA_DIR (README).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${FTCOURSE_VENV:-.venv}/bin/activate"
t1=$SECONDS
echo "== setup: $((t1 - t0)) s"
python -m pytest tests
t2=$SECONDS
echo "== unit tests: $((t2 - t1)) s"
FTCOURSE_PROFILE=ci python -m pytest --nbval-lax -p no:cacheprovider notebooks/
t3=$SECONDS
echo "== notebooks (ci profile): $((t3 - t2)) s"
echo "== total: $((t3 - t0)) s"
