"""Step time of the from-scratch optimizers (ftcourse.optim) against torch.optim on a MiniLM-sized model.

The parameter list has the shapes of all-MiniLM-L6-v2 (BERT, hidden 384, 6 layers, 12 heads,
intermediate 1536, vocabulary 30522, 512 positions: ~22.7M float32 parameters in ~100 tensors),
with fixed random gradients. For each optimizer it prints the median time of one ``step()`` for
ours, torch's default CPU path (foreach=None, which on CPU is the per-tensor loop), foreach=True
and fused=True (where torch has a fused kernel for that optimizer), and ours / torch default.
LARS and LAMB have no torch counterpart: they get times only.

Ours are plain per-tensor loops, as torch's default CPU path is: the ratio should be about 1.

The variants of one optimizer are timed in round-robin (one step of each, then again), and the
ratio is the median of the per-round ratios ours/default, each from two back-to-back steps: on a
shared machine whose load changes from second to second, that pairing keeps the ratio honest even
when the absolute times are not. All variants share one parameter list and its gradients (every
optimizer here reads ``.grad`` without modifying it), so memory stays at a few hundred MB.

    python benchmarks/bench_optimizers.py [--repeats 10] [--threads 1]

It runs on one thread by default (``--threads 0``: torch's default): on a small or shared machine,
multi-threaded element-wise kernels time the machine's other load more than the optimizer (on the
2-core development machine with other jobs running, 2 threads made every step 3-10x slower and
the run took minutes instead of ~30 s).

This is a benchmark, not a test: the course's target is AdamW's ratio <= 1.25.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from transformers import BertConfig, BertModel

import ftcourse.optim as ours

MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              vocab_size=30522, max_position_embeddings=512)

# name -> (our class, torch class or None, kwargs shared by both, torch supports fused=True on CPU)
OPTIMIZERS = {
    "SGD (momentum 0.9)": (ours.SGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9, weight_decay=0.01), True),
    "RMSprop": (ours.RMSprop, torch.optim.RMSprop, dict(lr=1e-3), False),
    "Adagrad": (ours.Adagrad, torch.optim.Adagrad, dict(lr=1e-2, weight_decay=0.01), True),
    "Adam": (ours.Adam, torch.optim.Adam, dict(lr=1e-3), True),
    "AdamW": (ours.AdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01), True),
    "LARS (momentum 0.9)": (ours.LARS, None, dict(lr=1.0, momentum=0.9, weight_decay=1e-4), False),
    "LAMB": (ours.LAMB, None, dict(lr=1e-3, weight_decay=0.01), False),
}


def minilm_shapes() -> list[torch.Size]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = BertModel(BertConfig(**MINILM))
    return [p.shape for p in model.parameters()]


def make_params(shapes, seed=0) -> list[torch.nn.Parameter]:
    """Parameters ~ N(0, 0.02²) with fixed gradients ~ N(0, 1e-6)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02)
        p.grad = torch.randn(shape, generator=gen) * 1e-3
        params.append(p)
    return params


def step_time(optimizer) -> float:
    start = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start


def bench(builders: dict, params, repeats: int, warmup: int = 1) -> tuple[dict[str, float], float | None]:
    """Median step time (ms) of each optimizer in ``builders`` (timed in round-robin), and the median
    of the per-round ratios ``ours / torch default`` (None without a torch default)."""
    optimizers = {key: build(params) for key, build in builders.items()}
    for opt in optimizers.values():
        for _ in range(warmup):  # allocate the state, warm the allocator
            opt.step()
    times = {key: [] for key in optimizers}
    for _ in range(repeats):
        for key, opt in optimizers.items():
            times[key].append(step_time(opt))
    medians = {key: 1e3 * statistics.median(t) for key, t in times.items()}
    ratio = None
    if "torch default" in times:
        ratio = statistics.median(a / b for a, b in zip(times["ours"], times["torch default"]))
    return medians, ratio


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant (default 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1; 0 keeps torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = minilm_shapes()
    params = make_params(shapes)
    n = sum(s.numel() for s in shapes)
    print(f"MiniLM-sized parameter list: {len(shapes)} tensors, {n / 1e6:.1f}M float32 parameters; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} steps")

    rows = []
    for name, (our_cls, torch_cls, kw, has_fused) in OPTIMIZERS.items():
        builders = {"ours": lambda p, c=our_cls, kw=kw: c(p, **kw)}
        if torch_cls is not None:
            builders["torch default"] = lambda p, c=torch_cls, kw=kw: c(p, **kw)
            builders["torch foreach"] = lambda p, c=torch_cls, kw=kw: c(p, foreach=True, **kw)
            if has_fused:
                builders["torch fused"] = lambda p, c=torch_cls, kw=kw: c(p, fused=True, **kw)
        ms, ratio = bench(builders, params, args.repeats)
        rows.append({"optimizer": name, **{f"{k} (ms)": v for k, v in ms.items()}, "ours / torch default": ratio})

    table = pd.DataFrame(rows).set_index("optimizer")
    columns = ["ours (ms)", "torch default (ms)", "torch foreach (ms)", "torch fused (ms)", "ours / torch default"]
    table = table.reindex(columns=columns)
    print(table.to_string(float_format=lambda x: f"{x:.2f}", na_rep="-"))
    ratio = table.loc["AdamW", "ours / torch default"]
    print(f"AdamW ours / torch default = {ratio:.2f} ({'OK' if ratio <= 1.25 else 'ABOVE'} the 1.25 target)")
    return table


if __name__ == "__main__":
    main()
