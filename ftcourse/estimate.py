"""``python -m ftcourse estimate``: how long each notebook will take here, measured in about a minute.

Course harness (not a technique module).

It measures, on the current device and with the profile's model, batch sizes, precision and length
grouping: training examples per second (``measure_steps`` optimizer steps on batches spread over a
whole length-grouped epoch, after warm-up steps), evaluation sentences per second (a length-sorted
pass over validation sentences), and the per-run overhead (loading the model). It then applies them
to every notebook's plan (``ftcourse.plan``: runs, examples, epochs, evaluations, other work) and
prints predicted minutes per notebook and for the whole course.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch


@dataclass
class Throughput:
    device: str
    precision: str
    train_per_s: float
    eval_per_s: float
    overhead_s: float


def measure(profile, measure_steps: int = 20, warmup_steps: int = 3, eval_sentences: int = 512,
            device: str | torch.device | None = None) -> Throughput:
    """Training and evaluation throughput of ``profile``'s model here (see the module docstring)."""
    from . import data as ftdata
    from .amp import Precision
    from .experiment import default_optimizer
    from .models import load_model
    from .param_groups import decay_param_groups
    from .train import evaluate, pick_device, set_seed, train

    device = pick_device(device, verbose=False)
    splits = ftdata.profile_splits(profile)
    tokenizer = ftdata.cached_tokenizer(profile.model_id)
    set_seed(0)
    t0 = time.perf_counter()
    model = load_model(profile.model_id).to(device)
    overhead = time.perf_counter() - t0
    precision = Precision(profile.amp, device, verbose=False)
    optimizer = default_optimizer(decay_param_groups(model, profile.weight_decay), profile.lr, device)
    loader = ftdata.make_loader(splits["train"], tokenizer, profile.batch_size, shuffle=True, seed=0, group_by_length=True)
    batches = list(loader)
    # batches spread over the epoch: a length-grouped epoch starts with its longest batches
    stride = max(1, len(batches) // (measure_steps + warmup_steps))
    chosen = batches[::stride][: measure_steps + warmup_steps]
    history = train(model, chosen, optimizer, precision=precision, max_grad_norm=1.0, device=device, progress=False)
    timed = history.steps[warmup_steps:] or history.steps
    train_per_s = sum(r["items"] for r in timed) / sum(r["time_s"] for r in timed)
    val = splits["validation"]
    subset = val.select(range(min(eval_sentences, len(val))))
    eval_loader = ftdata.make_loader(subset, tokenizer, profile.eval_batch_size, shuffle=False, group_by_length=True)
    evaluate(model, eval_loader, device, precision)  # warm-up
    t0 = time.perf_counter()
    evaluate(model, eval_loader, device, precision)
    eval_per_s = len(subset) / (time.perf_counter() - t0)
    return Throughput(str(device), precision.name, train_per_s, eval_per_s, overhead + 2.0)


def table(profile, throughput: Throughput):
    """Predicted minutes per notebook (a DataFrame) from the plans and the measured throughput."""
    import pandas as pd

    from . import plan as ftplan

    rows = []
    for number in sorted(ftplan.PLANS):
        p = ftplan.plan(number, profile)
        s = ftplan.seconds(p, profile, throughput.train_per_s, throughput.eval_per_s, throughput.overhead_s)
        rows.append({"notebook": p.notebook, "runs": p.n_runs,
                     "training examples": sum(r.count * r.train_examples * r.epochs for r in p.runs),
                     "validation passes": sum(r.count * r.epochs * r.evals_per_epoch for r in p.runs),
                     "predicted min": s / 60})
    frame = pd.DataFrame(rows).set_index("notebook")
    frame.loc["all notebooks"] = [frame["runs"].sum(), frame["training examples"].sum(),
                                  frame["validation passes"].sum(), frame["predicted min"].sum()]
    return frame


def main(profile_name: str | None = None) -> int:
    from .notebook import machine_description
    from .profiles import get_profile

    profile = get_profile(profile_name)
    print(f"profile {profile.name}; {machine_description()}")
    start = time.perf_counter()
    throughput = measure(profile)
    print(f"measured in {time.perf_counter() - start:.0f} s on {throughput.device} ({throughput.precision}): "
          f"training {throughput.train_per_s:.0f} examples/s, evaluation {throughput.eval_per_s:.0f} sentences/s, "
          f"{throughput.overhead_s:.0f} s per run to load")
    from .plan import PLANS

    if not PLANS:
        print("no notebook declares its plan in ftcourse/plan.py yet: nothing to predict", file=sys.stderr)
        return 1
    frame = table(profile, throughput)
    print(frame.to_string(float_format=lambda v: f"{v:.1f}"))
    return 0
