#!/usr/bin/env bash
# Install, then run the whole test suite: unit tests, then every notebook under nbval in the ci
# profile. This is the command .ci/run calls. Offline: set FTCOURSE_DATA_DIR (docs/data.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# CI's machine has 2 cores: torch runs 2 threads there whatever the load at the moment, so that its timings and
# the notebooks' CPU results stay comparable from run to run (ftcourse.course.notebook.choose_threads).
export FTCOURSE_THREADS="${FTCOURSE_THREADS:-2}"
t0=$SECONDS
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${FTCOURSE_VENV:-.venv}/bin/activate"
# The reference for the LARS/LAMB parity tests. --no-deps: timm requires torchvision, whose PyPI wheels
# are CUDA builds that do not load against the CPU torch; the tests load timm's optimizer files alone.
echo "== setup: installing timm (the LARS/LAMB reference) without its dependencies"
python -m pip install -q --no-deps "timm==1.0.31"
t1=$SECONDS
echo "== setup: $((t1 - t0)) s"
python -m pytest tests
t2=$SECONDS
echo "== unit tests: $((t2 - t1)) s"
# The seed bank: every complete notebook's canaries rerun against their stored records (bit-identical on the machine
# that built them, else within their arm's seed range +- 0.01), 1-thread reruns one per core, capped at 10 minutes.
echo "== bank: canaries of every complete notebook's bank"
timeout 600 python -m ftcourse bank verify --complete
t2=$SECONDS
# The estimate right before the run it predicts, then predicted against measured (docs/estimates.md).
times_dir=$(mktemp -d)
echo "== estimate (ci profile): measuring this machine"
python -m ftcourse estimate --profile ci --save "$times_dir/estimate-ci.json"
t2=$SECONDS
FTCOURSE_NOTEBOOK_TIMES="$times_dir/notebook-times.json" FTCOURSE_PROFILE=ci FTCOURSE_RUN_RECORD="$times_dir/runs.jsonl" \
  python -m pytest --nbval-lax -p no:cacheprovider notebooks/ solutions/
t3=$SECONDS
echo "== notebooks (ci profile): $((t3 - t2)) s"
echo "== the runs each notebook made against its declaration (ftcourse/course/declarations.py)"
FTCOURSE_RUN_RECORD="$times_dir/runs.jsonl" python -m pytest -q -p no:cacheprovider tests/test_declared_runs.py
python -m ftcourse estimate --compare "$times_dir/estimate-ci.json" --measured "$times_dir/notebook-times.json"
rm -rf "$times_dir"
echo "== total: $((t3 - t0)) s"
