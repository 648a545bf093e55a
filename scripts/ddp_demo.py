"""Data-parallel fine-tuning on CPU: N processes train as one process does at the same global batch.

    torchrun --standalone --nproc-per-node 2 scripts/ddp_demo.py

(``accelerate launch --cpu --num_processes 2`` starts one process, not two: with ``--cpu`` it always uses
the single-process launcher. torchrun starts two, joined by gloo.)

A tiny BERT built from a config (no download), synthetic sentences whose label is "token 7 occurs", dropout
off, global batch 16. Every process runs ``ftcourse.train.train(..., accelerator=Accelerator(cpu=True))``
on its share of each batch (16 ÷ processes rows; the loop prepares model, optimizer and loaders itself),
then trains the same model alone at batch 16, without an accelerator, and the main process prints both
validation accuracies. float64, so that the two runs differ only by rounding far below anything that could
change a prediction (the order of the sums differs: 2 × 8 rows are not 16 rows).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ftcourse.schedules import get_schedule  # noqa: E402
from ftcourse.train import set_seed, train  # noqa: E402

GLOBAL_BATCH, TRAIN_ROWS, VAL_ROWS, SEQ, EPOCHS, SEED = 16, 200, 101, 12, 3, 0


def sentences(n: int, seed: int) -> list[dict]:
    """n padded sentences of random tokens; label 1 when token 7 occurs in it."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(4, SEQ + 1, (), generator=g))
        ids = torch.randint(10, 100, (SEQ,), generator=g)
        label = int(torch.randint(0, 2, (), generator=g))
        if label:
            ids[int(torch.randint(1, length, (), generator=g))] = 7
        mask = (torch.arange(SEQ) < length).long()
        rows.append({"input_ids": ids * mask, "attention_mask": mask, "labels": torch.tensor(label)})
    return rows


def tiny_bert():
    import transformers as tf

    config = tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=SEQ, num_labels=2,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tf.BertForSequenceClassification(config).double()


def fine_tune(batch_size: int, accelerator=None):
    """Train a fresh model (seeded) at ``batch_size`` rows a batch in this process; return it and its history."""
    set_seed(SEED)
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    train_loader = torch.utils.data.DataLoader(sentences(TRAIN_ROWS, 1), batch_size=batch_size, shuffle=True,
                                               generator=torch.Generator().manual_seed(SEED))
    val_loader = torch.utils.data.DataLoader(sentences(VAL_ROWS, 2), batch_size=8)
    steps = EPOCHS * -(-TRAIN_ROWS // GLOBAL_BATCH)  # optimizer steps of the global batch
    scheduler = get_schedule("linear", optimizer, num_warmup_steps=steps // 10, num_training_steps=steps)
    history = train(model, train_loader, optimizer, scheduler=scheduler, epochs=EPOCHS, eval_loader=val_loader,
                    accelerator=accelerator, progress=False)
    return model, history


def main() -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    world = accelerator.num_processes
    if world > 1:
        torch.set_num_threads(1)  # processes x threads above the cores make OpenMP threads spin-wait (~10x slower)
    if GLOBAL_BATCH % world:
        raise SystemExit(f"the global batch {GLOBAL_BATCH} must be divisible by the {world} processes")
    say = accelerator.print  # the main process only
    say(f"world size {world} ({accelerator.distributed_type.name}, {accelerator.device}, "
        f"{torch.get_num_threads()} thread(s) a process)")
    say(f"global batch {GLOBAL_BATCH} = {world} process(es) x {GLOBAL_BATCH // world} rows")
    parallel, history = fine_tune(GLOBAL_BATCH // world, accelerator)
    alone, alone_history = fine_tune(GLOBAL_BATCH)  # every process, so none waits for the main one
    accuracy, alone_accuracy = history.evals[-1]["val_accuracy"], alone_history.evals[-1]["val_accuracy"]
    gap = max(float((a - b).abs().max()) for a, b in zip(parallel.state_dict().values(), alone.state_dict().values()))
    say(f"steps: {len(history.steps)} ({len(alone_history.steps)} alone)")
    say(f"final validation accuracy, {world} process(es): {accuracy:.4f} ({VAL_ROWS} rows)")
    say(f"final validation accuracy, 1 process at batch {GLOBAL_BATCH}: {alone_accuracy:.4f}")
    say(f"same accuracy: {accuracy == alone_accuracy}; largest weight difference {gap:.1e}")
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
