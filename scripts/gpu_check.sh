#!/usr/bin/env bash
# How to run: on a machine with a CUDA GPU, from the repo root: bash scripts/gpu_check.sh
#
# The CUDA checks of ftcourse from a plain checkout: no install (PYTHONPATH=.), no download, no
# `datasets`; needs python with torch (a CUDA build), transformers and pytest. It prints the GPU and
# the versions, runs the CUDA tests (python -m pytest -m cuda tests/test_cuda.py; under 5 minutes),
# prints a table of their outcomes and a summary line, then runs benchmarks/bench_gpu.py (about a
# minute on a T4).
#
# Exit status: 0 all CUDA tests passed (or skipped/xfailed), 1 a CUDA test failed or errored (or
# the tests timed out), 2 no CUDA device, 3 pytest (or torch/transformers) missing.
# The benchmark's own status does not change the exit status (it is reported).
# Environment: PYTHON (default python), GPU_CHECK_TEST_TIMEOUT (s, default 300),
# GPU_CHECK_BENCH_TIMEOUT (s, default 300), GPU_CHECK_NO_BENCH=1 skips the benchmark,
# GPU_CHECK_OUT (folder for the junit XML and logs; default a temporary one).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# cuBLAS reads this when CUDA initialises; ftcourse.train.use_deterministic_algorithms sets the same
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
export PYTHONDONTWRITEBYTECODE=1
OUT=${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT"

with_timeout() {  # with_timeout SECONDS cmd...: `timeout` where it exists
    local seconds=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=10 "$seconds" "$@"
    else
        "$@"
    fi
}

echo "== ftcourse GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: present, but the query failed"
else
    echo "nvidia-smi: not found (the GPU is named by torch below)"
fi

"$PY" - <<'EOF'
import sys

try:
    import torch
except ImportError:
    print("gpu_check: torch is not installed in this python (" + sys.executable + ")")
    sys.exit(3)
try:
    import transformers
    tf_version = transformers.__version__
except ImportError:
    print("gpu_check: transformers is not installed in this python (" + sys.executable + ")")
    sys.exit(3)
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {tf_version}")
if not torch.cuda.is_available():
    print("gpu_check: no CUDA device: torch.cuda.is_available() is False"
          + (" (this torch is a CPU build)" if torch.version.cuda is None else " (no GPU visible to this CUDA build)")
          + ". Run this on a machine with a CUDA GPU.")
    sys.exit(2)
d = torch.cuda.current_device()
major, minor = torch.cuda.get_device_capability(d)
print(f"GPU (torch): {torch.cuda.get_device_name(d)}, compute capability {major}.{minor}, "
      f"{torch.cuda.get_device_properties(d).total_memory / 2**30:.1f} GiB; {torch.cuda.device_count()} device(s)")
EOF
rc=$?
if [ "$rc" -ne 0 ]; then
    exit "$rc"
fi
if ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    echo "gpu_check: pytest is not installed in this python ($(command -v "$PY")): the CUDA tests need it" \
         "(python -m pip install pytest); no test was run."
    exit 3
fi

echo
echo "== CUDA tests: python -m pytest -m cuda tests/test_cuda.py (timeout ${GPU_CHECK_TEST_TIMEOUT:-300} s)"
t0=$SECONDS
with_timeout "${GPU_CHECK_TEST_TIMEOUT:-300}" "$PY" -m pytest -m cuda tests/test_cuda.py -p no:cacheprovider \
    -rA --junitxml="$OUT/cuda.xml" -o junit_family=xunit1 2>&1 | tee "$OUT/pytest.log"
test_rc=${PIPESTATUS[0]}
echo "== CUDA tests: pytest exit status $test_rc, $((SECONDS - t0)) s"

echo
"$PY" - "$OUT/cuda.xml" "$OUT/pytest.log" "$test_rc" <<'EOF'
import re
import sys
import xml.etree.ElementTree as ET

xml_path, log_path, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    root = ET.parse(xml_path).getroot()
except (OSError, ET.ParseError) as err:
    print(f"gpu_check: no readable junit XML ({err}); pytest exit status {rc}"
          + (" (timed out)" if rc in (124, 137) else ""))
    sys.exit(0)
xpassed = set()
with open(log_path, errors="replace") as f:
    for line in f:
        m = re.match(r"XPASS (\S+)", line)
        if m:
            xpassed.add(m.group(1).split("::", 1)[-1])
rows = []
for case in root.iter("testcase"):
    name = case.get("name")
    outcome = "passed"
    for child in case:
        if child.tag == "failure":
            outcome = "failed"
        elif child.tag == "error":
            outcome = "error"
        elif child.tag == "skipped":
            outcome = "xfail" if child.get("type") == "pytest.xfail" else "skipped"
    if outcome == "passed" and name in xpassed:
        outcome = "xpass"
    rows.append((name, outcome, f"{float(case.get('time', 0)):.1f}"))
width = max([len(r[0]) for r in rows] + [4])
print(f"| {'test'.ljust(width)} | outcome | s     |")
print(f"|{'-' * (width + 2)}|---------|-------|")
for name, outcome, seconds in rows:
    print(f"| {name.ljust(width)} | {outcome.ljust(7)} | {seconds.rjust(5)} |")
counts = {}
for _, outcome, _ in rows:
    counts[outcome] = counts.get(outcome, 0) + 1
order = ["passed", "failed", "error", "skipped", "xfail", "xpass"]
summary = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
bad = counts.get("failed", 0) + counts.get("error", 0)
print()
print(f"SUMMARY: {len(rows)} CUDA tests: {summary or 'none ran'} -> {'FAILED' if bad or rc not in (0, 5) else 'OK'}")
props = {p.get("name"): p.get("value") for p in root.iter("property")}
if props:
    print()
    print("Report (junit testsuite properties):")
    for key, value in props.items():
        print(f"  {key}: {value}")
EOF

if [ -z "${GPU_CHECK_NO_BENCH:-}" ]; then
    echo
    echo "== benchmark: python benchmarks/bench_gpu.py (timeout ${GPU_CHECK_BENCH_TIMEOUT:-300} s)"
    with_timeout "${GPU_CHECK_BENCH_TIMEOUT:-300}" "$PY" benchmarks/bench_gpu.py
    bench_rc=$?
    [ "$bench_rc" -eq 0 ] || echo "== benchmark: exit status $bench_rc (does not change this script's status)"
fi

echo
echo "== outputs in $OUT (cuda.xml, pytest.log)"
# pytest: 0 all passed, 1 some failed, 5 none collected; anything else (2 interrupted, 3 internal
# error, 4 usage error, 124/137 timeout) is a failure of the check too
case "$test_rc" in
    0) echo "== GPU check: OK"; exit 0 ;;
    5) echo "== GPU check: no CUDA test was collected (tests/test_cuda.py missing?)"; exit 1 ;;
    124|137) echo "== GPU check: FAILED (the CUDA tests timed out)"; exit 1 ;;
    *) echo "== GPU check: FAILED (pytest exit status $test_rc)"; exit 1 ;;
esac
