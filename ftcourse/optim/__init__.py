"""Optimizers written from their update rules, parity-tested against torch.optim and timm.

``SGD``, ``RMSprop``, ``Adagrad``, ``Adam`` and ``AdamW`` take the same arguments, with the same
defaults and checks, as their ``torch.optim`` namesakes, give the same parameters step by step and
load their state dicts; ``Adam`` and ``AdamW`` also take ``bias_correction=False`` (BERT's original
Adam). ``LARS`` and ``LAMB`` reproduce ``timm.optim.Lars`` and ``timm.optim.Lamb(max_grad_norm=None)``.
Each class docstring gives the paper it comes from, the variant, and the per-tensor update rule;
``step()`` is that rule, written as a plain loop over the parameters of each group.

Each module imports only torch and the standard library: copy one file alone into another project
and it works unchanged.
"""
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lamb import LAMB
from .lars import LARS
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "LARS", "LAMB"]
