"""Gradient accumulation is exact: k micro-batches give the gradient of one big batch.

Reference (REFERENCE.md, "Gradient accumulation"): sum the per-item losses over the whole window
and divide by the number of items in the window (examples, or non-padding tokens). "Mean per
micro-batch / k" is exact only for equal micro-batches with a per-example loss.

Everything is float64 with dropout probabilities 0, so the only differences left are summation
order (~1e-16) and ``torch.testing.assert_close``'s float64 defaults apply. The gradients are
taken from inside ``ftcourse.train.train`` (a recording optimizer), so the loop itself is tested,
not a re-implementation of it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from ftcourse.accumulation import (
    IGNORE_INDEX, accumulation_windows, count_items, optimizer_steps_per_epoch, summed_loss,
)
from ftcourse.train import train

DT = torch.float64
SEQ_LEN = 10
VOCAB = 50


def tiny_bert(token_level: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    cls = BertForTokenClassification if token_level else BertForSequenceClassification
    return cls(config).to(DT).eval()


def make_batches(sizes, token_level: bool = False, seed: int = 0) -> list[dict]:
    """Micro-batches padded to one common length (so they concatenate into one exact big batch),
    with ragged real lengths; token-level labels are IGNORE_INDEX on padding."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        lengths = torch.randint(2, SEQ_LEN + 1, (size,), generator=g)
        mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
        ids = torch.randint(1, VOCAB, (size, SEQ_LEN), generator=g) * mask
        if token_level:
            labels = torch.randint(0, 3, (size, SEQ_LEN), generator=g).masked_fill(mask == 0, IGNORE_INDEX)
        else:
            labels = torch.randint(0, 3, (size,), generator=g)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def concat(batches: list[dict]) -> dict:
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def grads_of(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def big_batch_grads(model, batch: dict) -> dict[str, torch.Tensor]:
    """The reference: one forward/backward over the whole window, mean over its items."""
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    loss = summed_loss(model(**inputs).logits, batch["labels"]) / count_items(batch["labels"])
    loss.backward()
    return grads_of(model)


def naive_grads(model, window: list[dict], k: int) -> dict[str, torch.Tensor]:
    """The common recipe: each micro-batch's mean loss (F.cross_entropy default) divided by k."""
    model.zero_grad(set_to_none=True)
    for batch in window:
        inputs = {key: v for key, v in batch.items() if key != "labels"}
        logits = model(**inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=IGNORE_INDEX)
        (loss / k).backward()
    return grads_of(model)


class RecordingSGD(torch.optim.SGD):
    """SGD with lr 0 that records the gradients it is asked to step with (the model never moves,
    so every window's gradient can be compared with a big batch at the same weights)."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.seen: list[dict[str, torch.Tensor]] = []
        self.names: dict[int, str] = {}

    def step(self, closure=None):
        self.seen.append({self.names[id(p)]: p.grad.detach().clone()
                          for group in self.param_groups for p in group["params"] if p.grad is not None})
        return super().step(closure)


def loop_window_grads(model, batches: list[dict], k: int) -> list[dict[str, torch.Tensor]]:
    optimizer = RecordingSGD(model.parameters())
    optimizer.names = {id(p): n for n, p in model.named_parameters()}
    # max_grad_norm=None: the loop only measures the norm, so the recorded gradient is the raw one.
    train(model, batches, optimizer, accumulation_steps=k, max_grad_norm=None, device="cpu", progress=False)
    return optimizer.seen


def assert_grads_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m: f"{name}: {m}")


def max_rel_diff(a: dict, b: dict) -> float:
    num = math.sqrt(sum(float((a[n] - b[n]).pow(2).sum()) for n in b))
    den = math.sqrt(sum(float(b[n].pow(2).sum()) for n in b))
    return num / den


def reference_windows(model, batches, k):
    return [big_batch_grads(model, concat(window)) for window in accumulation_windows(batches, k)]


# ---------------------------------------------------------------- sequence classification

def test_classification_k_micro_batches_equal_one_big_batch():
    model, batches = tiny_bert(), make_batches([4] * 6)
    # The reference leaves the last window's gradient in .grad: train() must not add it to its
    # first window (it did before train() zeroed the gradients on entry).
    expected = reference_windows(model, batches, 3)
    seen = loop_window_grads(model, batches, k=3)
    assert len(seen) == 2
    for actual, reference in zip(seen, expected):
        assert_grads_close(actual, reference)


def test_k1_is_plain_training():
    model, batches = tiny_bert(), make_batches([5, 5, 3])
    seen = loop_window_grads(model, batches, k=1)
    for actual, batch in zip(seen, batches):
        assert_grads_close(actual, big_batch_grads(model, batch))


def test_ragged_last_window_matches_its_own_big_batch():
    # 5 micro-batches, the last one short (as a DataLoader gives): windows [4,4], [4,4], [3].
    model, batches = tiny_bert(), make_batches([4, 4, 4, 4, 3])
    seen = loop_window_grads(model, batches, k=2)
    expected = reference_windows(model, batches, 2)
    assert len(seen) == len(expected) == 3
    for actual, reference in zip(seen, expected):
        assert_grads_close(actual, reference)
    # The naive recipe divides the lone last micro-batch by k = 2: half the true gradient.
    last = batches[-1:]
    naive = naive_grads(model, last, k=2)
    for name in naive:
        torch.testing.assert_close(naive[name] * 2, expected[-1][name])


def test_unequal_micro_batches_naive_differs_ours_matches():
    # Window [4, 3]: the mean-per-micro-batch recipe over-weights the 3 examples of the short batch.
    model, batches = tiny_bert(), make_batches([4, 3], seed=1)
    reference = big_batch_grads(model, concat(batches))
    (ours,) = loop_window_grads(model, batches, k=2)
    assert_grads_close(ours, reference)
    assert max_rel_diff(naive_grads(model, batches, k=2), reference) > 1e-3


# ---------------------------------------------------------------- token-level loss with padding

def test_token_level_padding_naive_differs_ours_matches():
    model, batches = tiny_bert(token_level=True), make_batches([4, 4, 4], token_level=True, seed=2)
    tokens = [count_items(b["labels"]) for b in batches]
    assert len(set(tokens)) > 1, "the test needs micro-batches with different numbers of real tokens"
    reference = big_batch_grads(model, concat(batches))
    (ours,) = loop_window_grads(model, batches, k=3)
    assert_grads_close(ours, reference)
    naive = naive_grads(model, batches, k=3)
    assert max_rel_diff(naive, reference) > 1e-3  # far outside float64 round-off: a different gradient


def test_token_level_naive_is_exact_only_with_equal_token_counts():
    # Sanity check of the claim's boundary: equal real-token counts make the naive recipe exact too.
    model = tiny_bert(token_level=True)
    batches = make_batches([3, 3], token_level=True, seed=3)
    mask = batches[0]["attention_mask"]
    batches[1]["attention_mask"] = mask.clone()
    batches[1]["input_ids"] = batches[1]["input_ids"].clamp(min=1) * mask
    batches[1]["labels"] = batches[1]["labels"].clamp(min=0).masked_fill(mask == 0, IGNORE_INDEX)
    assert count_items(batches[0]["labels"]) == count_items(batches[1]["labels"])
    assert_grads_close(naive_grads(model, batches, k=2), big_batch_grads(model, concat(batches)))


def test_summed_loss_keeps_float64():
    # The loss is upcast for fp16/bf16 logits; it must never downcast float64 ones.
    logits = torch.randn(4, 3, dtype=DT)
    assert summed_loss(logits, torch.tensor([0, 1, 2, 1])).dtype == DT
    assert summed_loss(logits.to(torch.bfloat16), torch.tensor([0, 1, 2, 1])).dtype == torch.float32


# ---------------------------------------------------------------- optimizer steps per epoch

class CountingSGD(torch.optim.SGD):
    def __init__(self, params):
        super().__init__(params, lr=1e-3)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)


@pytest.mark.parametrize("n_batches,k", [(7, 1), (7, 3), (8, 4), (3, 5)])
def test_optimizer_and_scheduler_step_ceil_n_over_k_times_per_epoch(n_batches, k):
    model = tiny_bert()
    batches = make_batches([2] * n_batches)
    optimizer = CountingSGD(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    epochs = 2
    history = train(model, batches, optimizer, scheduler=scheduler, epochs=epochs, accumulation_steps=k,
                    device="cpu", progress=False)
    per_epoch = math.ceil(n_batches / k)
    assert per_epoch == optimizer_steps_per_epoch(n_batches, k)
    assert optimizer.calls == epochs * per_epoch
    assert scheduler.last_epoch == epochs * per_epoch
    frame = history.steps_frame()
    assert len(frame) == epochs * per_epoch
    assert frame.groupby("epoch").size().tolist() == [per_epoch] * epochs
    # every example of every epoch is in exactly one window
    assert frame.groupby("epoch")["items"].sum().tolist() == [2 * n_batches] * epochs


def test_accumulation_windows_rejects_bad_k():
    for bad in (0, -1, np.int64(0)):
        with pytest.raises(ValueError, match="accumulation_steps must be an int >= 1"):
            accumulation_windows([1, 2, 3], bad)  # at the call, not at the first next()
    for bad in (1.5, 2.0, "2", True, np.bool_(True), None):
        with pytest.raises(TypeError, match="accumulation_steps must be an int >= 1"):
            accumulation_windows([1, 2, 3], bad)


def test_accumulation_windows_accepts_numpy_integers():
    assert list(accumulation_windows(range(5), np.int64(2))) == [[0, 1], [2, 3], [4]]
    assert list(accumulation_windows(range(3), np.uint8(1))) == [[0], [1], [2]]
    assert optimizer_steps_per_epoch(np.int64(5), np.int32(2)) == 3
    with pytest.raises(ValueError, match="accumulation_steps must be an int >= 1"):
        optimizer_steps_per_epoch(5, 0)
    with pytest.raises(TypeError, match="n_batches must be an int >= 0"):
        optimizer_steps_per_epoch(5.0, 2)


# ---------------------------------------------------------------- the seed article's condition

def fires(condition, steps: int) -> list[int]:
    return [step for step in range(1, steps + 1) if condition(step)]  # enumerate(loader, 1)


def test_seed_article_bitwise_and_fires_on_the_wrong_steps():
    k, steps = 4, 10
    # `step & k == 0` parses as `(step & k) == 0`: a bit test, not divisibility.
    assert fires(lambda step: step & k == 0, steps) == [1, 2, 3, 8, 9, 10]
    # The article's full condition joins it with `and step == steps`: at most the last step.
    assert fires(lambda step: step & k == 0 and step == steps, steps) == [10]
    assert fires(lambda step: step & k == 0 and step == 12, 12) == []  # 12 & 4 == 4: never steps at all
    # Correct: every k-th micro-batch, and the end of the epoch for a short last window.
    correct = fires(lambda step: step % k == 0 or step == steps, steps)
    assert correct == [4, 8, 10]
    # ...which are exactly the window ends of ftcourse.accumulation.
    ends = [sum(len(w) for w in list(accumulation_windows(range(steps), k))[: i + 1])
            for i in range(optimizer_steps_per_epoch(steps, k))]
    assert ends == correct
