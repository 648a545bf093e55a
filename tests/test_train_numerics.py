"""train() on CPU in fp32 is pinned bit for bit to a plain reference loop, and makes one host read per
optimizer step of the values it computes on the device (the GPU sync point of the step)."""
from __future__ import annotations

import math
import sys

import pytest
import torch
from conftest import synthetic_batches, tiny_classifier

import ftcourse.train as ftrain
from ftcourse.accumulation import count_items, summed_loss
from ftcourse.param_groups import decay_param_groups
from ftcourse.schedules import get_schedule
from ftcourse.train import Callback, set_seed, train

N_BATCHES, EPOCHS = 7, 2


def _setup(seed=5):
    set_seed(seed)
    model = tiny_classifier("bert", dropout=0.1)  # dropout: the RNG must be drawn in the same order too
    batches = synthetic_batches(N_BATCHES, seed=2)
    batches[3]["labels"][0] = -100  # an ignored item: windows of unequal item counts
    optimizer = torch.optim.AdamW(decay_param_groups(model, 0.01), lr=1e-2)
    return model, batches, optimizer


def reference_loop(model, batches, optimizer, scheduler, k, max_grad_norm):
    """The loop of train()'s module docstring, written the plainest way: Python floats read per
    micro-batch. Returns the loss and gradient norm of every step."""
    losses, norms = [], []
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(EPOCHS):
        for start in range(0, len(batches), k):
            window = batches[start:start + k]
            n_items = sum(count_items(b["labels"]) for b in window)
            window_loss = 0.0
            for b in window:
                b = dict(b)
                labels = b.pop("labels")
                loss = summed_loss(model(**b).logits, labels) / n_items
                loss.backward()
                window_loss += loss.item()
            # the optimizer's parameter order, as train(): the norm sums the tensors in this order
            params = [p for group in optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf")).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(window_loss)
            norms.append(norm)
    return losses, norms


@pytest.mark.parametrize("k", [1, 3])  # 3: windows of 3, 3 and a short last one of 1 micro-batch
@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_fp32_cpu_training_is_bit_identical_to_the_reference_loop(k, max_grad_norm):
    steps = EPOCHS * math.ceil(N_BATCHES / k)
    model, batches, optimizer = _setup()
    scheduler = get_schedule("linear", optimizer, num_warmup_steps=2, num_training_steps=steps)
    history = train(model, batches, optimizer, scheduler=scheduler, epochs=EPOCHS, accumulation_steps=k,
                    max_grad_norm=max_grad_norm, progress=False)

    ref_model, ref_batches, ref_optimizer = _setup()
    ref_scheduler = get_schedule("linear", ref_optimizer, num_warmup_steps=2, num_training_steps=steps)
    losses, norms = reference_loop(ref_model, ref_batches, ref_optimizer, ref_scheduler, k, max_grad_norm)

    assert [row["loss"] for row in history.steps] == losses  # exactly: the same floats, summed in the same order
    assert [row["grad_norm"] for row in history.steps] == norms
    for (name, want), got in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(got, want), name
    # tokens are counted on the CPU batch: the attention mask's ones
    mask_tokens = [sum(int(b["attention_mask"].sum()) for b in batches[s:s + k]) for s in range(0, N_BATCHES, k)]
    assert [round(r["tokens_per_s"] * r["time_s"]) for r in history.steps] == mask_tokens * EPOCHS


HOST_READS = ("item", "tolist", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")


def test_one_host_read_per_optimizer_step(monkeypatch):
    """Every read of a tensor's value by the package's code between a window's first transfer to the device
    and the end of its optimizer step would be a GPU sync: one per step, whatever the window's size.

    Before: ``int(attention_mask.sum())`` and ``loss.item()`` per micro-batch and the gradient norm's
    ``.item()``, 2k + 1 per step. Reads before the transfer (items, tokens) are of the CPU batch."""
    reads = []
    phase = {"on_device": False}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if phase["on_device"] and caller.startswith("ftcourse"):
                reads.append((caller, name))
            return original(self, *args, **kwargs)

        return method

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    moved = ftrain.move_batch

    def move_batch(batch, device):
        phase["on_device"] = True
        return moved(batch, device)

    monkeypatch.setattr(ftrain, "move_batch", move_batch)
    per_step = []

    class EndOfStep(Callback):
        def on_step_end(self, state):
            per_step.append(list(reads))
            reads.clear()
            phase["on_device"] = False

    model, batches, optimizer = _setup()
    history = train(model, batches, optimizer, accumulation_steps=3, callbacks=[EndOfStep()], progress=False)
    assert len(history.steps) == 3
    assert [len(r) for r in per_step] == [1, 1, 1], per_step


@pytest.mark.parametrize("return_predictions", [False, True])
def test_evaluate_reads_the_device_a_fixed_number_of_times(monkeypatch, return_predictions):
    """Not three reads (loss, correct count, item count) per batch: the item count comes from the CPU
    batch, and the sums come over once, whatever the number of batches."""
    reads = []
    counting_items = {"now": False}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("ftcourse") and not counting_items["now"]:
                reads.append(name)
            return original(self, *args, **kwargs)

        return method

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    model, batches, _ = _setup()
    labels = {id(b["labels"]) for b in batches}
    real_count_items = ftrain.count_items

    def count_items(tensor):  # allowed: it reads the labels of the CPU batch, before the batch moves
        assert id(tensor) in labels, "count_items on a tensor that is not the loader's (CPU) labels"
        counting_items["now"] = True
        try:
            return real_count_items(tensor)
        finally:
            counting_items["now"] = False

    monkeypatch.setattr(ftrain, "count_items", count_items)
    per_pass = []
    for n_batches in (2, 6):
        reads.clear()
        ftrain.evaluate(model, batches[:n_batches], return_predictions=return_predictions)
        per_pass.append(len(reads))
    # loss sums and correct counts; with predictions also .cpu() and .numpy() of logits and labels
    assert per_pass[0] == per_pass[1] <= (6 if return_predictions else 2), per_pass


def test_evaluate_metrics_are_unchanged_bit_for_bit():
    """The sums are those of each batch's .item(), added in batch order, as before."""
    model, batches, _ = _setup()
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for b in batches:
            b = dict(b)
            labels = b.pop("labels")
            logits = model(**b).logits
            loss_sum += summed_loss(logits, labels).item()
            correct += (logits.argmax(-1) == labels).sum().item()
            n += count_items(labels)
    metrics = ftrain.evaluate(model, batches, return_predictions=True)
    assert (metrics["loss"], metrics["accuracy"], metrics["n"]) == (loss_sum / n, correct / n, n)
