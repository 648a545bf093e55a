"""What one training step costs (notebooks 12, 04 and 03): trainable parameters, seconds a step and the memory training
adds, for full fine-tuning (optionally with the embeddings and the bottom blocks frozen), LoRA and the frozen backbone
with a head, with or without gradient checkpointing.

Course harness. Measure each configuration in a fresh process (:func:`measure`, through
``ftcourse.memory.measure_in_subprocess``): memory freed by an earlier configuration stays in a process and is
reused by the next, so measurements made one after another in one process depend on their order.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

MODES = ("full", "lora", "head")


def prepare(model, mode: str, rank: int = 16, alpha: float = 16.0, checkpointing: bool = False,
            frozen_layers: int | None = None):
    """``model`` set up for ``mode``, in place: "full" (every weight trains; with ``frozen_layers=n``, the
    embeddings and the bottom n blocks frozen, ``ftcourse.freezing.freeze_bottom_layers``: n = 0 freezes the
    embeddings only), "lora" (``ftcourse.lora.add_lora`` at ``rank`` on query and value, the head trains) or "head"
    (embeddings and every block frozen, the head trains); with ``checkpointing``, gradient checkpointing of every
    block (the non-reentrant implementation: ``ftcourse.lora.enable_gradient_checkpointing``)."""
    from ..freezing import freeze_bottom_layers
    from ..lora import add_lora, enable_gradient_checkpointing
    from ..models import encoder_layers

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(checkpointing, bool):
        raise TypeError(f"checkpointing must be a bool, got {checkpointing!r}")
    if frozen_layers is not None:
        blocks = len(encoder_layers(model))
        if mode != "full":
            raise ValueError(f"frozen_layers applies to mode 'full' only, got mode {mode!r}")
        if isinstance(frozen_layers, bool) or not isinstance(frozen_layers, int) or not 0 <= frozen_layers <= blocks:
            raise ValueError(f"frozen_layers must be None or an int in 0..{blocks} (the model's blocks), got {frozen_layers!r}")
        freeze_bottom_layers(model, frozen_layers, embeddings=True)
    if mode == "lora":
        add_lora(model, r=rank, alpha=alpha)
    elif mode == "head":
        freeze_bottom_layers(model, len(encoder_layers(model)), embeddings=True)
    if checkpointing:
        if getattr(model.config, "use_cache", False):
            model.config.use_cache = False  # an encoder caches nothing; transformers would warn and set it
        enable_gradient_checkpointing(model)
    return model


def step_footprint(model_id: str, mode: str = "full", *, rank: int = 16, batch_size: int = 16, length: int = 64,
                   steps: int = 3, checkpointing: bool = False, threads: int = 1, seed: int = 0,
                   precision: str | None = None, frozen_layers: int | None = None) -> dict:
    """Train ``model_id`` in ``mode`` (:func:`prepare`) for ``1 + steps`` AdamW steps on one batch of
    ``batch_size`` random sentences of ``length`` tokens (no padding: every token costs), and return the
    trainable and total parameter counts, the mean seconds of the last ``steps`` steps (the first allocates the
    gradients and the optimizer state) and the memory the steps added (``ftcourse.memory.PeakMemory``: on CUDA
    the allocator's peak, the weights included; on a CPU the resident memory added over the weights: gradients,
    optimizer state and activations). ``precision``: a ``ftcourse.amp.Precision`` mode (None: fp32; "bf16",
    "fp16", "auto"), the forward under its autocast and the step through its scaler (notebook 04).
    ``frozen_layers``: in mode "full", the embeddings and the bottom n blocks frozen (notebook 03)."""
    from ..amp import Precision
    from ..lora import trainable_parameters
    from ..memory import PeakMemory
    from ..train import set_seed
    from .pretrained import load_model

    for name, value, low in (("batch_size", batch_size, 1), ("length", length, 2), ("steps", steps, 1),
                             ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    set_seed(seed)
    model = prepare(load_model(model_id), mode, rank=rank, checkpointing=checkpointing,
                    frozen_layers=frozen_layers).to(device).train()
    trainable, total = trainable_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    batch = {"input_ids": torch.randint(1000, vocab, (batch_size, length), generator=generator).to(device),
             "attention_mask": torch.ones(batch_size, length, dtype=torch.long, device=device)}
    labels = torch.randint(0, 2, (batch_size,), generator=generator).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = Precision(precision, device, verbose=False)

    def step():
        with amp.autocast():
            loss = F.cross_entropy(model(**batch).logits.float(), labels)
        amp.backward(loss)
        amp.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    with PeakMemory(device) as memory:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the one sync: the clock starts after the first step has finished
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    state_mb = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                   if torch.is_tensor(t)) / 2**20
    return {"mode": mode, "precision": amp.name, "rank": rank if mode == "lora" else None, "checkpointing": checkpointing, "frozen_layers": frozen_layers, "length": length,
            "trainable": trainable, "total": total, "step_s": seconds, "peak_mb": memory.peak_mb,
            "optimizer_state_mb": state_mb, "device": device.type}


def measure(model_id: str, mode: str = "full", **kwargs) -> dict:
    """:func:`step_footprint` in a fresh Python process (a few seconds to start: it imports torch again)."""
    from ..memory import measure_in_subprocess

    result, _ = measure_in_subprocess("ftcourse.course.footprint:step_footprint", model_id, mode, **kwargs)
    return result
