"""ftcourse: the tested companion package of a notebook course on fine-tuning Transformers.

Two layers, imported the same flat way (``from ftcourse.llrd import llrd_param_groups``):

Technique modules: the helpers to copy into your own project. Each one's docstring says what to
copy with it (``Copy alone.`` or ``Copy with: models.py, param_groups.py.``), a test copies it
with exactly those files into an empty package and imports it, and none imports the harness.

* ``train``: the training loop, ``evaluate``, ``set_seed``, callbacks, divergence detection
  (copy with ``accumulation``, ``amp``, ``memory``);
* ``accumulation``: exact gradient-accumulation windows; ``amp``: mixed precision;
  ``memory``: peak memory;
* ``batch_size``: the largest micro-batch that fits; ``early_stopping``: patience and exact
  best-weight restore; ``lr_finder``: the LR range test; ``schedules``: LR schedules as pure
  functions; ``swa``: SWA and EMA; ``stats``: paired comparisons over seeds;
* ``models``: the one map of each model family's parts; ``param_groups``: no weight decay on
  biases and norms; ``freezing``, ``llrd``, ``reinit``: layer-wise techniques built on ``models``;
* ``optim``: SGD, RMSprop, Adagrad, Adam/AdamW (and BERTAdam), LARS, LAMB from scratch, one file
  each, each copied alone.

Course harness: what the notebooks use to run and report experiments.

* ``data``: SST-2 with its three splits; ``profiles``: run sizes; ``experiment``: ``fine_tune``,
  ``run_seeds``, plots, claims tables; ``recipe``: notebook 11's combined recipe; ``plan``:
  what each notebook runs; ``estimate``: predicted minutes per notebook on this device; ``cli``:
  ``python -m ftcourse info | run | get-data | estimate``; ``notebook``: the first and last cells.
"""
__version__ = "0.1.0"
