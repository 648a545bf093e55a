"""Data parallelism in several processes, for notebook 13: the lesson's core and what it launches.

Course harness (not a technique module), except :func:`data_parallel_sgd`, the lesson: data parallelism by hand
in plain PyTorch (``torch.distributed``), about thirty lines.

A process started by a launcher (torchrun, ``accelerate launch``) is a new Python interpreter: it imports the code it
runs, so a function defined in a notebook cell does not exist there. The functions that run in every process live
here, and :func:`launch` starts them::

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m ftcourse.course.ddp_lesson FUNCTION OUT [JSON]

Every process runs ``FUNCTION(**JSON)`` with one torch thread (2 processes x 2 threads on 2 cores run ~10x slower:
oversubscribed OpenMP threads spin-wait), joined by gloo, and saves what it returns in ``OUT/rank<r>.pt``;
``launch`` returns those, in rank order. What runs in every process:

* :func:`data_parallel_sgd`: the lesson (its model and data: :func:`toy_problem`, float64);
* :func:`processes_started`: which process am I, of how many (the ``accelerate launch --cpu`` replay);
* :func:`accelerate_traps`: a prepared scheduler, ``gather`` against ``gather_for_metrics``, and the dropout masks of
  processes seeded alike;
* :func:`fsdp_shards`: FSDP2 (``fully_shard``) on gloo: what each process holds, and the gradients;
* :func:`fine_tune_runs`: ``fine_tune(recipe, accelerator=Accelerator(cpu=True))``, one run after another
  (:func:`fine_tune_on_processes` launches it and records the runs for the notebook's footer).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

FUNCTIONS = ("data_parallel_sgd", "processes_started", "accelerate_traps", "fsdp_shards", "fine_tune_runs")
LAUNCHERS = ("torchrun", "accelerate launch --cpu")


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).clone()


# ---------------------------------------------------------------------------------------------------------------
# The lesson
# ---------------------------------------------------------------------------------------------------------------
def toy_problem(steps: int = 3, global_batch: int = 8, seed: int = 0):
    """The lesson's model and data, float64, the same in every process that asks with the same arguments: a
    4 -> 8 -> 2 MLP with seeded weights, ``steps`` global batches ``x`` (steps, global_batch, 4) and labels ``y``."""
    for name, value in (("steps", steps), ("global_batch", global_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    x = torch.randn(steps, global_batch, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 2, (steps, global_batch), generator=generator)
    return model, x, y


def data_parallel_sgd(steps: int = 3, global_batch: int = 8, lr: float = 0.1, seed: int = 0) -> dict:
    """Data parallelism by hand, run in every process: the same model and the same global batches everywhere; each
    process takes its shard of the rows, the mean loss over it and its gradient; an all-reduce sums the gradients
    of all processes and each divides by their number (the average); every process takes the same SGD step.
    Returns this process's gradients (before and after the all-reduce) and weights after every step."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if global_batch % world:
        raise ValueError(f"global_batch {global_batch} must be divisible by the {world} processes (equal shards)")
    model, xs, ys = toy_problem(steps, global_batch, seed)  # the same start and the same global batches everywhere
    rows = slice(rank * global_batch // world, (rank + 1) * global_batch // world)  # this process's shard
    seen = {"rank": rank, "world": world, "rows": (rows.start, rows.stop), "local_grads": [], "grads": [], "weights": []}
    for x, y in zip(xs, ys):
        model.zero_grad()
        F.cross_entropy(model(x[rows]), y[rows]).backward()  # the gradient of this shard's mean loss
        seen["local_grads"].append(_flat(p.grad for p in model.parameters()))
        for p in model.parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # every process receives the sum over the processes ...
            p.grad /= world  # ... and divides by their number: the average
        seen["grads"].append(_flat(p.grad for p in model.parameters()))
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad  # the same gradient and the same step everywhere: the same weights
        seen["weights"].append(_flat(model.parameters()))
    return seen


# ---------------------------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------------------------
def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def launch(function: str, processes: int = 2, *, launcher: str = "torchrun", timeout: float = 1800.0,
           verbose: bool = True, **kwargs) -> list:
    """Run ``function(**kwargs)`` (one of :data:`FUNCTIONS`) in ``processes`` new processes started by ``launcher``
    ("torchrun", or "accelerate launch --cpu" to replay what that command starts), one torch thread each, joined by
    gloo; return what each returned, in rank order (one item a process that ran). ``kwargs`` must be JSON values.
    A failed process raises RuntimeError with the end of its error output, unless every process had already
    saved its result (a failure while leaving: a note says so and the results are kept); a run past ``timeout``
    seconds is killed and raises TimeoutError. ``verbose``: print the command and how long it took."""
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an int >= 1, got {processes!r}")
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(map(repr, LAUNCHERS))}, got {launcher!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    try:
        arguments = json.dumps(kwargs)
    except TypeError as error:
        raise TypeError(f"launch: the keyword arguments of {function} must be JSON values ({error})") from None
    with tempfile.TemporaryDirectory(prefix="ftcourse-ddp-") as out:
        module = ["-m", __name__, function, out, arguments]
        if launcher == "torchrun":
            head = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
            shown = f"torchrun --standalone --nproc-per-node {processes}"
        else:
            head = ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes), "--num_machines",
                    "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
            shown = f"accelerate launch --cpu --num_processes {processes}"
        shown += f" -m {__name__} {function}"
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *head, *module], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=env, start_new_session=hasattr(os, "killpg"))
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)  # the launcher and the processes it started
            else:
                process.kill()
            process.communicate()
            raise TimeoutError(f"`{shown}` still running after {timeout:g} s: killed") from None
        files = sorted(Path(out).glob("rank*.pt"), key=lambda p: int(p.stem[4:]))
        every_process_reported = launcher == "torchrun" and len(files) == processes
        if process.returncode and not every_process_reported:
            raise RuntimeError(f"`{shown}` failed (exit status {process.returncode}); its error output ends with:\n"
                               f"{stderr[-3000:]}")
        if process.returncode:
            # Every process saved what it returned, so the work is whole; the failure came while leaving (gloo's
            # threads can abort a process as it shuts down: pytorch/pytorch#179291).
            last = next((line for line in reversed(stderr.splitlines()) if "Signal" in line or "exitcode" in line),
                        f"exit status {process.returncode}")
            print(f"note: `{shown}` failed after all {processes} processes had reported ({last.strip()}); "
                  "their results are kept")
        results = [torch.load(f, weights_only=False) for f in files]
    if verbose:
        print(f"$ {shown}: {len(results)} process(es) reported, {time.perf_counter() - started:.1f} s")
    return results


