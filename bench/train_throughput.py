"""Training throughput: tokens/s (and MFU on known GPUs) of the real training step.

    python bench/train_throughput.py                       # mini at batch 8 and 32
    python bench/train_throughput.py --preset tiny --batch 8 --steps 5 --precision fp32

Random tokens (throughput does not depend on them); a few warmup steps (compilation, allocator)
then timed steps of model.train's forward_backward + optimizer_step. One JSON line per batch
size on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from model.config import PRESETS, TrainConfig  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.optim import configure_optimizer  # noqa: E402
from model.precision import mfu, peak_flops, setup_precision  # noqa: E402
from model.train import forward_backward, optimizer_step  # noqa: E402


def measure(
    preset: str, batch: int, steps: int, warmup: int, precision: str, device: str, compile: bool
) -> dict:
    cfg = TrainConfig(preset=preset, batch_size=batch, device=device, precision=precision)
    model_cfg = cfg.model_config_for()
    prec = setup_precision(cfg.device, cfg.precision)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(prec.device)
    optimizer = configure_optimizer(model, cfg, prec.device)
    scaler = prec.grad_scaler()
    step_model = torch.compile(model) if compile else model
    T, V = model_cfg.context_length, model_cfg.vocab_size
    x = torch.randint(0, V, (batch, T))
    y = torch.randint(0, V, (batch, T))

    def step() -> None:
        forward_backward(step_model, [(x, y)], prec, scaler)  # .item() syncs the device
        optimizer_step(model, optimizer, scaler, cfg.grad_clip)

    for _ in range(warmup):
        step()
    if prec.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if prec.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_s = batch * T * steps / seconds
    flops = flops_per_token(model_cfg)
    return {
        "preset": preset,
        "batch_size": batch,
        "context_length": T,
        "device": str(prec.device),
        "gpu": torch.cuda.get_device_name(prec.device) if prec.device.type == "cuda" else None,
        "precision": prec.name,
        "compile": compile,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "step_ms": round(1000 * seconds / steps, 2),
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": flops,
        "mfu": mfu(flops, tokens_per_s, peak_flops(prec.device)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args(argv)
    for batch in args.batch:
        result = measure(
            args.preset, batch, args.steps, args.warmup, args.precision, args.device, args.compile
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
