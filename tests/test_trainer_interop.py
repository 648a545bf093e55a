"""The course's helpers drive a Hugging Face ``transformers.Trainer`` (transformers 5).

* ``llrd_param_groups`` + ``get_schedule`` go in through ``Trainer(optimizers=(optimizer, scheduler))``:
  every group's lr follows the schedule step by step and the LLRD ratios hold throughout.
* ``reinit_top_layers`` and ``freeze_bottom_layers`` applied before ``Trainer(...)`` stay in effect:
  the Trainer starts from the re-initialised weights, leaves frozen ones bit-identical and builds its
  optimizer from trainable parameters only.
* Which ``TrainingArguments`` correspond to the course's accumulation, mixed precision, evaluation
  frequency and early stopping (``TRAINER_EQUIVALENTS``), each checked on a real Trainer run.

Tiny offline model (tests/conftest.py), a tiny in-memory dataset, CPU, a few steps: a few seconds.
"""
from __future__ import annotations

import math

import pytest

# transformers' Trainer needs accelerate (transformers 5 imports it when a Trainer is built): without it
# every test here would fail on an ImportError that says nothing about the course's helpers.
pytest.importorskip("accelerate")

import datasets  # noqa: E402
import torch  # noqa: E402
from conftest import tiny_classifier  # noqa: E402
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from ftcourse.freezing import freeze_bottom_layers, trainable_param_groups  # noqa: E402
from ftcourse.llrd import block_lrs, llrd_param_groups  # noqa: E402
from ftcourse.models import encoder_layers  # noqa: E402
from ftcourse.reinit import reinit_top_layers  # noqa: E402
from ftcourse.schedules import get_schedule, lr_trace  # noqa: E402
from ftcourse.train import train  # noqa: E402

# course technique -> (ftcourse, TrainingArguments / Trainer). Mirrored in docs/package.md.
TRAINER_EQUIVALENTS = {
    "gradient accumulation": ("train(accumulation_steps=k)", dict(gradient_accumulation_steps=2)),
    "mixed precision (bf16)": ("train(precision='bf16')", dict(bf16=True)),
    "mixed precision (fp16)": ("train(precision='fp16')", dict(fp16=True)),
    "evaluation frequency": ("train(eval_every=n)", dict(eval_strategy="steps", eval_steps=2)),
    "early stopping + best checkpoint": (
        "EarlyStoppingCallback(EarlyStopping(patience), restore=True)",
        dict(eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
             load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True),
    ),
    "warmup + schedule": ("get_schedule(name, opt, W, N)", dict(lr_scheduler_type="linear", warmup_steps=0.1)),
}

N_EXAMPLES, SEQ_LEN = 32, 8


