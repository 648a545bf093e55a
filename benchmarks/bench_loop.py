"""Throughput of the course's training loop (``ftcourse.train.train``) against a raw loop and HF ``Trainer``.

(a) Loop overhead: ``train()`` against a raw ``forward + loss + backward + clip + optimizer step +
    scheduler step`` loop over the *same* pre-collated batches (same model, fused AdamW, schedule,
    gradient clipping at 1.0). The raw loop does the same arithmetic and nothing else (no history,
    no ``.item()`` per step, no progress bar), so the ratio is what the loop's bookkeeping costs.
    The two are timed alternately, ``--repeats`` times each; the ratio is the median of the
    per-pair ratios (robust to a shared machine's load changing from minute to minute).
(b) Against ``transformers.Trainer`` with its default settings (``adamw_torch_fused``, linear
    schedule, max_grad_norm 1.0, its RandomSampler and DataCollatorWithPadding), on the same model
    (MiniLM, the cpu profile), data (the cpu profile's SST-2 training subset), batch size 16,
    ``--steps`` optimizer steps, lr, weight decay (not on biases/LayerNorm in both), and warmup
    (10% of the steps, linear). The course loop is ``make_loader`` + ``decay_param_groups`` +
    ``default_optimizer`` (fused AdamW) + ``get_schedule("linear")`` + ``train``, with
    ``make_loader(group_by_length=True)`` (transformers' LengthGroupedSampler: what ``fine_tune``
    does by default) and, for reference, with random batches (Trainer's default sampling).
    Throughput is samples / wall-clock seconds of the whole training call for every variant (data
    loading included, model loading and evaluation excluded); accuracy is on the test half.
    Per seed, the variants run back to back in a rotating order.

    python benchmarks/bench_loop.py [--steps 100] [--seeds 0 1] [--repeats 3] [--threads 0]

``--threads 0`` (default) keeps torch's default thread count (the machine's cores); ``--threads 1``
runs single-threaded. On the shared 2-core development machine, run it under the heavy-job lock:
``flock /tmp/heavy.lock python benchmarks/bench_loop.py``. It prints tables; it is a
benchmark, not a test (targets: (a) ratio >= 0.95; (b) ``fine_tune``'s default >= 1.5x Trainer's
default samples/s, with accuracy within seed noise).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import pandas as pd
import torch

from ftcourse.course import data as ftdata
from ftcourse.course.runner import default_optimizer
from ftcourse.course.pretrained import load_model
from ftcourse.param_groups import decay_param_groups
from ftcourse.course.profiles import get_profile
from ftcourse.schedules import get_schedule
from ftcourse.train import evaluate, set_seed, train


def padding_fraction(batches) -> float:
    masks = [b["attention_mask"] for b in batches]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def fresh(profile, seed, lr, steps):
    """Model, fused AdamW on decay groups and a linear schedule with 10% warmup, seeded."""
    set_seed(seed)
    model = load_model(profile.model_id)
    optimizer = default_optimizer(decay_param_groups(model, profile.weight_decay), lr, torch.device("cpu"))
    scheduler = get_schedule("linear", optimizer, round(0.1 * steps), steps)
    return model, optimizer, scheduler


def raw_loop(model, batches, optimizer, scheduler) -> None:
    model.train()
    for batch in batches:
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids")).logits
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def bench_overhead(profile, splits, tokenizer, steps, repeats) -> pd.DataFrame:
    loader = ftdata.make_loader(splits["train"], tokenizer, 16, shuffle=True, seed=0)
    batches = []
    while len(batches) < steps:
        batches.extend(loader)
    batches = batches[:steps]
    times = {"course loop": [], "raw loop": []}
    for r in range(repeats):
        order = ["course loop", "raw loop"] if r % 2 == 0 else ["raw loop", "course loop"]
        for name in order:
            model, optimizer, scheduler = fresh(profile, 0, profile.lr, steps)
            start = time.perf_counter()
            if name == "raw loop":
                raw_loop(model, batches, optimizer, scheduler)
            else:
                train(model, batches, optimizer, scheduler=scheduler, max_grad_norm=1.0, progress=False, device="cpu")
            times[name].append(time.perf_counter() - start)
    n = 16 * steps
    ratio = statistics.median(r / c for c, r in zip(times["course loop"], times["raw loop"]))
    rows = [{"loop": name, "median s": statistics.median(t), "samples/s (median)": n / statistics.median(t),
             "runs": len(t)} for name, t in times.items()]
    table = pd.DataFrame(rows).set_index("loop")
    table["throughput vs raw"] = [ratio, 1.0]
    return table


def run_course(profile, splits, tokenizer, seed, steps, group_by_length):
    model, optimizer, scheduler = fresh(profile, seed, profile.lr, steps)
    loader = ftdata.make_loader(splits["train"], tokenizer, 16, shuffle=True, seed=seed, group_by_length=group_by_length)
    start = time.perf_counter()
    train(model, loader, optimizer, scheduler=scheduler, max_steps=steps, epochs=10**6, max_grad_norm=1.0,
          progress=False, device="cpu")
    return model, time.perf_counter() - start


def run_trainer(profile, splits, tokenizer, seed, steps):
    from transformers import Trainer, TrainingArguments

    set_seed(seed)
    model = load_model(profile.model_id)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=16, max_steps=steps, learning_rate=profile.lr,
            weight_decay=profile.weight_decay, warmup_steps=round(0.1 * steps), lr_scheduler_type="linear",
            seed=seed, use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True, logging_strategy="no",
        )
        trainer = Trainer(model=model, args=args, train_dataset=splits["train"], processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        assert args.optim == "adamw_torch_fused" and type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer).__name__ == "AdamW"
    return model, seconds


def bench_vs_trainer(profile, splits, tokenizer, steps, seeds) -> tuple[pd.DataFrame, pd.DataFrame]:
    test_loader = ftdata.make_loader(splits["test"], tokenizer, profile.eval_batch_size, shuffle=False,
                                     group_by_length=True)
    variants = ["HF Trainer (defaults)", "course loop, random batches", "course loop, length-grouped (fine_tune's default)"]
    rows = []
    for i, seed in enumerate(seeds):
        order = variants[i % 3:] + variants[:i % 3]
        for name in order:
            if name == "HF Trainer (defaults)":
                model, seconds = run_trainer(profile, splits, tokenizer, seed, steps)
            else:
                model, seconds = run_course(profile, splits, tokenizer, seed, steps, "length-grouped" in name)
            acc = evaluate(model, test_loader, torch.device("cpu"))["accuracy"]
            rows.append({"variant": name, "seed": seed, "seconds": seconds, "samples/s": 16 * steps / seconds,
                         "test accuracy": acc})
            print(f"  {name}, seed {seed}: {16 * steps / seconds:.1f} samples/s, test accuracy {acc:.4f}", flush=True)
    runs = pd.DataFrame(rows)
    trainer_speed = runs[runs.variant == variants[0]].set_index("seed")["samples/s"]
    runs["vs Trainer"] = [r["samples/s"] / trainer_speed[r["seed"]] for _, r in runs.iterrows()]
    summary = runs.groupby("variant", sort=False).agg(
        samples_per_s=("samples/s", "mean"), samples_per_s_std=("samples/s", "std"),
        ratio_vs_trainer=("vs Trainer", "mean"), test_accuracy=("test accuracy", "mean"),
        test_accuracy_std=("test accuracy", "std"), seeds=("seed", "count")).reindex(variants)
    return summary, runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--overhead-steps", type=int, default=40, help="steps per run in part (a)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loop in part (a)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--skip", choices=["a", "b"], default=None, help="skip part (a) or (b)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    profile = get_profile("cpu")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"model {profile.model_id}, SST-2 train subset {profile.train_size}, max_length {profile.max_length}, "
          f"lr {profile.lr}, batch 16")
    splits = ftdata.profile_splits(profile)
    tokenizer = ftdata.cached_tokenizer(profile.model_id)
    for grouped in (False, True):
        loader = ftdata.make_loader(splits["train"], tokenizer, 16, shuffle=True, seed=0, group_by_length=grouped)
        print(f"padding in the training batches ({'group_by_length' if grouped else 'random batches'}): "
              f"{padding_fraction(list(loader)):.1%}")
    t0 = time.perf_counter()
    if args.skip != "a":
        print(f"\n(a) loop overhead: {args.overhead_steps} steps a run, {args.repeats} runs each, same batches")
        print(bench_overhead(profile, splits, tokenizer, args.overhead_steps, args.repeats).to_string(float_format="%.3f"))
    if args.skip != "b":
        print(f"\n(b) against HF Trainer: {args.steps} steps, batch 16, seeds {args.seeds}")
        summary, _ = bench_vs_trainer(profile, splits, tokenizer, args.steps, args.seeds)
        print(summary.to_string(float_format="%.3f"))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
