"""Train a GPT on a token dataset; importable, resumable, and safe to interrupt.

    from model.train import train
    summary = train(TrainConfig(preset="tiny", max_steps=300), Path("tokens/v1"), Path("runs/a"))

Writes into out_dir: `checkpoint.pt` (latest, atomic), `metrics.jsonl` (one row per step, plus
val rows), `loss_curve.png` and `train.json` (the summary returned). `resume=True` continues
from out_dir/checkpoint.pt on exactly the batches and random numbers the run would have used.
How many steps it makes is its plan (model/sizing.py): max_steps, or what fits a time or FLOP
budget, fixed before step 1 and kept in the checkpoint. `train.init_from` starts from a base
model's weights and architecture (a Hugging Face GPT-2 folder or an earlier checkpoint,
model/base.py) instead of random ones; a resume continues its own checkpoint.

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

from model.base import read_base
from model.checkpoint import (
    CHECKPOINT_NAME,
    check_compatible,
    load_checkpoint,
    rank_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from model.config import ModelConfig, TrainConfig
from model.data import (
    TokenLoader,
    ValidationSet,
    encoding_for,
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
    max_over_ranks,
)
from model.evaluate import token_losses
from model.gpt import GPT, flops_per_token
from model.hardware import Choice, choose_threads, hardware_name
from model.optim import configure_optimizer, lr_at
from model.plots import plot_loss_curve
from model.precision import Precision, mfu, peak_flops, setup_precision
from model.sizing import (
    BUDGET_OVERRUN,
    PROBE_MAX_FRACTION,
    PROBE_STEPS,
    PROBE_WARMUP_STEPS,
    RETIME_MIN_STEPS,
    SIZING_STEPS,
    RunPlan,
    choose_depth,
    fitted_plan,
    flops_steps,
    retime_step,
    retimed_plan,
    seconds_steps,
    step_schedule,
)
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
# The same payback for a time budget: compiling took C = 225 s there, so a budget under 4x
# that (the same margin) stays eager: the compile would eat the budget, not speed it up.
COMPILE_MIN_SECONDS = 4 * 225


def resolve_compile(
    cfg: TrainConfig,
    device: torch.device,
    vocab_size: int | None = None,
    model_cfg: ModelConfig | None = None,
) -> bool:
    """cfg.compile, with "auto" resolved: on where compiling pays back within the run (enough
    training FLOPs, see COMPILE_MIN_FLOPS) and the device has a compiler backend."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    model_cfg = model_cfg or cfg.model_config_for(vocab_size, depth=1)  # auto: its smallest
    work = cfg.max_steps * cfg.step_tokens(model_cfg.context_length) * flops_per_token(model_cfg)
    if cfg.max_flops is not None:
        work = min(work, cfg.max_flops)
    if work < COMPILE_MIN_FLOPS:
        return False
    if cfg.max_seconds is not None and cfg.max_seconds < COMPILE_MIN_SECONDS:
        return False
    if device.type == "cuda":
        return True
    # Inductor's CPU backend builds C++ at run time; without a compiler it fails at step 1.
    return device.type == "cpu" and any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def distributed_val_metrics(
    model: torch.nn.Module,
    val: ValidationSet,
    context_length: int,
    batch_size: int,
    precision: Precision,
    ctx: DistContext,
    byte_lengths: np.ndarray | None = None,
    eot_token: int | None = None,
) -> tuple[float, float | None]:
    """Mean NLL per token and bits per byte (None without `byte_lengths`) over the fixed val
    set, each rank scoring a contiguous share of its windows: the same numbers as `val_loss`
    and `bits_per_byte` in one process, in 1/world_size of the time."""
    T, W = context_length, ctx.world_size
    windows = (len(val.tokens) - 1) // T
    if W == 1 or windows < W:
        lo, hi = 0, windows
    else:
        lo, hi = windows * ctx.rank // W, windows * (ctx.rank + 1) // W
    nll, targets = token_losses(model, val.tokens[lo * T : hi * T + 1], T, batch_size, precision)
    text_nll, n_bytes = float("nan"), 0.0
    if byte_lengths is not None:
        keep = targets != eot_token
        text_nll, n_bytes = nll[keep].sum(), byte_lengths[targets[keep]].sum()
    sums = [nll.sum(), nll.size, text_nll, n_bytes]
    total = torch.tensor(sums, dtype=torch.float64, device=precision.device)
    if W > 1 and windows >= W:
        all_reduce_sum(total)
    loss = (total[0] / total[1]).item()
    if byte_lengths is None or total[3].item() == 0:
        return loss, None
    return loss, (total[2] / (math.log(2) * total[3])).item()


