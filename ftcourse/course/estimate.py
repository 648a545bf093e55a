"""``python -m ftcourse estimate``: how long each notebook will take here, measured in about a minute.

Course harness (not a technique module).

It measures, on the current device and with the profile's model, batch sizes, precision and length
grouping: training examples per second (``measure_steps`` optimizer steps on batches spread over a
whole length-grouped epoch, after warm-up steps), evaluation sentences per second (a length-sorted
pass over validation sentences), and the per-run overhead (loading the model, warm: after a first load).
Each is the median of ``windows`` (3) timings in a row: these machines have busy moments, and one
17-second window once measured 52 training examples/s where the notebooks that followed ran at 75.
It then applies them to every notebook's declaration (``ftcourse.course.declarations``: its runs as recipes,
and its other work) and prints predicted minutes per notebook and for the whole course: profile ->
declaration -> throughput -> table.
"""
from __future__ import annotations

import statistics
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


def window_batches(n_batches: int, steps: int, windows: int) -> list[list[int]]:
    """Batch indices of ``windows`` timing windows of ``steps`` batches each. Every window spans the whole
    length-grouped epoch (which starts with its longest batches), at its own offset, so the windows time
    the same mix of lengths on different batches."""
    if steps < 1 or windows < 1:
        raise ValueError(f"steps and windows must be >= 1, got steps={steps}, windows={windows}")
    if n_batches <= steps:
        return [list(range(n_batches)) for _ in range(windows)]
    spacing = n_batches / steps
    chosen = [[int((k + w / windows) * spacing) for k in range(steps)] for w in range(windows)]
    return chosen


def median_rate(items: list[float], seconds: list[float]) -> float:
    """The median of the windows' rates (items per second): one window slowed by a busy moment of the
    machine does not move it, as it would move a single window's rate or the pooled one."""
    if len(items) != len(seconds) or not items:
        raise ValueError(f"items and seconds must be non-empty and of one length, got {len(items)} and {len(seconds)}")
    return statistics.median(i / s for i, s in zip(items, seconds))


def measure(profile, measure_steps: int = 15, warmup_steps: int = 3, eval_sentences: int = 512, windows: int = 3,
            device: str | torch.device | None = None) -> Throughput:
    """Training and evaluation throughput of ``profile``'s model here (see the module docstring): the median
    over ``windows`` timing windows of each."""
    from ..amp import Precision
    from ..param_groups import decay_param_groups
    from ..train import evaluate, pick_device, set_seed, train
    from . import data as ftdata
    from .pretrained import load_model
    from .runner import default_optimizer

    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    device = pick_device(device, verbose=False)
    splits = ftdata.profile_splits(profile)
    tokenizer = ftdata.cached_tokenizer(profile.model_id)
    set_seed(0)
    load_model(profile.model_id)  # the first load also pays imports and cold file reads, once a notebook
    loads = []
    for _ in range(windows):  # a run's load: warm, as every run after a notebook's first
        t0 = time.perf_counter()
        model = load_model(profile.model_id).to(device)
        loads.append(time.perf_counter() - t0)
    overhead = statistics.median(loads)
    precision = Precision(profile.amp, device, verbose=False)
    optimizer = default_optimizer(decay_param_groups(model, profile.weight_decay), profile.lr, device)
    loader = ftdata.make_loader(splits["train"], tokenizer, profile.batch_size, shuffle=True, seed=0, group_by_length=True)
    batches = list(loader)
    warmup = [batches[i] for i in window_batches(len(batches), warmup_steps, 1)[0]]
    train(model, warmup, optimizer, precision=precision, max_grad_norm=1.0, device=device, progress=False)
    train_items, train_seconds = [], []
    for indices in window_batches(len(batches), measure_steps, windows):
        history = train(model, [batches[i] for i in indices], optimizer, precision=precision, max_grad_norm=1.0,
                        device=device, progress=False)
        train_items.append(sum(r["items"] for r in history.steps))
        train_seconds.append(sum(r["time_s"] for r in history.steps))
    val = splits["validation"]
    subset = val.select(range(min(eval_sentences, len(val))))
    eval_loader = ftdata.make_loader(subset, tokenizer, profile.eval_batch_size, shuffle=False, group_by_length=True)
    evaluate(model, eval_loader, device, precision)  # warm-up
    eval_seconds = []
    for _ in range(windows):
        t0 = time.perf_counter()
        evaluate(model, eval_loader, device, precision)
        eval_seconds.append(time.perf_counter() - t0)
    return Throughput(str(device), precision.name, median_rate(train_items, train_seconds),
                      median_rate([len(subset)] * windows, eval_seconds), overhead + 2.0)


def table(profile, throughput: Throughput):
    """Predicted minutes per notebook (a DataFrame): each notebook's declaration at the measured throughput."""
    import pandas as pd

    from . import declarations as declared

    rows = []
    for number in sorted(declared.DECLARATIONS):
        d = declared.declaration(number, profile)
        runs = d.runs()
        s = declared.seconds(d, throughput.train_per_s, throughput.eval_per_s, throughput.overhead_s)
        rows.append({"notebook": d.notebook, "runs": len(runs),
                     "training examples": sum(declared.train_examples(r) for r in runs),
                     "predicted min": s / 60})
    frame = pd.DataFrame(rows).set_index("notebook")
    frame.loc["all notebooks"] = [frame["runs"].sum(), frame["training examples"].sum(), frame["predicted min"].sum()]
    return frame