def _main(argv: list[str]) -> None:
    """One process of :func:`launch`: ``FUNCTION OUT [JSON]``."""
    function, out = argv[0], Path(argv[1])
    kwargs = json.loads(argv[2]) if len(argv) > 2 else {}
    if function not in FUNCTIONS:
        raise SystemExit(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
    torch.set_num_threads(1)
    launched = "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ  # torchrun sets both; a plain python neither
    if launched:
        dist.init_process_group("gloo")
    try:
        result = globals()[function](**kwargs)
        rank = dist.get_rank() if launched else 0
        torch.save(result, out / f"rank{rank}.pt")
        if launched:
            # no process leaves while another may still talk to it: gloo aborts a process whose peer is gone
            # (a SIGABRT seen once in 16 notebook runs, in the rank that finished last)
            dist.barrier()
    finally:
        if launched:
            dist.destroy_process_group()
    # Leave without the interpreter's teardown: gloo's worker threads can still hold tensors then, and releasing
    # them while Python shuts down aborts the process (SIGABRT, "terminate called without an active exception";
    # seen twice in this project's notebook runs, once under CI; pytorch/pytorch#179291).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------------------------------------------------------
# What else runs in every process
# ---------------------------------------------------------------------------------------------------------------
def processes_started() -> dict:
    """Which process is this, of how many joined, and its operating-system process id."""
    joined = dist.is_available() and dist.is_initialized()
    return {"rank": dist.get_rank() if joined else 0, "world": dist.get_world_size() if joined else 1,
            "pid": os.getpid()}


def accelerate_traps(total_steps: int = 10, warmup_steps: int = 2, calls: int = 4, rows: int = 23,
                     batch_size: int = 4, seed: int = 0, step_scheduler_with_optimizer: bool = True) -> dict:
    """Three things accelerate does on several processes, measured in this one:

    * ``lrs``: the lr after each of ``calls`` calls of a **prepared** linear schedule (``warmup_steps`` of
      ``total_steps``; the optimizer steps before each call), made with ``step_scheduler_with_optimizer``;
    * ``gathered`` / ``for_metrics``: the row numbers of a ``rows``-row evaluation set, batches of ``batch_size``
      a process, collected with ``accelerator.gather`` and with ``accelerator.gather_for_metrics``;
    * ``mask`` / ``mask_device_specific``: a dropout mask (p = 0.5, 4 x 8) drawn right after ``set_seed(seed)``, as
      ``fine_tune`` seeds every process, and after accelerate's ``set_seed(seed, device_specific=True)``."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed as accelerate_set_seed

    from ..schedules import get_schedule
    from ..train import set_seed

    accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=step_scheduler_with_optimizer)
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    optimizer, scheduler = accelerator.prepare(optimizer, get_schedule("linear", optimizer, warmup_steps, total_steps))
    lrs = []
    for _ in range(calls):
        weight.grad = torch.zeros(1)
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    loader = accelerator.prepare(torch.utils.data.DataLoader(torch.arange(rows), batch_size=batch_size))
    gathered, for_metrics = [], []
    for batch in loader:
        gathered.append(accelerator.gather(batch))
        for_metrics.append(accelerator.gather_for_metrics(batch))
    ones = torch.ones(4, 8)
    set_seed(seed)
    mask = F.dropout(ones, p=0.5, training=True) != 0
    accelerate_set_seed(seed, device_specific=True)
    mask_device_specific = F.dropout(ones, p=0.5, training=True) != 0
    return {"rank": accelerator.process_index, "world": accelerator.num_processes, "lrs": lrs,
            "gathered": torch.cat(gathered).tolist(), "for_metrics": torch.cat(for_metrics).tolist(),
            "mask": mask, "mask_device_specific": mask_device_specific}


def fsdp_shards(global_batch: int = 8, lr: float = 0.1, seed: int = 0) -> dict:
    """FSDP2 on the lesson's model: each ``nn.Linear`` and the whole model wrapped with
    ``torch.distributed.fsdp.fully_shard``, one forward and backward of this process's shard of the first global
    batch, one Adam step. Returns, per parameter, the elements this process holds and the full count; the elements
    of Adam's state it holds; and the full gradients (``DTensor.full_tensor()``, gathered from every process)."""
    from torch.distributed.fsdp import fully_shard

    rank, world = dist.get_rank(), dist.get_world_size()
    if global_batch % world:
        raise ValueError(f"global_batch {global_batch} must be divisible by the {world} processes (equal shards)")
    model, xs, ys = toy_problem(1, global_batch, seed)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    rows = slice(rank * global_batch // world, (rank + 1) * global_batch // world)
    F.cross_entropy(model(xs[0][rows]), ys[0][rows]).backward()  # FSDP averages the processes' gradients, as DDP
    grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.step()
    return {"rank": rank, "world": world, "kind": type(next(model.parameters())).__name__,
            "held": {name: p.to_local().numel() for name, p in model.named_parameters()},
            "full": {name: p.numel() for name, p in model.named_parameters()},
            "adam_held": sum(s.to_local().numel() for state in optimizer.state.values()
                             for key, s in state.items() if key in ("exp_avg", "exp_avg_sq")),
            "grads": grads}


def without_dropout(model: nn.Module) -> nn.Module:
    """Every ``nn.Dropout`` of ``model`` at p = 0 (a ``prepare_model`` hook of ``fine_tune``): training without
    random masks, so that two runs differ only in the order of their sums."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def fingerprint(model: nn.Module) -> str:
    """A digest of every weight's bytes: equal digests, bit-identical weights."""
    return hashlib.sha256(_flat(model.parameters()).cpu().numpy().tobytes()).hexdigest()[:16]


def fine_tune_runs(jobs: list, keep_weights: list = ()) -> dict:
    """In every process: ``fine_tune(recipe, accelerator=Accelerator(cpu=True))`` for each job, one after another
    (a job: ``{"label", "recipe": Recipe.to_dict(), "dropout": bool}``; ``dropout=False`` passes
    :func:`without_dropout`). Returns each run's row and weights digest, the main process's weights for the jobs
    numbered in ``keep_weights``, and this process's run records (``runner.runs_made``)."""
    from accelerate import Accelerator

    from .recipes import Recipe
    from .runner import fine_tune, runs_made

    accelerator = Accelerator(cpu=True)
    runs = []
    for i, job in enumerate(jobs):
        result = fine_tune(Recipe.from_dict(job["recipe"]), accelerator=accelerator, label=job["label"],
                           prepare_model=None if job["dropout"] else without_dropout, keep_model=True, progress=False)
        keep = i in keep_weights and accelerator.is_main_process
        runs.append({"label": job["label"], "row": result.row, "fingerprint": fingerprint(result.model),
                     "weights": {k: v.detach().clone() for k, v in result.model.state_dict().items()} if keep else None})
    return {"rank": accelerator.process_index, "world": accelerator.num_processes, "runs": runs, "records": runs_made()}


def fine_tune_on_processes(jobs, processes: int = 2, keep_weights=(), timeout: float = 1800.0) -> list[dict]:
    """Launch :func:`fine_tune_runs` on ``processes`` processes (torchrun, gloo) for ``jobs``, a list of
    ``(label, recipe, dropout)``; return one dict a job: ``label``, ``row`` (``fine_tune``'s, from the main process),
    ``weights`` (the main process's state dict, for the jobs numbered in ``keep_weights``, else None) and
    ``same_on_every_process`` (every process ended with bit-identical weights). The runs are added to this
    process's ``runs_made()`` (the notebook footer's list), marked as run with an Accelerator on that many processes."""
    from . import runner
    from .recipes import Recipe

    jobs = list(jobs)
    if not jobs or not all(isinstance(j, tuple) and len(j) == 3 and isinstance(j[1], Recipe) and isinstance(j[2], bool)
                           for j in jobs):
        raise TypeError("jobs must be a non-empty list of (label, recipe, dropout) tuples: a str, an ftcourse Recipe "
                        "and a bool")
    keep_weights = sorted(set(keep_weights))
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(jobs) for i in keep_weights):
        raise ValueError(f"keep_weights must hold job numbers 0..{len(jobs) - 1}, got {keep_weights!r}")
    payload = [{"label": str(label), "recipe": recipe.to_dict(), "dropout": dropout} for label, recipe, dropout in jobs]
    results = launch("fine_tune_runs", processes, timeout=timeout, jobs=payload, keep_weights=keep_weights)
    main = results[0]
    for record in main["records"]:
        runner._RUNS_MADE.append({**record, "custom": [*record["custom"], f"Accelerator, {main['world']} processes"]})
    return [{**run, "same_on_every_process": all(r["runs"][i]["fingerprint"] == run["fingerprint"] for r in results)}
            for i, run in enumerate(main["runs"])]


if __name__ == "__main__":
    _main(sys.argv[1:])
