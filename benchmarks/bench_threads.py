"""Training throughput with 2 threads and with the count ``choose_threads`` picks, on an idle machine and beside one
busy process, for the "Threads" table of docs/benchmarks.md.

    FTCOURSE_DATA_DIR=... python benchmarks/bench_threads.py [--seconds 20] [--out benchmarks/threads.json]

Each condition is a fresh interpreter (no thread pool inherited) that loads the cpu profile's model (MiniLM),
takes three warm-up steps, then trains for ``--seconds`` on length-grouped batches of the cpu profile's training
subset in a fixed shuffled order (so that a shorter window sees the same mix of lengths) and reports training
examples per second, as ``python -m ftcourse estimate`` measures them (and the process's peak resident memory).
The conditions:

* idle, 2 threads; idle, the chosen count (run only if it is not 2: then it is the same measurement);
* busy, 2 threads; busy, the chosen count. "Busy" is one other process spinning on a core
  (``python -c "while True: pass"``), started a second before the choice and killed after the measurement.

The choice is made in this process, right before each condition, by ``ftcourse.course.notebook.choose_threads``
(FTCOURSE_THREADS is ignored here). The goal: busy throughput at the chosen count >= 0.45 x idle. The machine's
other load (its 1-minute load average and a 0.5 s sample of the CPUs) is recorded before each condition: on a
shared machine "idle" is only as idle as the others let it be.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, random, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
seconds = float(sys.argv[2])
from ftcourse.amp import Precision
from ftcourse.param_groups import decay_param_groups
from ftcourse.train import set_seed, train
from ftcourse.course import data as ftdata
from ftcourse.course.pretrained import load_model
from ftcourse.course.profiles import get_profile
from ftcourse.course.runner import default_optimizer

profile = get_profile("cpu")
splits = ftdata.profile_splits(profile)
tokenizer = ftdata.cached_tokenizer(profile.model_id)
set_seed(0)
model = load_model(profile.model_id)
precision = Precision(profile.amp, torch.device("cpu"), verbose=False)
optimizer = default_optimizer(decay_param_groups(model, profile.weight_decay), profile.lr, torch.device("cpu"))
batches = list(ftdata.make_loader(splits["train"], tokenizer, profile.batch_size, shuffle=True, seed=0, group_by_length=True))
random.Random(0).shuffle(batches)  # any prefix: the same mix of lengths
kw = dict(precision=precision, max_grad_norm=1.0, device=torch.device("cpu"), progress=False)
train(model, batches[:3], optimizer, **kw)
items = steps = 0
spent = 0.0
for batch in batches[3:] * 4:
    history = train(model, [batch], optimizer, **kw)
    items += sum(r["items"] for r in history.steps)
    spent += sum(r["time_s"] for r in history.steps)
    steps += 1
    if spent >= seconds:
        break
import resource
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
print(json.dumps({"threads": torch.get_num_threads(), "steps": steps, "examples": items, "seconds": round(spent, 2),
                  "examples_per_s": round(items / spent, 1), "peak_rss_mb": round(peak_mb)}))
"""


def background() -> dict:
    from ftcourse.course.notebook import sampled_others

    return {"loadavg_1min": round(os.getloadavg()[0], 2), "others_sampled": round(sampled_others() or 0.0, 2)}


def measure(threads: int, seconds: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("FTCOURSE_THREADS", None)
    done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(seconds)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"a measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def condition(name: str, busy: bool, seconds: float) -> list[dict]:
    """The rows of one condition: 2 threads, and the chosen count if it differs."""
    from ftcourse.course.notebook import choose_threads

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if spinner:
            time.sleep(1.0)  # the spinner is running when the choice samples the CPUs
        before = background()
        choice = choose_threads()
        rows = []
        for threads, label in ((2, "2 threads"), (choice.threads, "chosen")):
            if label == "chosen" and threads == 2:
                rows.append(dict(rows[0], condition=name, layout=f"chosen = 2 threads (same measurement)",
                                 chosen_others=round(choice.others, 2)))
                continue
            row = {"condition": name, "layout": label, **measure(threads, seconds), "background_before": before}
            if label == "chosen":
                row["chosen_others"] = round(choice.others, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
        return rows
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training seconds per measurement")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "threads.json"))
    args = parser.parse_args(argv)
    os.environ.pop("FTCOURSE_THREADS", None)  # the benchmark is of the automatic choice

    from ftcourse.course.notebook import machine_description

    started = time.strftime("%Y-%m-%d %H:%M")
    rows = condition("idle", False, args.seconds) + condition("busy (one spinning process)", True, args.seconds)
    idle = rows[0]["examples_per_s"]
    for row in rows:
        row["vs_idle_2_threads"] = round(row["examples_per_s"] / idle, 2)
    busy_chosen = rows[3]["examples_per_s"] / idle
    report = {"what": "MiniLM training examples/s (cpu profile, batch 16, length-grouped, fp32), ~20 s windows: "
                      "2 threads vs choose_threads' count, idle and beside one busy process",
              "measured_at": started, "machine": machine_description(), "rows": rows,
              "busy_chosen_vs_idle": round(busy_chosen, 2), "goal": ">= 0.45", "goal_met": busy_chosen >= 0.45}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for row in rows:
        print(f"{row['condition']:<30} {row['layout']:<36} {row['examples_per_s']:7.1f} examples/s "
              f"({row['vs_idle_2_threads']:.2f} x idle)")
    print(f"busy, chosen / idle = {busy_chosen:.2f} (goal >= 0.45); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
