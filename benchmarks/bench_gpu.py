"""Training and evaluation throughput on one CUDA GPU, for random models the size of the course's two.

Models (random weights built from a config: nothing is downloaded, no ``datasets``):

* ``minilm``: BERT, hidden 384, 6 layers, 12 heads, intermediate 1536, vocabulary 30522 (the size of
  ``all-MiniLM-L6-v2``, the ci and cpu profiles' model);
* ``roberta-base``: RoBERTa, hidden 768, 12 layers, 12 heads, intermediate 3072, vocabulary 50265 (the
  gpu profile's model).

For each model and precision (``fp32``; ``fp16`` with a ``GradScaler``; ``bf16`` only where the GPU
computes it natively, compute capability >= 8.0, else skipped with a note), with fused
``torch.optim.AdamW`` and gradient clipping at 1.0, on fixed random batches of ``--batch-size``
full-length sequences of ``--seq-len`` tokens:

* **step**: one optimizer step and nothing else (autocast forward, cross-entropy, scaled backward,
  unscale, clip, fused AdamW step, scaler update, zero_grad), batches already on the GPU; mean over
  ``--steps`` steps after ``--warmup`` warm-up steps, between two ``torch.cuda.synchronize()``;
* **train()**: the course's loop, ``ftcourse.train.train``, on the same batches (moved to the GPU
  each step, as a loader's would be): the mean of its own per-step times after the warm-up (each
  step ends with ``torch.cuda.synchronize``), so the loop's bookkeeping is included;
* **eval**: forward only, ``model.eval()``, ``torch.no_grad()``, under the same autocast;
* **peak MiB**: ``ftcourse.memory.PeakMemory`` around the ``train()`` call (CUDA max allocated).

It prints one markdown table, headed by the GPU's name and compute capability and the torch and
transformers versions. About a minute on a T4-class GPU with the defaults.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--seq-len 64] [--batch-size 32] [--steps 20]
        [--warmup 5] [--models minilm roberta-base] [--precisions fp32 fp16 bf16]

Without a CUDA device it says so and exits with status 2. ``scripts/gpu_check.sh`` runs it after
the CUDA tests.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

MODELS = {
    "minilm": ("bert", dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                            vocab_size=30522, max_position_embeddings=512)),
    "roberta-base": ("roberta", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, vocab_size=50265, max_position_embeddings=514,
                                     pad_token_id=1, type_vocab_size=1)),
}
PRECISIONS = ("fp32", "fp16", "bf16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (all real, no padding)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per batch")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    args = parser.parse_args(argv)
    for name in ("seq_len", "batch_size", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.seq_len > 512:
        parser.error("--seq-len must be <= 512 (the models' position embeddings)")
    return args


def build_model(name: str, device):
    import torch
    import transformers as tf

    family, sizes = MODELS[name]
    config_cls, model_cls = {"bert": (tf.BertConfig, tf.BertForSequenceClassification),
                             "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification)}[family]
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: much faster than on the CPU for roberta-base
        model = model_cls(config_cls(num_labels=2, **sizes))
    return model


def make_batches(name: str, batch_size: int, seq_len: int, n: int = 4):
    import torch

    vocab = MODELS[name][1]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1000, vocab, (batch_size, seq_len), generator=g),
             "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch_size,), generator=g)} for _ in range(n)]


def autocast(device, mode):
    import contextlib

    import torch

    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def time_raw_steps(model, batches, mode, device, steps, warmup) -> float:
    """Mean ms of one bare optimizer step."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None
    gpu = [{k: v.to(device) for k, v in b.items()} for b in batches]
    model.train()

    def step(batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast(device, mode):
            logits = model(**inputs).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(gpu[i % len(gpu)])
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(gpu[i % len(gpu)])
    torch.cuda.synchronize(device)
    del optimizer
    return (time.perf_counter() - t0) / steps * 1000


def time_train_loop(model, batches, mode, device, steps, warmup):
    """Mean ms per step of ftcourse.train.train after the warm-up, skipped steps, peak MiB."""
    import torch

    from ftcourse.amp import Precision
    from ftcourse.train import train

    total = warmup + steps
    loader = [batches[i % len(batches)] for i in range(total)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    precision = Precision(mode, device, verbose=False)
    history = train(model, loader, optimizer, precision=precision, max_steps=total, progress=False)
    times = [r["time_s"] for r in history.steps[warmup:]]
    del optimizer
    return sum(times) / len(times) * 1000, history.skipped_steps, history.peak_memory_mb


def time_eval(model, batches, mode, device, steps, warmup) -> float:
    import torch

    gpu = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in batches]
    model.eval()
    with torch.no_grad():
        for i in range(warmup):
            with autocast(device, mode):
                model(**gpu[i % len(gpu)])
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps):
            with autocast(device, mode):
                model(**gpu[i % len(gpu)])
        torch.cuda.synchronize(device)
    model.train()
    return (time.perf_counter() - t0) / steps * 1000


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False): this benchmark needs a GPU",
              file=sys.stderr)
        return 2
    import transformers

    from ftcourse.amp import cuda_has_native_bf16

    device = torch.device("cuda", torch.cuda.current_device())
    major, minor = torch.cuda.get_device_capability(device)
    props = torch.cuda.get_device_properties(device)
    native_bf16 = cuda_has_native_bf16(device)
    start = time.perf_counter()
    print("## ftcourse GPU benchmark\n")
    print(f"- GPU: {torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
          f"{props.total_memory / 2**30:.1f} GiB")
    print(f"- torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
          f"transformers {transformers.__version__}; fp32 matmul precision '{torch.get_float32_matmul_precision()}'")
    print(f"- batch {args.batch_size} x {args.seq_len} tokens, fused AdamW, clip 1.0; mean of {args.steps} steps "
          f"after {args.warmup} warm-up steps\n")
    print("| model | params (M) | precision | step ms | step samples/s | train() ms | train() samples/s "
          "| skipped | eval ms | eval samples/s | peak MiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for name in args.models:
        model = build_model(name, device)
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        batches = make_batches(name, args.batch_size, args.seq_len)
        for mode in args.precisions:
            if mode == "bf16" and not native_bf16:
                note = (f"bf16 skipped: compute capability {major}.{minor} < 8.0 has no native bfloat16 "
                        "(autocast would emulate it; ftcourse's Precision('bf16') falls back to fp16)")
                if note not in notes:
                    notes.append(note)
                print(f"| {name} | {params_m:.1f} | bf16 | skipped (not native) | | | | | | | |", flush=True)
                continue
            try:
                step_ms = time_raw_steps(model, batches, mode, device, args.steps, args.warmup)
                loop_ms, skipped, peak = time_train_loop(model, batches, mode, device, args.steps, args.warmup)
                eval_ms = time_eval(model, batches, mode, device, args.steps, args.warmup)
            except torch.cuda.OutOfMemoryError:
                notes.append(f"{name} {mode}: out of GPU memory at batch {args.batch_size} x {args.seq_len}")
                print(f"| {name} | {params_m:.1f} | {mode} | out of memory | | | | | | | |", flush=True)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            per_s = lambda ms: args.batch_size / (ms / 1000)  # noqa: E731
            print(f"| {name} | {params_m:.1f} | {mode} | {step_ms:.1f} | {per_s(step_ms):.0f} | {loop_ms:.1f} | "
                  f"{per_s(loop_ms):.0f} | {skipped} | {eval_ms:.1f} | {per_s(eval_ms):.0f} | {peak:.0f} |", flush=True)
            gc.collect()
            torch.cuda.empty_cache()
        del model
        gc.collect()
        torch.cuda.empty_cache()
    print()
    for note in notes:
        print(f"- {note}")
    print("- skipped: optimizer steps of the train() run that the GradScaler skipped (fp16: the first steps may "
          "overflow at its initial scale 2^16)")
    print(f"- total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
