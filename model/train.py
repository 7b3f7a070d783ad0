"""Train a GPT on a token dataset; importable, resumable, and safe to interrupt.

    from model.train import train
    summary = train(TrainConfig(preset="tiny", max_steps=300), Path("tokens/v1"), Path("runs/a"))

Writes into out_dir: `checkpoint.pt` (latest, atomic), `metrics.jsonl` (one row per step, plus
val rows), `loss_curve.png` and `train.json` (the summary returned). `resume=True` continues
from out_dir/checkpoint.pt on exactly the batches and random numbers the run would have used.

Under torchrun (`python -m model.train_cli`, see model/distributed.py) the same function trains
one model data-parallel: DDP averages gradients, each rank takes its own block of every global
batch, losses are averaged over ranks, and rank 0 alone writes files. `batch_size` is per rank,
so a step is world_size*batch_size*grad_accum_steps sequences.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from model.checkpoint import (
    CHECKPOINT_NAME,
    check_compatible,
    load_checkpoint,
    rank_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from model.config import TrainConfig
from model.data import (
    TokenLoader,
    ValidationSet,
    read_token_manifest,
    token_folder,
    tokenizer_spec,
    validation_tokens,
)
from model.distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum,
    any_rank,
    barrier,
    gather_to_main,
    init_distributed,
)
from model.evaluate import token_losses, val_loss
from model.gpt import GPT, flops_per_token
from model.hardware import Choice, choose_threads
from model.optim import configure_optimizer, lr_at
from model.plots import plot_loss_curve
from model.precision import Precision, mfu, peak_flops, setup_precision
from pipeline.errors import DataError
from pipeline.store.fs import Folder, atomic_write

logger = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message says where the last good
    checkpoint is."""


def forward_backward(
    model: torch.nn.Module,
    batches: list[Batch],
    precision: Precision,
    scaler: torch.amp.GradScaler,
) -> float:
    """Accumulate gradients over micro-batches; the step's mean loss over all ranks (one host
    sync). Under DDP only the last micro-batch's backward all-reduces the gradients."""
    total = torch.zeros((), device=precision.device)
    for i, (x, y) in enumerate(batches):
        x = x.to(precision.device, non_blocking=True)
        y = y.to(precision.device, non_blocking=True)
        accumulate = isinstance(model, DDP) and i < len(batches) - 1
        with model.no_sync() if accumulate else contextlib.nullcontext():
            with precision.autocast():
                _, loss = model(x, y)
            loss = loss / len(batches)  # gradients of the mean over micro-batches
            scaler.scale(loss).backward()
        total += loss.detach()
    return all_reduce_mean(total).item()


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> float:
    """Unscale, clip to grad_clip (0: measure only), step, zero grads; the pre-clip grad norm."""
    scaler.unscale_(optimizer)
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)  # skipped by the scaler when fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm.item()


# compile="auto" turns torch.compile on when the run's work is at least this many FLOPs:
# compiling costs a fixed C seconds and saves a fraction s of each step's time, so it pays back
# once work >= C * (eager FLOP/s) / s. Measured with bench/train.py (mini, batch 8, bf16, on a
# 2-core EPYC Zen 4 shared with ~10 other jobs, which slows C and the steps alike): C = 225 s,
# steps 37% shorter (2.1x textbook compiled vs ~1.3x eager), eager ~7.8 GFLOP/s, so it pays
# back after ~4.7e12 FLOPs (~18 steps of 2,048 tokens). 2e13 keeps a 4x margin; short runs
# (tests, smoke runs: tiny x 40 steps is ~4e11) stay eager.
COMPILE_MIN_FLOPS = 2e13


def resolve_compile(cfg: TrainConfig, device: torch.device, vocab_size: int | None = None) -> bool:
    """cfg.compile, with "auto" resolved: on where compiling pays back within the run (enough
    training FLOPs, see COMPILE_MIN_FLOPS) and the device has a compiler backend."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    model_cfg = cfg.model_config_for(vocab_size)
    work = cfg.max_steps * cfg.tokens_per_step * flops_per_token(model_cfg)
    if work < COMPILE_MIN_FLOPS:
        return False
    if device.type == "cuda":
        return True
    # Inductor's CPU backend builds C++ at run time; without a compiler it fails at step 1.
    return device.type == "cpu" and any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def distributed_val_loss(
    model: torch.nn.Module,
    val: ValidationSet,
    context_length: int,
    batch_size: int,
    precision: Precision,
    ctx: DistContext,
) -> float:
    """Mean NLL per token over the fixed val set, each rank scoring a contiguous share of its
    windows: the same number as `val_loss` in one process, in 1/world_size of the time."""
    T, W = context_length, ctx.world_size
    windows = (len(val.tokens) - 1) // T
    if W == 1 or windows < W:
        return val_loss(model, val, T, batch_size, precision)
    lo, hi = windows * ctx.rank // W, windows * (ctx.rank + 1) // W
    nll, _ = token_losses(model, val.tokens[lo * T : hi * T + 1], T, batch_size, precision)
    total = torch.tensor([nll.sum(), nll.size], dtype=torch.float64, device=precision.device)
    all_reduce_sum(total)
    return (total[0] / total[1]).item()


def _read_rows(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """metrics.jsonl rows a resumed run keeps: those at or before the checkpoint's step."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("step", 0) <= up_to_step]