def tiny_dataset(n: int = N_EXAMPLES, seed: int = 0) -> datasets.Dataset:
    """Fixed-length, learnable rows (label 1 iff token 7 is at position 1)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 100, (n, SEQ_LEN), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[labels == 1, 1] = 7
    return datasets.Dataset.from_dict({
        "input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist(),
    })


def args(tmp_path, **kw) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=8,
                per_device_eval_batch_size=16, max_steps=3, logging_steps=1, save_strategy="no",
                disable_tqdm=True, seed=0, dataloader_num_workers=0)
    base.update(kw)
    return TrainingArguments(**base)


class RecordLrs(TrainerCallback):
    """Every group's lr at the start of each optimizer step: the lrs that step uses."""

    def __init__(self):
        self.lrs = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def test_llrd_groups_and_schedule_drive_trainer(tmp_path):
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=3)
    lr, decay, steps, warmup = 1e-3, 0.5, 4, 1
    groups = llrd_param_groups(model, lr=lr, decay=decay, weight_decay=0.01)
    expected_blocks = {"embeddings": lr * decay**3, "layer_0": lr * decay**2, "layer_1": lr * decay, "layer_2": lr, "head": lr}
    assert block_lrs(groups) == pytest.approx(expected_blocks)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = get_schedule("linear", optimizer, warmup, steps)  # sets step 0's lr: 0 (warmup)
    initial = [g["initial_lr"] for g in optimizer.param_groups]
    assert initial == pytest.approx([expected_blocks[g["name"].split(".")[0]] for g in optimizer.param_groups])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    recorder = RecordLrs()
    trainer = Trainer(model=model, args=args(tmp_path, max_steps=steps), train_dataset=tiny_dataset(),
                      optimizers=(optimizer, scheduler), callbacks=[recorder])
    trainer.train()

    # The Trainer used our optimizer and scheduler, not new ones.
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer  # accelerate may wrap it
    assert trainer.lr_scheduler is scheduler
    multipliers = lr_trace("linear", warmup, steps)  # [0, 1, 2/3, 1/3]
    assert len(recorder.lrs) == steps
    for step, lrs in enumerate(recorder.lrs):
        assert lrs == pytest.approx([base * multipliers[step] for base in initial], rel=1e-12, abs=0)
        if multipliers[step] > 0:  # LLRD ratios hold at every step: block lr / top-layer lr = decay ** depth
            ratio = {g["name"]: lr_g / lrs[[h["name"] for h in optimizer.param_groups].index("layer_2.decay")]
                     for g, lr_g in zip(optimizer.param_groups, lrs)}
            assert ratio["embeddings.decay"] == pytest.approx(decay**3)
            assert ratio["layer_0.decay"] == pytest.approx(decay**2)
            assert ratio["head.decay"] == pytest.approx(1.0)
    # The Trainer logs the first group's lr (the embeddings here) once per step.
    logged = [row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row]
    assert len(logged) == steps and max(logged) == pytest.approx(initial[0])
    # Groups keep their names and weight decay (the Trainer did not rebuild them); weights moved.
    assert [g["name"] for g in optimizer.param_groups] == [g["name"] for g in groups]
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if g["name"].endswith("no_decay"))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_reinit_and_freeze_applied_before_trainer_stay_in_effect(tmp_path):
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=3)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(1)
    reinit_names = reinit_top_layers(model, 1)  # top layer + pooler
    frozen_names = freeze_bottom_layers(model, 1)  # embeddings + layer 0
    assert reinit_names == ["bert.encoder.layer.2", "bert.pooler"] and frozen_names
    after_reinit = {n: p.detach().clone() for n, p in model.named_parameters()}
    top_weight = "bert.encoder.layer.2.attention.self.query.weight"
    assert not torch.equal(after_reinit[top_weight], pretrained[top_weight])
    assert torch.equal(after_reinit["bert.encoder.layer.2.output.LayerNorm.weight"], torch.ones(16))

    class AtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.start = {n: p.detach().clone() for n, p in model.named_parameters()}

    at_start = AtStart()
    trainer = Trainer(model=model, args=args(tmp_path, learning_rate=1e-2), train_dataset=tiny_dataset(), callbacks=[at_start])
    trainer.train()

    # The Trainer started from the re-initialised weights (it does not reload or re-initialise).
    assert all(torch.equal(at_start.start[n], after_reinit[n]) for n in after_reinit)
    # Its default optimizer holds only trainable parameters, and the frozen ones are bit-identical.
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert not any(id(params[n]) in in_optimizer for n in frozen_names)
    for name in frozen_names:
        assert not params[name].requires_grad and torch.equal(params[name], after_reinit[name]), name
    assert all(not p.requires_grad for p in encoder_layers(model)[0].parameters())
    # The trainable part did train: the re-initialised top layer moved away from its new init.
    assert not torch.equal(params[top_weight], after_reinit[top_weight])


def test_trainer_equivalents_construct_and_map():
    """Each course setting has a TrainingArguments counterpart that constructs on CPU."""
    for technique, (_, kwargs) in TRAINER_EQUIVALENTS.items():
        made = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **kwargs)
        for key, value in kwargs.items():
            assert getattr(made, key) == value or str(getattr(made, key)) == str(value) or \
                getattr(getattr(made, key), "value", None) == value, (technique, key)
    for mode in ("bf16", "fp16"):
        assert TrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **{mode: True}).mixed_precision == mode
    # transformers 5: warmup_ratio is gone; warmup_steps takes a ratio (float < 1) or a step count.
    assert "warmup_ratio" not in TrainingArguments.__dataclass_fields__
    assert TrainingArguments(output_dir="unused", report_to=[], use_cpu=True).optim == "adamw_torch_fused"


