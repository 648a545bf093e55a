"""Per-block gradient and update norms, read from the optimizer itself.

Copy with: models.py.
Into one package folder: ``python -m ftcourse copy grad_norms --into mypkg/``.

"Do the bottom layers get vanishing gradients?" (notebook 03) and "do failed runs have vanishing
gradients?" (Mosbach et al. 2021, *On the Stability of Fine-tuning BERT*; notebook 05) are questions
about the gradient each block of the model gets, step by step. :class:`BlockNorms` answers them
with two optimizer hooks (``register_step_pre_hook`` / ``register_step_post_hook``): just before
``optimizer.step()`` it reads every block's gradient norm (after clipping: what the optimizer is
about to use) and snapshots the weights; just after, it measures the update the step applied.
A training loop's callbacks, called after ``zero_grad``, cannot see those gradients; the hooks
can, so the loop needs no change::

    recorder = BlockNorms(model, optimizer, max_steps=40)
    ...train...
    pd.DataFrame(recorder.rows)  # step, block, grad_norm, weight_norm, update_norm

Blocks are those of :func:`ftcourse.models.parameter_blocks`: ``"embeddings"``, ``0`` ... ``L-1``
(bottom to top) and ``"head"``. The snapshot costs one copy of the trainable weights a step, so
the hooks remove themselves after ``max_steps`` steps.
"""
from __future__ import annotations

import numbers

import torch

from .models import parameter_blocks


class BlockNorms:
    """Per block, at each of the first ``max_steps`` optimizer steps: the gradient norm the optimizer
    is about to use, the weight norm before the step, and the norm of the step's update. ``rows``
    holds one dict per (step, block); parameters without a gradient count as zero gradient."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_steps: int):
        if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
            raise ValueError(f"BlockNorms: max_steps must be an int >= 1, got {max_steps!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"BlockNorms: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        names = dict(model.named_parameters())
        self.blocks: dict = {}
        for name, block in parameter_blocks(model, trainable_only=False).items():
            self.blocks.setdefault(block, []).append(names[name])
        self.max_steps, self.rows, self.step = int(max_steps), [], 0
        self._snapshot, self._grads = None, None
        self.handles = [optimizer.register_step_pre_hook(self._before), optimizer.register_step_post_hook(self._after)]

    @staticmethod
    def norm(tensors) -> float:
        """The 2-norm of several tensors taken together (0.0 for none), computed in float32 or wider."""
        # fp16/bf16 are summed in float32; float64 stays float64
        squares = [t.detach().to(torch.promote_types(t.dtype, torch.float32)).pow(2).sum().double() for t in tensors]
        return torch.sqrt(torch.stack(squares).sum()).item() if squares else 0.0

    def _before(self, optimizer, args, kwargs):
        self._snapshot = {block: [p.detach().clone() for p in params] for block, params in self.blocks.items()}
        self._grads = {block: self.norm([p.grad for p in params if p.grad is not None])
                       for block, params in self.blocks.items()}

    def _after(self, optimizer, args, kwargs):
        self.step += 1
        for block, params in self.blocks.items():
            old = self._snapshot[block]
            self.rows.append({"step": self.step, "block": block, "grad_norm": self._grads[block],
                              "weight_norm": self.norm(old),
                              "update_norm": self.norm([p.detach() - o for p, o in zip(params, old)])})
        self._snapshot = None
        if self.step >= self.max_steps:  # enough: stop paying for the snapshots
            self.remove()

    def remove(self) -> None:
        """Detach the hooks (done by itself after ``max_steps`` steps)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
