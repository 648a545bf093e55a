"""ftcourse.course.ddp_lesson, notebook 13's code that runs in several processes: the lesson's data-parallel SGD on 2
processes (started by torchrun through ``launch``) is one process at the global batch; ``accelerate launch --cpu``
starts one process; a prepared scheduler runs ahead, ``gather`` repeats the rows even_batches adds and
``gather_for_metrics`` does not; FSDP2 holds half of every tensor on each of 2 processes and gives one process's
gradients; bad arguments are named, and a failing process raises with its error.

One torch thread a process (``launch`` sets it; the forked ones inherit the parent's imports, see tests/test_ddp.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_classifier

pytest.importorskip("accelerate")
if not torch.distributed.is_available():
    pytest.skip("needs torch.distributed (gloo)", allow_module_level=True)

from ftcourse.course import ddp_lesson  # noqa: E402
from ftcourse.schedules import get_schedule  # noqa: E402


def test_the_lesson_on_two_processes_is_one_process_at_the_global_batch():
    ranks = ddp_lesson.launch("data_parallel_sgd", 2, steps=2, global_batch=6, lr=0.3, verbose=False)
    assert [r["rank"] for r in ranks] == [0, 1] and [r["rows"] for r in ranks] == [(0, 3), (3, 6)]
    model, xs, ys = ddp_lesson.toy_problem(2, 6)
    for step, (x, y) in enumerate(zip(xs, ys)):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.3 * p.grad
        weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        own = [r["local_grads"][step] for r in ranks]
        assert (own[0] - own[1]).abs().max() > 1e-3  # each process's gradient is its shard's ...
        torch.testing.assert_close((own[0] + own[1]) / 2, grad, rtol=0, atol=1e-12)  # ... their mean the batch's
        for r in ranks:
            torch.testing.assert_close(r["grads"][step], grad, rtol=0, atol=1e-12)
            torch.testing.assert_close(r["weights"][step], weights, rtol=0, atol=1e-12)
        assert torch.equal(ranks[0]["weights"][step], ranks[1]["weights"][step])


def test_accelerate_launch_cpu_starts_one_process():
    # the replay notebook 13 shows (REFERENCE: with --cpu, accelerate launch always takes its single-process launcher)
    assert [r["world"] for r in ddp_lesson.launch("processes_started", 2, launcher="accelerate launch --cpu",
                                                  verbose=False)] == [1]


def test_a_failing_process_raises_with_its_error():
    with pytest.raises(RuntimeError, match="steps must be an int >= 1, got 0"):
        ddp_lesson.launch("data_parallel_sgd", 1, steps=0, verbose=False)


def _call(rank, out, name, kwargs):
    torch.save(getattr(ddp_lesson, name)(**kwargs), Path(out) / f"rank{rank}.pt")


def _forked(tmp_path, name, **kwargs) -> list:
    from test_ddp import launch  # forked processes joined by gloo, with a timeout

    launch(_call, str(tmp_path), name, kwargs)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_a_prepared_scheduler_steps_once_per_process_unless_told_otherwise(tmp_path, with_optimizer):
    ranks = _forked(tmp_path, "accelerate_traps", total_steps=10, warmup_steps=2, calls=4, rows=23, batch_size=4,
                    step_scheduler_with_optimizer=with_optimizer)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    schedule = get_schedule("linear", optimizer, 2, 10)
    alone = []
    for _ in range(8):
        optimizer.step()
        schedule.step()
        alone.append(schedule.get_last_lr()[0])
    for r in ranks:
        assert r["world"] == 2
        assert r["lrs"] == (alone[1::2] if with_optimizer else alone[:4])  # 2 steps a call, or 1
        assert r["gathered"] == list(range(23)) + [0]  # even_batches completes the last round with row 0
        assert r["for_metrics"] == list(range(23))
    assert torch.equal(ranks[0]["mask"], ranks[1]["mask"])  # seeded alike: the same dropout masks
    assert not torch.equal(ranks[0]["mask_device_specific"], ranks[1]["mask_device_specific"])


def test_fsdp2_holds_half_of_everything_on_each_of_two_processes_with_one_process_gradients(tmp_path):
    ranks = _forked(tmp_path, "fsdp_shards", global_batch=8)
    model, xs, ys = ddp_lesson.toy_problem(1, 8)
    F.cross_entropy(model(xs[0]), ys[0]).backward()
    full = sum(p.numel() for p in model.parameters())
    for r in ranks:
        assert r["kind"] == "DTensor" and r["full"] == {n: p.numel() for n, p in model.named_parameters()}
        assert sum(r["held"].values()) * 2 == full and r["adam_held"] == full  # half the weights, half of 2 moments
        for name, p in model.named_parameters():
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=0, atol=1e-12)


def test_without_dropout_leaves_nothing_random():
    model = tiny_classifier("bert", num_layers=2, dropout=0.3).train()
    batch = {"input_ids": torch.randint(10, 100, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    assert not torch.equal(model(**batch).logits, model(**batch).logits)
    assert ddp_lesson.without_dropout(model) is model
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert torch.equal(model(**batch).logits, model(**batch).logits)


def test_bad_arguments_are_named():
    from ftcourse.course.recipes import Recipe

    with pytest.raises(ValueError, match="function must be one of"):
        ddp_lesson.launch("fine_tune")
    with pytest.raises(ValueError, match="processes must be an int >= 1, got 0"):
        ddp_lesson.launch("processes_started", 0)
    with pytest.raises(ValueError, match="launcher must be one of"):
        ddp_lesson.launch("processes_started", 2, launcher="accelerate launch")
    with pytest.raises(TypeError, match="must be JSON values"):
        ddp_lesson.launch("data_parallel_sgd", 2, lr=torch.tensor(0.1))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        ddp_lesson.toy_problem(steps=0)
    with pytest.raises(TypeError, match=r"\(label, recipe, dropout\) tuples"):
        ddp_lesson.fine_tune_on_processes([("a", Recipe(), "yes")])
    with pytest.raises(ValueError, match="keep_weights must hold job numbers 0..0"):
        ddp_lesson.fine_tune_on_processes([("a", Recipe(), True)], keep_weights=[1])


class _LauncherThatFailsWhileLeaving:
    """A stand-in for the torchrun process: it saves ``reported`` ranks' results, then exits with SIGABRT's status."""

    def __init__(self, reported):
        self.reported = reported

    def __call__(self, command, **kwargs):
        out = Path(command[command.index("ftcourse.course.ddp_lesson") + 2])
        for rank in range(self.reported):
            torch.save({"rank": rank}, out / f"rank{rank}.pt")
        self.returncode, self.pid = -6, 0
        return self

    def communicate(self, timeout=None):
        return "", "terminate called without an active exception\n  exitcode  : -6 (pid: 1)  (SIGABRT)\n"


def test_a_failure_after_every_process_reported_keeps_the_results_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(ddp_lesson.subprocess, "Popen", _LauncherThatFailsWhileLeaving(2))
    assert ddp_lesson.launch("processes_started", 2, verbose=False) == [{"rank": 0}, {"rank": 1}]
    assert "failed after all 2 processes had reported (exitcode  : -6" in capsys.readouterr().out


def test_a_failure_before_every_process_reported_raises(monkeypatch):
    monkeypatch.setattr(ddp_lesson.subprocess, "Popen", _LauncherThatFailsWhileLeaving(1))
    with pytest.raises(RuntimeError, match="(?s)failed \\(exit status -6\\).*without an active exception"):
        ddp_lesson.launch("processes_started", 2, verbose=False)
