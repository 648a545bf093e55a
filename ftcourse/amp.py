"""Mixed precision with ``torch.amp`` (never the deprecated ``torch.cuda.amp``).

Copy alone.
Into one package folder: ``python -m ftcourse copy amp --into mypkg/``.

Modes: ``None``/``"fp32"`` (full precision), ``"fp16"`` (CUDA: fp16 autocast with a
``GradScaler``, because fp16's smallest normal number is 6e-5 and small gradients underflow
to zero without loss scaling), ``"bf16"`` (autocast to bfloat16: fp32's exponent range, so no
scaler), ``"auto"`` (CUDA: bf16 where the GPU computes it natively, else fp16 with a scaler;
elsewhere fp32, with a printed message).

Native bf16 means compute capability >= 8.0 (Ampere: A100, A10, RTX 30xx; Hopper; ...).
``torch.cuda.is_bf16_supported()`` is not that test: by default it also counts emulation and
returns True on a T4 (capability 7.5, Colab's free GPU), where bf16 autocast runs far slower than
fp16. So ``"auto"`` on a T4 is fp16 + ``GradScaler``.

A mode the device cannot honour falls back with a printed message, never silently:
fp16 on CPU becomes bf16 (CPU autocast supports bf16), bf16 on a CUDA GPU without native bf16
becomes fp16 with a scaler, anything on MPS becomes fp32. Each distinct message (the "auto" choice,
a fallback) is printed once per process, not once per ``Precision``: a notebook makes one per run.

Reference: PyTorch "Automatic Mixed Precision" docs (torch.amp.autocast, torch.amp.GradScaler);
Micikevicius et al. 2018, "Mixed Precision Training" (loss scaling).
"""
from __future__ import annotations

import contextlib

import torch

MODES = (None, "fp32", "fp16", "bf16", "auto")


NATIVE_BF16_CAPABILITY = (8, 0)

# Messages already printed by this process. A notebook builds one Precision per run (51 in one
# notebook), and the choice or fallback is the same every time: say it once, not once per run.
_said: set[str] = set()


def say_once(message: str) -> bool:
    """Print ``[ftcourse.amp] message`` the first time this process sees ``message``; True if printed.

    Each distinct message is printed once per process (another GPU, mode or fallback is another
    message, and is printed too); restart the kernel to see them again.
    """
    if message in _said:
        return False
    _said.add(message)
    print(f"[ftcourse.amp] {message}")
    return True


def cuda_has_native_bf16(device: str | torch.device = "cuda") -> bool:
    """True on a GPU of compute capability >= 8.0 (see the module docstring; a T4 is 7.5)."""
    return tuple(torch.cuda.get_device_capability(torch.device(device))) >= NATIVE_BF16_CAPABILITY


def _gpu_words(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}"


def _resolve(mode: str | None, device: torch.device, verbose: bool) -> torch.dtype | None:
    if mode not in MODES:
        raise ValueError(f"amp must be one of {', '.join(map(repr, MODES))}, got {mode!r}")

    def say(message):
        if verbose:
            say_once(message)

    def fallback(to, why):
        say(f"{why}: using {to} instead of {mode}.")
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[to]

    if mode in (None, "fp32"):
        return None
    device_type = device.type
    if device_type == "cuda":
        native = cuda_has_native_bf16(device)
        if mode == "auto":
            choice = "bf16" if native else "fp16"
            say(f"amp='auto' on {_gpu_words(device)}: {choice}"
                + ("" if native else " with a GradScaler (no native bfloat16 below capability 8.0)") + ".")
            return torch.bfloat16 if native else torch.float16
        if mode == "bf16" and not native:
            return fallback("fp16", f"{_gpu_words(device)} has no native bfloat16 (autocast would emulate it, "
                                    "far slower than fp16)")
        return torch.float16 if mode == "fp16" else torch.bfloat16
    if device_type == "cpu":
        if mode == "auto":
            # CPU bf16 autocast is often slower than fp32 (notebook 04 measures it): opt in with "bf16".
            return fallback("fp32", "no mixed precision on CPU unless asked for (bf16 autocast is often slower there; amp='bf16' opts in)")
        if mode == "fp16":
            # torch can autocast to fp16 on CPU (with GradScaler("cpu")), but bf16 has fp32's
            # exponent range and needs no loss scaling, so the course runs CPU mixed precision in bf16.
            return fallback("bf16", "on CPU the course's mixed precision is bfloat16 (fp32's range, no loss scaling)")
        return torch.bfloat16
    return fallback("fp32", f"mixed precision is not supported on {device_type} by this course")


class Precision:
    """Autocast context, loss scaling and the optimizer step, for one device and mode.

    The loop calls, per optimizer step: ``with p.autocast(): loss = ...``; ``p.backward(loss)``
    for each micro-batch; ``p.unscale_(optimizer)`` before clipping (so the clip threshold is in
    true gradient units); ``stepped = p.step(optimizer)``; the scheduler steps only if ``stepped``
    (a step skipped for inf/nan gradients must not advance the lr schedule).
    """

    def __init__(self, mode: str | None = None, device: str | torch.device = "cpu", *, scaler=None, verbose: bool = True):
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        self.device_type = device.type
        self.dtype = _resolve(mode, device, verbose)
        if scaler is None and self.dtype == torch.float16:
            scaler = torch.amp.GradScaler(self.device_type)
        self.scaler = scaler
        self.skipped_steps = 0
        self.last_scale: float | None = None  # the loss scale after the last step(), as read there

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> bool:
        """Step the optimizer (through the scaler); False when the scaler skipped the step."""
        if self.scaler is None:
            optimizer.step()
            return True
        # Host reads (GPU syncs): the scale before, found_inf inside scaler.step() (torch's own), and the
        # scale after the update, which is what tells a skipped step. After the training loop's own read
        # of the loss and gradient norm, only the last one waits for the GPU (for the optimizer step).
        scale_before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        self.last_scale = self.scaler.get_scale()
        # The scale only ever decreases when inf/nan gradients made the scaler skip the step.
        stepped = self.last_scale >= scale_before
        self.skipped_steps += not stepped
        return stepped

    @property
    def loss_scale(self) -> float | None:
        return self.scaler.get_scale() if self.scaler is not None else None

    def __repr__(self) -> str:
        return f"Precision({self.name} on {self.device_type}, scaler={'on' if self.scaler else 'off'})"