def train(
    cfg: TrainConfig,
    token_dir: Path | str | Folder,
    out_dir: Path,
    resume: bool = False,
    on_log: Callable[[dict], None] | None = None,
    ctx: DistContext | None = None,
) -> dict[str, Any]:
    """Run (or resume) training to cfg.max_steps or cfg.max_seconds; the run's summary.

    `ctx` defaults to `init_distributed(cfg.device)`: one process, or this rank under torchrun.
    `on_log` is called on rank 0 only.
    """
    token_dir, out_dir = token_folder(token_dir), Path(out_dir)
    ctx = ctx or init_distributed(cfg.device)
    info = read_token_manifest(token_dir)
    model_cfg = cfg.model_config_for(info.vocab_size)
    T = model_cfg.context_length
    # Data problems surface here, before any model is built.
    split = token_dir / "train"
    loader = TokenLoader(
        split, cfg.batch_size, T, cfg.seed, info.vocab_size, ctx.rank, ctx.world_size
    )
    val = validation_tokens(token_dir, cfg.eval_tokens, min_tokens=T + 1)
    precision = setup_precision(cfg.device, cfg.precision)
    if ctx.distributed:  # cuda:LOCAL_RANK, or cpu with gloo
        precision = Precision(ctx.device, precision.name, precision.reason)
    threads = Choice(cfg.threads, "threads set in the config") if cfg.threads else choose_threads()
    torch.set_num_threads(threads.value)
    if ctx.is_main:
        logger.info("precision %s: %s", precision.name, precision.reason)
        logger.info("%d threads: %s", threads.value, threads.reason)

    _seed_everything(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_cfg).to(precision.device)
    if ctx.rank:
        _seed_everything(cfg.seed + ctx.rank)  # but other dropout masks (nanoGPT: seed + rank)
    optimizer = configure_optimizer(model, cfg, precision.device)
    scaler = precision.grad_scaler()
    ckpt_path = out_dir / CHECKPOINT_NAME
    metrics_path = out_dir / "metrics.jsonl"
    step, tokens_seen, elapsed_before, resumed_from = 0, 0, 0.0, None
    rows: list[dict[str, Any]] = []
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        check_compatible(state, model_cfg, info.tokenizer, ckpt_path)
        own = rank_state(state, ctx.rank, ctx.world_size, ckpt_path)
        if state.get("token_dataset") != info.version_id:
            raise DataError(
                f"{ckpt_path}: trained on token dataset {state.get('token_dataset')!r} but "
                f"{token_dir} is {info.version_id!r}; its data cursor does not apply"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(own["data"])
        step = resumed_from = int(state["step"])
        tokens_seen, elapsed_before = int(state["tokens_seen"]), float(state["elapsed_s"])
        set_rng_state(own["rng"])
        rows = _read_rows(metrics_path, step)
    elif resume:
        logger.warning("%s not found: starting a fresh run", ckpt_path)
    barrier()  # every rank has read metrics.jsonl before rank 0 rewrites it
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    use_compile = resolve_compile(cfg, precision.device, info.vocab_size)
    compiled = torch.compile(model) if use_compile else model
    if ctx.is_main:
        logger.info("torch.compile %s (compile=%s)", "on" if use_compile else "off", cfg.compile)
    compiled.train()
    step_model: torch.nn.Module = compiled
    if ctx.distributed:
        device_ids = [ctx.local_rank] if precision.device.type == "cuda" else None
        step_model = DDP(compiled, device_ids=device_ids)
    flops = flops_per_token(model_cfg)
    peak = peak_flops(precision.device)
    peak = peak * ctx.world_size if peak else None  # MFU of all the job's GPUs
    tokens_per_step = ctx.world_size * cfg.tokens_per_step
    started = time.perf_counter()
    step_time, steps_run, last_saved, stopped = 0.0, 0, resumed_from, "max_steps"

    def record(row: dict[str, Any], notify: bool) -> None:
        rows.append(row)
        if not ctx.is_main:
            return
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if notify and on_log is not None:
            on_log(row)

    def evaluate_now() -> None:
        # The plain (compiled) module: DDP is only needed where gradients flow.
        loss = distributed_val_loss(compiled, val, T, cfg.batch_size, precision, ctx)
        if ctx.is_main:
            logger.info("step %d | val loss %.4f", step, loss)
        elapsed = elapsed_before + time.perf_counter() - started
        record({"step": step, "val_loss": loss, "elapsed": round(elapsed, 3)}, notify=True)

    def save() -> None:
        nonlocal last_saved
        ranks = gather_to_main({"rng": rng_state(), "data": loader.state_dict()})
        if ctx.is_main:
            state = {
                "model": model.state_dict(),  # the unwrapped module: no _orig_mod./module.
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "tokens_seen": tokens_seen,
                "elapsed_s": elapsed_before + time.perf_counter() - started,
                "rng": ranks[0]["rng"],  # rank 0's, as a single process saves them
                "data": ranks[0]["data"],
                "ranks": ranks,  # every rank's {"rng", "data"}, in rank order
                "world_size": ctx.world_size,
                "model_config": model_cfg.to_dict(),
                "train_config": cfg.model_dump(),
                "tokenizer": info.tokenizer,
                # A trained tokenizer's file text (None for GPT-2): evaluation, sampling and
                # export need nothing but the checkpoint.
                "tokenizer_spec": tokenizer_spec(token_dir),
                "token_dataset": info.version_id,
                "val_set": val.identity(),
            }
            save_checkpoint(ckpt_path, state)
        barrier()  # no rank goes on (or exits) before the checkpoint is on disk
        last_saved = step

    if step == 0:
        evaluate_now()  # the untrained model's val loss anchors the curve (~ln V)
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # per-group peaks (model/optim.py)
        batches = [loader.next_batch() for _ in range(cfg.grad_accum_steps)]
        loss = forward_backward(step_model, batches, precision, scaler)
        if not math.isfinite(loss):
            where = f"{ckpt_path} (step {last_saved})" if last_saved else "none written yet"
            raise TrainingError(f"step {step + 1}: loss is {loss}; last good checkpoint: {where}")
        grad_norm = optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        if not math.isfinite(grad_norm) and not scaler.is_enabled():
            where = f"{ckpt_path} (step {last_saved})" if last_saved else "none written yet"
            raise TrainingError(
                f"step {step + 1}: gradient norm is {grad_norm}; last good checkpoint: {where}"
            )
        dt = time.perf_counter() - t0
        step, steps_run, step_time = step + 1, steps_run + 1, step_time + dt
        tokens_seen += tokens_per_step
        elapsed = elapsed_before + time.perf_counter() - started
        row = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_step / dt,
            "mfu": mfu(flops, tokens_per_step / dt, peak),
            "elapsed": round(elapsed, 3),
        }
        record(row, notify=step % cfg.log_interval == 0)
        if step % cfg.log_interval == 0 and ctx.is_main:
            logger.info(
                "step %d/%d | loss %.4f | lr %.2e | %.0f tok/s",
                *(step, cfg.max_steps, loss, lr, row["tokens_per_s"]),
            )
        out_of_time = cfg.max_seconds is not None and any_rank(
            time.perf_counter() - started >= cfg.max_seconds, precision.device
        )  # every rank stops at the same step, or the others wait forever in all-reduce
        done = step == cfg.max_steps or out_of_time
        if step % cfg.eval_interval == 0 or done:
            evaluate_now()
        if step % cfg.checkpoint_interval == 0 or done:
            save()
        if out_of_time:
            stopped = "max_seconds"
            break

    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    summary = {
        "steps": step,
        "stopped": stopped,
        "resumed_from": resumed_from,
        "first_loss": train_rows[0]["loss"] if train_rows else None,
        "last_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_val_loss": val_rows[-1]["val_loss"] if val_rows else None,
        "tokens_seen": tokens_seen,
        "tokens_per_s": steps_run * tokens_per_step / step_time if step_time else None,
        "elapsed_s": round(elapsed_before + time.perf_counter() - started, 3),
        # Relative: the folder is renamed into versions/train/<id> when training ends.
        "checkpoint": ckpt_path.name if ckpt_path.exists() else None,
        "params": model.num_params(),
        "matmul_params": model.num_params(matmul_only=True),
        "flops_per_token": flops,
        "device": str(precision.device),
        "precision": precision.name,
        "precision_reason": precision.reason,
        "compile": use_compile,
        "threads": threads.value,
        "threads_reason": threads.reason,
        "world_size": ctx.world_size,
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.model_dump(),
        "token_dataset": info.version_id,
        "val_set": val.identity(),
    }
    if ctx.is_main:
        title = f"{cfg.preset} on {token_dir.name}"
        plot_loss_curve(rows, out_dir / "loss_curve.png", title=title)
        atomic_write(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    barrier()
    return summary
