"""Bank build throughput per process layout: runs per hour on 2 cores, for README's Benchmarks.

    python benchmarks/bench_bank.py [--notebook 01] [--runs 2] [--out benchmarks/bank_throughput.json]

Runs the notebook's first canary (60 optimizer steps, the notebook's code paths) ``--runs`` times in each
layout, on a quiet machine (run nothing else meanwhile):

* 1 process x 2 threads (how a notebook runs);
* 1 process x 1 thread;
* 2 processes x 1 thread each, started together (how ``bank build --jobs 2`` runs).

Each run is a fresh interpreter (``python -c``), so no layout inherits another's thread pool. It reports wall
seconds per run and runs per hour for the whole machine, and projects runs per hour at the notebook's own run
size (its declared runs' optimizer steps x batch, the same evaluation cost per step share), a rough guide for
sizing a bank's build (``bank status`` gives the minutes each notebook still needs).
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
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from ftcourse.course.recipes import Recipe
from ftcourse.course.runner import fine_tune
recipe = Recipe.from_dict(__import__("json").loads(sys.argv[1]))
start = time.perf_counter()
fine_tune(recipe, record=True, progress=False)
print(time.perf_counter() - start)
"""


def run_layout(recipe_json: str, processes: int, threads: int, runs: int) -> dict:
    """Wall seconds for ``runs`` runs in ``processes`` parallel processes of ``threads`` threads each."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = 0
    while done < runs:
        batch = min(processes, runs - done)
        children = [subprocess.Popen([sys.executable, "-c", CHILD, recipe_json, str(threads)], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(batch)]
        for child in children:
            out, err = child.communicate()
            if child.returncode:
                raise SystemExit(f"a run failed:\n{err[-2000:]}")
        done += batch
    wall = time.perf_counter() - start
    return {"layout": f"{processes} x {threads} thread{'s' * (threads > 1)}", "runs": runs,
            "wall_s": round(wall, 1), "runs_per_hour": round(3600 * runs / wall, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="01")
    parser.add_argument("--runs", type=int, default=2, help="runs per layout (even: the 2-process layout runs pairs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "bank_throughput.json"))
    args = parser.parse_args(argv)

    from ftcourse.course import bank
    from ftcourse.course.notebook import machine_description

    declared = bank.declaration_of(bank._stem(args.notebook))
    canary = declared.canaries[0]
    rows = [run_layout(json.dumps(canary.to_dict()), p, t, args.runs) for p, t in ((1, 2), (1, 1), (2, 1))]
    # the notebook's own runs: examples trained (steps x batch) relative to the canary's
    sizes = [r.recipe.total_steps() * r.recipe.batch_size for r in declared.runs() if bank.bankable(r)]
    scale = (sum(sizes) / len(sizes)) / (canary.total_steps() * canary.batch_size) if sizes else float("nan")
    for row in rows:
        row["projected_runs_per_hour_at_notebook_size"] = round(row["runs_per_hour"] / scale, 1)
    report = {"what": f"bank build throughput: notebook {declared.notebook}'s first canary ({canary.total_steps()} "
                      f"steps) per layout; projected to its declared runs (x{scale:.1f} the examples)",
              "measured_at": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_description(), "layouts": rows}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for row in rows:
        print(f"{row['layout']:>16}: {row['wall_s']:7.1f} s for {row['runs']} runs, {row['runs_per_hour']:6.1f} runs/h "
              f"(at the notebook's size: {row['projected_runs_per_hour_at_notebook_size']:.1f} runs/h)")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