def save(path, profile, throughput: Throughput, frame) -> None:
    """Write the measured throughput and the predicted seconds per notebook to ``path`` (JSON), for ``compare``."""
    import dataclasses
    import json
    from pathlib import Path

    from .notebook import machine_description

    predicted = {name: round(float(minutes) * 60, 1) for name, minutes in frame["predicted min"].items()
                 if name != "all notebooks"}
    Path(path).write_text(json.dumps({"profile": profile.name, "machine": machine_description(),
                                      "measured_at": time.strftime("%Y-%m-%d %H:%M"),
                                      "throughput": dataclasses.asdict(throughput), "predicted_s": predicted,
                                      "runs": {name: int(r) for name, r in frame["runs"].items() if name != "all notebooks"}},
                                     indent=1) + "\n")


def measured_seconds(source, profile_name: str | None = None) -> dict[str, float]:
    """Measured seconds per notebook (by stem, "07_llrd") from ``source``: a folder of executed notebooks (their
    timing footers; those executed in another profile than ``profile_name`` are left out) or the JSON of notebook
    run times that ``conftest.py`` writes under nbval (``FTCOURSE_NOTEBOOK_TIMES``)."""
    import json
    from pathlib import Path

    from .notebook import read_footer

    source = Path(source)
    if source.is_dir():
        found = {}
        for path in sorted(source.glob("[0-9][0-9]_*.ipynb")):
            footer = read_footer(path)
            if footer and (profile_name is None or footer["profile"] == profile_name):
                found[path.stem] = float(footer["seconds"])
        return found
    if source.suffix == ".json" and source.is_file():
        return {Path(name).stem: float(seconds) for name, seconds in json.loads(source.read_text()).items()}
    raise ValueError(f"--measured must be a folder of executed notebooks or a .json of notebook times, got {str(source)!r}")


def compare(saved_path, measured_source):
    """Predicted (``save``'s JSON) against measured minutes: a DataFrame with the error of each notebook."""
    import json
    from pathlib import Path

    import pandas as pd

    saved_path = Path(saved_path)
    if not saved_path.is_file():
        raise ValueError(f"--compare must be the JSON that `estimate --save` wrote, got {str(saved_path)!r} (no such file)")
    saved = json.loads(saved_path.read_text())
    measured = measured_seconds(measured_source, saved["profile"])
    rows = [{"notebook": name, "runs": saved["runs"][name], "predicted (min)": predicted / 60,
             "measured (min)": measured[name] / 60, "error": predicted / measured[name] - 1}
            for name, predicted in saved["predicted_s"].items() if name in measured]
    if not rows:
        raise ValueError(f"{measured_source}: no measured time of any notebook of profile {saved['profile']!r}")
    return saved, pd.DataFrame(rows).set_index("notebook")


def markdown(frame) -> str:
    """The comparison as the markdown table docs/estimates.md shows, with a total row."""
    lines = ["| notebook | runs | predicted (min) | measured (min) | error |", "|---|---|---|---|---|"]
    for name, r in frame.iterrows():
        lines.append(f"| {name} | {int(r['runs'])} | {r['predicted (min)']:.1f} | {r['measured (min)']:.1f} | {r['error']:+.0%} |")
    predicted, measured = frame["predicted (min)"].sum(), frame["measured (min)"].sum()
    lines.append(f"| all | {frame['runs'].sum()} | {predicted:.1f} | {measured:.1f} | {predicted / measured - 1:+.0%} |")
    return "\n".join(lines)


def main(profile_name: str | None = None, save_path=None, compare_path=None, measured=None) -> int:
    from .notebook import machine_description, set_threads
    from .preflight import PreflightError, check

    if compare_path is not None or measured is not None:
        if compare_path is None or measured is None:
            print("--compare FILE and --measured SOURCE go together", file=sys.stderr)
            return 2
        try:
            saved, frame = compare(compare_path, measured)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        t = saved["throughput"]
        print(f"profile {saved['profile']}; estimate of {saved['measured_at']} on {saved['machine']}: training "
              f"{t['train_per_s']:.0f} examples/s, evaluation {t['eval_per_s']:.0f} sentences/s, {t['overhead_s']:.0f} s a run")
        print(markdown(frame))
        within = int((frame["error"].abs() <= 0.30).sum())
        print(f"errors from {frame['error'].min():+.0%} to {frame['error'].max():+.0%}; {within} of {len(frame)} "
              "notebooks within ±30%")
        return 0
    try:
        profile, lines, threads = check(profile_name)
    except PreflightError as err:
        print(f"ftcourse estimate: {err}", file=sys.stderr)
        return 2
    set_threads(threads)  # the thread count the notebooks would choose now, so the prediction is for it
    print(f"profile {profile.name}; {machine_description()}")
    start = time.perf_counter()
    throughput = measure(profile)
    print(f"measured in {time.perf_counter() - start:.0f} s on {throughput.device} ({throughput.precision}): "
          f"training {throughput.train_per_s:.0f} examples/s, evaluation {throughput.eval_per_s:.0f} sentences/s, "
          f"{throughput.overhead_s:.0f} s per run to load")
    frame = table(profile, throughput)
    print(frame.to_string(float_format=lambda v: f"{v:.1f}"))
    if save_path is not None:
        save(save_path, profile, throughput, frame)
        print(f"saved to {save_path} (compare with: python -m ftcourse estimate --compare {save_path} --measured SOURCE)")
    return 0
