"""Where and in what precision training runs: device, autocast, loss scaling, MFU.

bf16 autocast needs no loss scaling; fp16 needs a GradScaler; fp32 is the fallback. What
`auto` picks is decided by what the hardware can do (model/hardware.py): bf16 on GPUs and CPUs
with native bf16 (REFERENCE: ~1.8x over fp32 on an AMX CPU), fp32 on CPUs without it (where
bf16 is ~35x slower), fp16 + GradScaler on GPUs without bf16.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from model.hardware import choose_precision

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


def resolve_precision(name: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """auto: what the device does fastest (model/hardware.py); any other name as given."""
    return name if name != "auto" else choose_precision(device, cache_dir).value


@dataclass
class Precision:
    """The resolved device/precision pair and the objects that implement it."""

    device: torch.device
    name: str  # bf16 | fp16 | fp32
    reason: str = ""  # why: "requested" or what model/hardware.py found

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16 on CUDA: bf16 and fp32 keep fp32's exponent range."""
        enabled = self.name == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type, enabled=enabled)


def setup_precision(
    device: str = "auto", precision: str = "auto", cache_dir: Path | None = None
) -> Precision:
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (nanoGPT)
        torch.backends.cudnn.allow_tf32 = True
    if precision != "auto":
        return Precision(resolved, precision, f"precision={precision} requested")
    choice = choose_precision(resolved, cache_dir)
    return Precision(resolved, choice.value, choice.reason)


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of the current GPU if it is in PEAK_FLOPS, else None (CPU, unknown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization: achieved training FLOP/s over the hardware's peak."""
    return None if not peak else flops_per_token * tokens_per_s / peak
