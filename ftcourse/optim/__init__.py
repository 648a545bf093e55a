"""Optimizers written from their update rules, parity-tested against torch.optim and timm.

``SGD``, ``RMSprop``, ``Adam`` and ``AdamW`` take the same arguments, with the same defaults and
checks, as their ``torch.optim`` namesakes and give the same parameters step by step; ``Adam`` and
``AdamW`` also take ``bias_correction=False`` (BERT's original Adam). ``LARS`` and ``LAMB``
reproduce ``timm.optim.Lars`` and ``timm.optim.Lamb(max_grad_norm=None)``. Each class docstring
gives the per-tensor update rule and the paper it comes from; the steps themselves are vectorised
with ``torch._foreach_*``.
"""
from .adam import Adam, AdamW
from .lamb import LAMB
from .lars import LARS
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "RMSprop", "Adam", "AdamW", "LARS", "LAMB"]
