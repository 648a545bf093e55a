"""The course harness: what the notebooks use to declare, run and report experiments.

Not copied into your projects (the technique modules one level up are). Its modules:

* ``recipes``: :class:`Recipe`, one fine-tuning run as plain data, with a stable ``key()``;
* ``runner``: :func:`build_training` (a recipe put together from the technique modules),
  :func:`fine_tune` (one run, scored on validation and test), ``run_seeds``;
* ``declarations``: each notebook's arms (recipes x seeds), comparisons and canaries;
* ``bank``: the seed bank, every declared run computed once, stored in ``bank/`` and re-checked live;
* ``profiles``: the ``ci``, ``cpu`` and ``gpu`` sizes; ``data``: SST-2 with its three splits;
  ``pretrained``: the offline MiniLM (or any hub model);
* ``reports``: summaries, figures and claims tables; ``combined``: notebook 11's pieces and
  ``BestOfCallback``;
* ``footprint``: the cost of a training step (parameters, time, memory) in fresh processes, for notebooks 12 and 04;
* ``stopping_rules``: where HF's early-stopping callback and ours stop on the same scores (notebook 10);
* ``ddp_lesson``: notebook 13's code that runs in several processes (torchrun, gloo) and ``launch``;
* ``notebook``: the first and last cells, and torch's thread count (``choose_threads``);
  ``estimate``: predicted minutes per notebook; ``preflight``: what ``run`` and ``estimate`` check
  before they start; ``copying``: a technique module into a package folder of yours;
  ``cli``: ``python -m ftcourse info | run | get-data | estimate | copy | bank``.

``Recipe``, ``build_training``, ``fine_tune`` and ``baseline_recipe`` import from here.
"""
from __future__ import annotations

_EXPORTS = {"Recipe": "recipes", "SEMANTICS_VERSION": "recipes", "baseline_recipe": "recipes", "canary": "recipes",
            "build_training": "runner", "fine_tune": "runner", "run_seeds": "runner"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    # imported on first use, so that `python -m ftcourse info` does not pay for torch before it needs it
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
