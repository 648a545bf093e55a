"""ftcourse: the tested companion package of a notebook course on fine-tuning Transformers.

Two layers, in two places:

Technique modules, at ``ftcourse/<name>.py``: the helpers to copy into your own project. Each
one's docstring says what to copy with it into one package folder (``Copy alone.`` or ``Copy with:
models.py, param_groups.py.``), a test copies it with exactly those files into an empty package and
imports it, and none imports the harness.

* ``train``: the training loop, ``evaluate``, ``set_seed``, callbacks, divergence detection
  (copy with ``accumulation``, ``amp``, ``memory``);
* ``accumulation``: exact gradient-accumulation windows; ``amp``: mixed precision;
  ``memory``: peak memory;
* ``batch_size``: the largest micro-batch that fits; ``early_stopping``: patience and exact
  best-weight restore; ``lr_finder``: the LR range test; ``schedules``: LR schedules as pure
  functions; ``swa``: SWA and EMA; ``stats``: paired comparisons over seeds;
* ``models``: the one map of each model family's parts; ``param_groups``: no weight decay on
  biases and norms; ``freezing``, ``llrd``, ``reinit``: layer-wise techniques built on ``models``;
* ``lora``: LoRA adapters, merging and adapter-only state dicts (copy with ``models``);
* ``grad_norms``: per-block gradient and update norms read by optimizer hooks (copy with ``models``);
* ``optim``: SGD, RMSprop, Adagrad, Adam/AdamW (and BERTAdam), LARS, LAMB from scratch, one file
  each, each copied alone.

The course harness, at ``ftcourse/course/``: what the notebooks use to declare, run and report
experiments (``ftcourse.course``'s docstring lists its modules): ``recipes`` (a run as data),
``runner`` (``build_training``, ``fine_tune``), ``declarations`` (what each notebook runs), ``bank``
(the seed bank: each declared run computed once and stored),
``profiles``, ``data``, ``pretrained`` (the offline MiniLM), ``reports``, ``combined``, ``footprint``
(the step costs of notebooks 12 and 04), ``stopping_rules`` (notebook 10's HF-against-ours replays), ``ddp_lesson`` (notebook 13's code for several processes),
``notebook`` (first and last cells, the thread count), ``estimate``, ``preflight`` (what ``run`` and
``estimate`` check first), ``copying`` (``python -m ftcourse copy``) and ``cli``
(``python -m ftcourse info | run | get-data | estimate | copy | bank``).
"""
__version__ = "0.1.0"
