"""`llmforge doctor`: what training will use on this machine and why, in one screen.

    from model.doctor import diagnose, format_diagnosis
    print(format_diagnosis(diagnose(TrainConfig())))

The device, precision and threads are decided exactly as `train` decides them
(model/precision.py, model/hardware.py); the matmul speeds are measured here, in fp32 and bf16
(and fp16 on a GPU), so a surprising choice can be checked against the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.config import TrainConfig
from model.hardware import choose_precision, choose_threads, cpu_info, matmul_gflops
from model.precision import resolve_device
from model.train import COMPILE_MIN_FLOPS, resolve_compile

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def diagnose(cfg: TrainConfig, cache_dir: Path | None = None, measure: bool = True) -> dict:
    """The device, precision, threads and compile setting `cfg` trains with here, and why."""
    device = resolve_device(cfg.device)
    auto = choose_precision(device, cache_dir)
    if cfg.precision == "auto":
        precision = {"value": auto.value, "reason": auto.reason, "auto": auto.value}
    else:
        reason = f"set in the config (auto would pick {auto.value}: {auto.reason})"
        precision = {"value": cfg.precision, "reason": reason, "auto": auto.value}
    if cfg.threads:
        threads = {"value": cfg.threads, "reason": "set in the config"}
    else:
        choice = choose_threads()
        threads = {"value": choice.value, "reason": choice.reason}
    report: dict[str, Any] = {
        "device": str(device),
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "precision": precision,
        "threads": threads,
        "compile": cfg.compile,
        "compile_on": resolve_compile(cfg, device),
        "matmul_gflops": {},
    }
    if measure:
        torch.set_num_threads(threads["value"])  # measure as training would run
        n = 4096 if device.type == "cuda" else 512
        names = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
        report["matmul_size"] = n
        report["matmul_gflops"] = {
            name: matmul_gflops(_DTYPES[name], device, n, budget_s=0.2) for name in names
        }
    return report


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        cpu = cpu_info()
        return f"{cpu.model} ({cpu.arch}, torch kernels {cpu.capability})"
    return device.type


def format_diagnosis(report: dict) -> str:
    precision, threads = report["precision"], report["threads"]
    compile_ = report["compile"]
    compile_text = "on" if report.get("compile_on", compile_ is True) else "off"
    lines = [
        f"device     {report['device']}: {report['device_name']}, torch {report['torch']}",
        f"precision  {precision['value']}: {precision['reason']}",
        f"threads    {threads['value']}: {threads['reason']}",
        f"compile    {compile_text} for this config (train.compile = {compile_!r}; auto compiles"
        f" runs of >= {COMPILE_MIN_FLOPS:.0e} training FLOPs where a compiler exists)",
    ]
    gflops = report["matmul_gflops"]
    if gflops:
        speeds = ", ".join(f"{name} {value:,.1f}" for name, value in gflops.items())
        n = report["matmul_size"]
        line = f"matmul     {n}x{n}x{n} GFLOP/s: {speeds}"
        if gflops.get("fp32"):
            line += f" (bf16/fp32 {gflops['bf16'] / gflops['fp32']:.2f}x)"
        lines.append(line)
    return "\n".join(lines)