def _clock_time(seconds: float) -> str:
    """12 s, 4m05s, 1h02m: an ETA at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def time_steps(
    step: Callable[[], object], clock: Callable[[], float], warmup: int, steps: int, max_s: float
) -> tuple[float, int]:
    """Mean seconds per call of `step` after `warmup` untimed calls, over `steps` timed calls
    or fewer once they took max_s (at least one); and how many were timed."""
    for _ in range(warmup):
        step()
    timed, total = 0, 0.0
    while timed < steps and (timed == 0 or total < max_s):
        t0 = clock()
        step()
        total += clock() - t0
        timed += 1
    return total / timed, timed


def _read_rows(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """metrics.jsonl rows a resumed run keeps: those at or before the checkpoint's step."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("step", 0) <= up_to_step]


def _resume_state(ckpt_path: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None for a fresh start. A step-0 checkpoint (a
    budgeted run writes one to time the write) holds nothing a fresh start would not redo."""
    if not resume:
        return None
    if not ckpt_path.exists():
        logger.warning("%s not found: starting a fresh run", ckpt_path)
        return None
    state = load_checkpoint(ckpt_path)
    return state if int(state["step"]) > 0 else None


def token_byte_lengths(encoding: Any, size: int = 0) -> np.ndarray:
    """UTF-8 bytes each token id decodes to (0 where the encoding has no such id), for at
    least `size` ids: the bytes of any target sequence are then a sum, not a decode."""
    lengths = np.zeros(max(encoding.n_vocab, size), dtype=np.int64)
    for token in range(encoding.n_vocab):
        with contextlib.suppress(KeyError):  # gaps in some encodings' id ranges
            lengths[token] = len(encoding.decode_single_token_bytes(token))
    return lengths


def train(
    cfg: TrainConfig,
    token_dir: Path | str | Folder,
    out_dir: Path,
    resume: bool = False,
    on_log: Callable[[dict], None] | None = None,
    ctx: DistContext | None = None,
    clock: Callable[[], float] = time.perf_counter,
    storage_root: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) training to its plan (model/sizing.py): cfg.max_steps, or the steps
    that fit cfg.max_seconds / cfg.max_flops; the run's summary.

    `ctx` defaults to `init_distributed(cfg.device)`: one process, or this rank under torchrun.
    `on_log` is called on rank 0 only. `clock` (seconds) times steps and budgets; tests pass
    a fake one. `storage_root` is where a run id in cfg.init_from is looked up.
    """
    token_dir, out_dir = token_folder(token_dir), Path(out_dir)
    ctx = ctx or init_distributed(cfg.device)
    info = read_token_manifest(token_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    metrics_path = out_dir / "metrics.jsonl"
    state = _resume_state(ckpt_path, resume)
    # init_from: the base model's architecture (a resume keeps its own checkpoint's weights).
    base, base_record, base_cfg = None, None, None
    if cfg.init_from is not None and state is not None:
        base_record = state.get("init_from") or {}
        if base_record.get("ref") != cfg.init_from:
            raise DataError(
                f"{ckpt_path}: started from {base_record.get('ref')!r}, not train.init_from="
                f"{cfg.init_from}; resume with the same init_from or start a new run"
            )
        base_cfg = ModelConfig.from_dict(state["model_config"])
    elif cfg.init_from is not None:
        base = read_base(cfg.init_from, storage_root)
        base.check_tokenizer(info.tokenizer, info.vocab_size, tokenizer_spec(token_dir), token_dir)
        base_cfg, base_record = base.model_config(cfg), base.record()
        if ctx.is_main:
            logger.info("init_from %s (%s, sha256 %s)", base.path, base.kind, base.sha256[:12])
    if base_cfg is not None:
        T = base_cfg.context_length
    else:
        T = cfg.model_config_for(info.vocab_size, depth=1).context_length  # the same at any depth
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
    # Val bits per byte: the bytes each target token stands for (EOT excluded).
    byte_lengths = token_byte_lengths(encoding_for(token_dir), info.vocab_size)
    tokens_per_step = ctx.world_size * cfg.step_tokens(T)

    sizing: dict[str, Any] | None = None
    depth = None
    auto = cfg.preset == "auto" and base_cfg is None  # an imported model is never resized
    if auto and state is not None:  # resume: the depth the run chose, kept
        if (state.get("train_config") or {}).get("preset") != "auto" or not state.get("sizing"):
            raise DataError(f"{ckpt_path}: not a checkpoint of a preset=auto run")
        sizing = state["sizing"]
        depth = int(sizing["depth"])
    elif auto:
        started_sizing = clock()

        def measure(arch: ModelConfig) -> float:
            flops = measure_flops(arch, cfg, precision, clock)
            total = torch.tensor([flops], dtype=torch.float64, device=precision.device)
            return all_reduce_mean(total).item()  # every rank sizes alike

        train_tokens = info.tokens_train or loader.total_tokens
        chosen = choose_depth(cfg, info.vocab_size, train_tokens, tokens_per_step, measure)
        sizing = chosen.to_dict() | {"sizing_s": round(clock() - started_sizing, 3)}
        depth = chosen.depth
        if ctx.is_main:
            logger.info("preset auto: %s", chosen.reason)
    model_cfg = base_cfg or cfg.model_config_for(info.vocab_size, depth=depth)

    _seed_everything(cfg.seed)  # the same initial weights on every rank
    model = GPT(model_cfg)
    if base is not None:
        model.load_state_dict(base.state_dict(model_cfg))
        del base  # its weights are the model's now
    model = model.to(precision.device)
    if ctx.rank:
        _seed_everything(cfg.seed + ctx.rank)  # but other dropout masks (nanoGPT: seed + rank)
    optimizer = configure_optimizer(model, cfg, precision.device)
    scaler = precision.grad_scaler()
    step, tokens_seen, elapsed_before, resumed_from = 0, 0, 0.0, None
    rows: list[dict[str, Any]] = []
    plan: RunPlan | None = None
    if state is not None:
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
        saved = RunPlan.from_dict(state["plan"]) if state.get("plan") else None
        # A measured plan is kept (measuring again would change it); every other plan is a
        # function of the config, so a resume with a new max_steps or budget plans anew.
        budget = (cfg.max_seconds, cfg.max_flops)
        if saved and saved.fitted and saved.step_s is not None:
            plan = saved if (saved.budget_s, saved.max_flops) == budget else None
        del state
    barrier()  # every rank has read metrics.jsonl before rank 0 rewrites it
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    use_compile = resolve_compile(cfg, precision.device, model_cfg=model_cfg)
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
    started = clock()
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
        loss, bpb = distributed_val_metrics(
            compiled, val, T, cfg.batch_size, precision, ctx, byte_lengths, info.eot_token
        )
        if ctx.is_main:
            shown = "n/a" if bpb is None else f"{bpb:.4f}"
            logger.info("step %d | val bpb %s | val loss %.4f", step, shown, loss)
        elapsed = elapsed_before + clock() - started
        row = {"step": step, "val_loss": loss, "val_bpb": bpb, "elapsed": round(elapsed, 3)}
        record(row, notify=True)

    def save() -> None:
        nonlocal last_saved
        ranks = gather_to_main({"rng": rng_state(), "data": loader.state_dict()})
        if ctx.is_main:
            checkpoint = {
                "model": model.state_dict(),  # the unwrapped module: no _orig_mod./module.
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "tokens_seen": tokens_seen,
                "elapsed_s": elapsed_before + clock() - started,
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
                "plan": plan.to_dict() if plan else None,  # resume follows the same plan
                "sizing": sizing,  # preset auto: the depth chosen, and why
                "init_from": base_record,  # the base model: ref, kind, path, sha256
            }
            save_checkpoint(ckpt_path, checkpoint)
        barrier()  # no rank goes on (or exits) before the checkpoint is on disk
        last_saved = step

    def train_step() -> float:
        batches = [loader.next_batch() for _ in range(cfg.grad_accum_steps)]
        loss = forward_backward(step_model, batches, precision, scaler)
        return loss

    def probe_speed() -> tuple[float, int]:
        """Seconds per step, timed on rehearsal steps that are then undone: the weights,
        optimizer, scaler, data cursor and RNGs are put back, so the run trains exactly as
        it would have without them (its numbers depend on the plan alone)."""
        nonlocal optimizer, scaler
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        cursor, rng = loader.state_dict(), rng_state()

        def rehearse() -> None:
            train_step()
            optimizer_step(model, optimizer, scaler, cfg.grad_clip)

        max_s = PROBE_MAX_FRACTION * (cfg.max_seconds or math.inf)
        step_s, timed = time_steps(rehearse, clock, PROBE_WARMUP_STEPS, PROBE_STEPS, max_s)
        model.load_state_dict(weights)
        optimizer = configure_optimizer(model, cfg, precision.device)  # fresh: no moments
        scaler = precision.grad_scaler()
        loader.load_state_dict(cursor)
        set_rng_state(rng)
        return step_s, timed

    def make_plan(eval_s: float) -> RunPlan:
        budget = cfg.max_seconds is not None or cfg.max_flops is not None
        flop_steps = None
        if cfg.max_flops is not None:
            flop_steps = flops_steps(cfg.max_flops, tokens_per_step, flops)
        if not (budget and cfg.fit_schedule_to_budget):
            return step_schedule(cfg, flop_steps)
        if step > 0 and cfg.max_seconds is not None:  # too late to measure from the start
            logger.warning(
                "%s has no plan for max_seconds %g: following the max_steps schedule, cut at "
                "the budget",
                *(ckpt_path, cfg.max_seconds),
            )
            return step_schedule(cfg, flop_steps)
        limits, reasons = {"max_steps": cfg.max_steps}, {}
        measured: dict[str, Any] = {}
        if flop_steps is not None:
            limits["max_flops"] = flop_steps
            reasons["max_flops"] = (
                f"max_flops {cfg.max_flops:.4g} // ({tokens_per_step:,} tokens/step x "
                f"{flops:,} FLOPs/token) = {flop_steps:,} steps"
            )
        if cfg.max_seconds is not None:
            step_s, timed = probe_speed()
            t0 = clock()
            save()  # the step-0 checkpoint, timed: what each later write will cost
            checkpoint_s = clock() - t0
            step_s, eval_s, checkpoint_s = max_over_ranks(
                [step_s, eval_s, checkpoint_s], precision.device
            )
            remaining = cfg.max_seconds - (clock() - started) - checkpoint_s  # + the next
            fit = seconds_steps(
                remaining,
                step_s,
                eval_s,
                checkpoint_s,
                cfg.eval_interval,
                cfg.checkpoint_interval,
                cfg.max_steps,
            )
            limits["max_seconds"] = fit
            reasons["max_seconds"] = (
                f"max_seconds {cfg.max_seconds:g}: {remaining:.1f} s left after setup fit "
                f"{fit:,} steps of {step_s:.3g} s (timed over {timed}), a val pass "
                f"({eval_s:.3g} s) every {cfg.eval_interval} and a checkpoint "
                f"({checkpoint_s:.3g} s) every {cfg.checkpoint_interval}"
            )
            measured = {
                "tokens_per_s": tokens_per_step / step_s,
                "step_s": step_s,
                "eval_s": eval_s,
                "checkpoint_s": checkpoint_s,
                "probe_steps": timed,
            }
        return fitted_plan(cfg, limits, reasons, **measured)

    if step == 0:
        t0 = clock()
        evaluate_now()  # the untrained model's val loss anchors the curve (~ln V)
        eval_s = clock() - t0
        if use_compile:  # the first pass compiled the eval graph: time a second one
            t0 = clock()
            distributed_val_metrics(compiled, val, T, cfg.batch_size, precision, ctx)
            eval_s = clock() - t0
    if plan is None:
        plan = make_plan(eval_s if step == 0 else 0.0)
        if ctx.is_main:
            logger.info("%s; %s", plan.describe(), plan.reason)
        record({"step": step, "plan": plan.to_dict()}, notify=True)
    stopped = plan.limited_by
    retime_at = retime_step(plan)

    def retime() -> RunPlan:
        """The plan with its steps fitted again to the time left, at the speed of this run's
        own steps so far (model/sizing.py RETIME_MIN_STEPS)."""
        spent, step_s = max_over_ranks(
            [elapsed_before + clock() - started, step_time / steps_run], precision.device
        )
        due = (step % cfg.eval_interval == 0) * plan.eval_s + (
            step % cfg.checkpoint_interval == 0
        ) * plan.checkpoint_s  # about to run at this step
        fit = seconds_steps(
            cfg.max_seconds - spent - due,
            step_s,
            plan.eval_s,
            plan.checkpoint_s,
            cfg.eval_interval,
            cfg.checkpoint_interval,
            cfg.max_steps - step,
            start=step,
        )
        limits = {"max_steps": cfg.max_steps, "max_seconds": step + fit}
        if cfg.max_flops is not None:
            limits["max_flops"] = flops_steps(cfg.max_flops, tokens_per_step, flops)
        return retimed_plan(plan, step, limits, step_s, steps_run)

    # A fitted time budget is the whole run's (resumes included), with some grace for
    # misjudged speed; unfitted, max_seconds is this call's as it always was.
    deadline = None
    if cfg.max_seconds is not None:
        deadline = cfg.max_seconds * (1 + BUDGET_OVERRUN) if plan.fitted else cfg.max_seconds

    def out_of_time() -> bool:
        if deadline is None:
            return False
        spent = clock() - started + (elapsed_before if plan.fitted else 0.0)
        # every rank stops at the same step, or the others wait forever in all-reduce
        return any_rank(spent >= deadline, precision.device)

    while step < plan.steps:
        t0 = clock()
        lr = lr_at(step, cfg, plan.decay_steps, plan.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # per-group peaks (model/optim.py)
        loss = train_step()
        if not math.isfinite(loss):
            where = f"{ckpt_path} (step {last_saved})" if last_saved else "none written yet"
            raise TrainingError(f"step {step + 1}: loss is {loss}; last good checkpoint: {where}")
        grad_norm = optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        if not math.isfinite(grad_norm) and not scaler.is_enabled():
            where = f"{ckpt_path} (step {last_saved})" if last_saved else "none written yet"
            raise TrainingError(
                f"step {step + 1}: gradient norm is {grad_norm}; last good checkpoint: {where}"
            )
        dt = clock() - t0
        step, steps_run, step_time = step + 1, steps_run + 1, step_time + dt
        tokens_seen += tokens_per_step
        elapsed = elapsed_before + clock() - started
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
            eta = (plan.steps - step) * step_time / steps_run  # at this call's mean step time
            logger.info(
                "step %d/%d | loss %.4f | lr %.2e | %.0f tok/s | ETA %s",
                *(step, plan.steps, loss, lr, row["tokens_per_s"], _clock_time(eta)),
            )
        if step == retime_at and steps_run >= RETIME_MIN_STEPS // 2:
            plan = retime()
            if ctx.is_main:
                logger.info("%s; %s", plan.describe(), plan.reason)
            record({"step": step, "plan": plan.to_dict()}, notify=True)
        timed_out = out_of_time()
        done = step == plan.steps or timed_out
        if step % cfg.eval_interval == 0 or done:
            evaluate_now()
        if step % cfg.checkpoint_interval == 0 or done:
            save()
        if timed_out:
            stopped = "max_seconds"
            if plan.fitted and ctx.is_main:
                logger.warning(
                    "max_seconds %g (+%d%% grace) ran out at step %d of the %d planned: the "
                    "speed measured at the start was not kept up",
                    *(cfg.max_seconds, round(100 * BUDGET_OVERRUN), step, plan.steps),
                )
            break

    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    summary = {
        "steps": step,
        "stopped": stopped,
        "schedule_finished": plan.fitted and step == plan.steps,
        "resumed_from": resumed_from,
        "first_loss": train_rows[0]["loss"] if train_rows else None,
        "last_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_val_bpb": val_rows[-1].get("val_bpb") if val_rows else None,
        "final_val_loss": val_rows[-1]["val_loss"] if val_rows else None,
        "tokens_seen": tokens_seen,
        "tokens_per_s": steps_run * tokens_per_step / step_time if step_time else None,
        "elapsed_s": round(elapsed_before + clock() - started, 3),
        # Relative: the folder is renamed into versions/train/<id> when training ends.
        "checkpoint": ckpt_path.name if ckpt_path.exists() else None,
        "planned_steps": plan.steps,
        "plan_summary": plan.describe(),
        "plan": plan.to_dict(),
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
        "optimizer": cfg.optimizer_for(model_cfg),  # optimizer "auto" resolved
        "token_dataset": info.version_id,
        "val_set": val.identity(),
        "hardware": hardware_name(precision.device),
    }
    if base_record is not None:
        summary["init_from"] = base_record
    if sizing is not None:
        summary |= {"depth": sizing["depth"], "sizing_reason": sizing["reason"], "sizing": sizing}
    if ctx.is_main:
        title = f"{cfg.preset} on {token_dir.name}"
        plot_loss_curve(rows, out_dir / "loss_curve.png", title=title)
        atomic_write(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    barrier()
    return summary


def measure_flops(
    arch: ModelConfig, cfg: TrainConfig, precision: Precision, clock: Callable[[], float]
) -> float:
    """Training FLOP/s of a fresh `arch` model on random tokens: SIZING_STEPS timed steps of
    one micro-batch after an untimed one (eager: a compiled run is faster than this says)."""
    probe = GPT(arch).to(precision.device)
    optimizer = configure_optimizer(probe, cfg, precision.device)
    scaler = precision.grad_scaler()
    x = torch.randint(arch.vocab_size, (cfg.batch_size, arch.context_length + 1))
    batch = [(x[:, :-1].contiguous(), x[:, 1:].contiguous())]

    def one() -> None:
        forward_backward(probe, batch, precision, scaler)
        optimizer_step(probe, optimizer, scaler, cfg.grad_clip)

    step_s, _ = time_steps(one, clock, 1, SIZING_STEPS, math.inf)
    return flops_per_token(arch) * cfg.batch_size * arch.context_length / step_s
