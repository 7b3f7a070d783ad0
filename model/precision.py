"""Where and in what precision training runs: device, autocast, loss scaling, MFU.

bf16 autocast needs no loss scaling and works on CUDA GPUs that support it and on CPUs
(REFERENCE: ~1.8x over fp32 on an AMX CPU); fp16 needs a GradScaler; fp32 is the fallback.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

# Peak dense bf16 tensor-core FLOP/s by GPU name (REFERENCE, Training; vendor datasheets).
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_device(name: str = "auto") -> torch.device:
    """cuda if present, else mps, else cpu; an explicit name that is unavailable is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' requested but torch.backends.mps.is_available() is False")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where supported (CUDA bf16 GPUs, CPU), fp16 on older GPUs, fp32 on MPS."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    """The resolved device/precision pair and the objects that implement it."""

    device: torch.device
    name: str  # bf16 | fp16 | fp32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16 on CUDA: bf16 and fp32 keep fp32's exponent range."""
        enabled = self.name == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type, enabled=enabled)


def setup_precision(device: str = "auto", precision: str = "auto") -> Precision:
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (nanoGPT)
        torch.backends.cudnn.allow_tf32 = True
    return Precision(resolved, resolve_precision(precision, resolved))


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of the current GPU if it is in PEAK_FLOPS, else None (CPU, unknown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization: achieved training FLOP/s over the hardware's peak."""
    return None if not peak else flops_per_token * tokens_per_s / peak