def test_gradient_accumulation_matches_big_batch_and_course_loop(tmp_path):
    """gradient_accumulation_steps=2 with batch 4 == batch 8 in one step == ftcourse train(accumulation_steps=2),
    once ``trainer.model_accepts_loss_kwargs = False``.

    Why the flag: transformers 5.23's Trainer sees ``**kwargs`` in ``BertForSequenceClassification.forward``,
    concludes the model normalises its loss by ``num_items_in_batch`` and skips the division by the
    accumulation steps; the sequence-classification loss is a plain mean that ignores it, so every
    accumulated gradient is k times too large (huggingface/transformers#47688). The Trainer docstring's
    remedy is the flag. With AdamW the effect is mostly hidden (Adam is nearly scale-invariant) except
    through ``max_grad_norm`` clipping, which then clips k times larger gradients.
    """
    data = tiny_dataset(16)

    def trainer_run(batch, accumulation, workaround):
        torch.manual_seed(0)
        model = tiny_classifier("bert", num_layers=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        trainer = Trainer(model=model, train_dataset=data, optimizers=(optimizer, scheduler),
                          args=args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                                    max_steps=2, train_sampling_strategy="sequential", max_grad_norm=1e9))  # measure, never clip
        if workaround:
            trainer.model_accepts_loss_kwargs = False
        trainer.train()
        grad_norms = [row["grad_norm"] for row in trainer.state.log_history if "grad_norm" in row]
        return {n: p.detach().clone() for n, p in model.named_parameters()}, grad_norms

    (accumulated, acc_norms), (big, big_norms) = trainer_run(4, 2, True), trainer_run(8, 1, False)
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=2)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    rows = data.with_format("torch")
    batches = [{k: rows[i:i + 4][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(0, 16, 4)]
    history = train(model, batches, optimizer, accumulation_steps=2, max_grad_norm=None, progress=False, device="cpu")
    ours = {n: p.detach() for n, p in model.named_parameters()}
    assert any(not torch.equal(ours[n], initial[n]) for n in ours)  # training happened
    assert acc_norms == pytest.approx(big_norms, rel=1e-4)
    assert [r["grad_norm"] for r in history.steps] == pytest.approx(big_norms, rel=1e-4)
    for name in ours:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours[name], big[name], rtol=1e-4, atol=1e-6)

    # Without the flag: the first step's gradient is 2x the true one while #47688 is open (1x once fixed).
    _, default_norms = trainer_run(4, 2, False)
    ratio = default_norms[0] / big_norms[0]
    print("first-step grad norm ratio without the flag:", ratio)
    assert ratio == pytest.approx(2.0, rel=1e-4) or ratio == pytest.approx(1.0, rel=1e-4), ratio


class ScriptedMetric:
    """compute_metrics returning a fixed sequence of accuracies, one per evaluation."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self, eval_pred):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"accuracy": value}


def test_evaluation_frequency_and_early_stopping(tmp_path):
    """eval_strategy='steps' + eval_steps set how often; EarlyStoppingCallback's patience counts
    evaluations without improvement; load_best_model_at_end restores the best checkpoint."""
    torch.manual_seed(0)
    model = tiny_classifier("bert", num_layers=2)
    metric = ScriptedMetric([0.50, 0.70, 0.65, 0.60, 0.90])  # best at the 2nd evaluation, then 2 worse
    kwargs = TRAINER_EQUIVALENTS["early stopping + best checkpoint"][1]
    trainer = Trainer(model=model, args=args(tmp_path, max_steps=10, **kwargs), train_dataset=tiny_dataset(),
                      eval_dataset=tiny_dataset(16, seed=1), compute_metrics=metric,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kw):
            snapshots[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer.add_callback(Snapshot())
    trainer.train()
    evals = [row for row in trainer.state.log_history if "eval_accuracy" in row]
    assert [row["step"] for row in evals] == [1, 2, 3, 4]  # every eval_steps=1 step, stopped after 2 without gain
    assert trainer.state.global_step == 4
    assert trainer.state.best_metric == pytest.approx(0.70)
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    restored = dict(model.named_parameters())
    assert all(torch.equal(restored[n], snapshots[2][n]) for n in snapshots[2])  # the best weights came back
    assert not all(torch.equal(restored[n], snapshots[4][n]) for n in snapshots[4])

    # eval_steps=2: evaluations at steps 2 and 4 of 4.
    trainer = Trainer(model=tiny_classifier("bert", num_layers=2), train_dataset=tiny_dataset(),
                      eval_dataset=tiny_dataset(16, seed=1),
                      args=args(tmp_path / "freq", max_steps=4, **TRAINER_EQUIVALENTS["evaluation frequency"][1]))
    trainer.train()
    assert [row["step"] for row in trainer.state.log_history if "eval_loss" in row] == [2, 4]
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
