"""Training speed side by side: a textbook step, nanoGPT's approach and our default step.

    python bench/train.py                                  # mini at batch 8 and 32
    python bench/train.py --precision fp32                 # ours without bf16 (AVX2-only proxy)
    python bench/train.py --preset tiny --batch 4 --steps 2 --reps 1   # a quick smoke run

Three steps on the same machine, threads and random tokens, measured round-robin (rep 1 of
every variant, then rep 2, ...) so a change in load hits all of them alike:

- textbook: written plainly below. fp32, eager, the preset's architecture (mini: token embedding
  + sinusoidal positions, pre-LN blocks, untied head), lm_head then `F.cross_entropy` on the
  full logits, `torch.optim.AdamW` with its default (foreach) implementation.
- nanogpt: nanoGPT's approach, our own code in its spirit: learned positions, head tied to the
  token embedding, vocabulary padded to a multiple of 64, `torch.compile`, fused AdamW where
  available, and nanoGPT's precision rule (fp32 on CPU, bf16/fp16 autocast on CUDA).
- ours: exactly what `llmforge` trains: model.gpt.GPT, model.optim.configure_optimizer and
  model.train's forward_backward + optimizer_step, with TrainConfig's defaults (precision and
  compile "auto", resolved as training resolves them), unless --precision / --compile say else.

Before timing, a numerical check: on one batch from the same initial weights, our step's loss
equals the textbook's within the precision's tolerance (fp32 1e-4 relative, bf16/fp16 2e-2).
One JSON line per measurement on stdout, then a table: tokens/s (median over reps), FLOPs/token
(model.gpt.flops_per_token), achieved GFLOP/s, MFU on known GPUs, the ratios, compile time
(the first step's extra time, reported apart, never in tokens/s) and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from model.config import PRESETS, ModelConfig, TrainConfig  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.optim import configure_optimizer  # noqa: E402
from model.precision import mfu, peak_flops, setup_precision  # noqa: E402
from model.train import forward_backward, optimizer_step, resolve_compile  # noqa: E402

VARIANTS = ("textbook", "nanogpt", "ours")
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-2}  # relative loss difference


# --- the textbook model: plain PyTorch, fp32, eager -------------------------------------------
# Module names match model.gpt.GPT's so one state_dict fits both (the numerical check).


class TextbookAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, T, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        p = self.drop.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class TextbookMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class TextbookBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = TextbookAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = TextbookMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextbookGPT(nn.Module):
    """The preset's architecture, written out: embeddings, blocks, final norm, head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positional == "learned":
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        else:
            pos = torch.arange(cfg.context_length).unsqueeze(1)
            freq = 10000.0 ** (-torch.arange(0, cfg.d_model, 2) / cfg.d_model)
            table = torch.zeros(cfg.context_length, cfg.d_model)
            table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
            self.register_buffer("pos_table", table, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TextbookBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.tok_emb.weight = self.lm_head.weight
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if self.cfg.positional == "learned":
            x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        else:
            x = self.tok_emb(idx) * math.sqrt(self.cfg.d_model) + self.pos_table[:T]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def nanogpt_config(cfg: ModelConfig) -> ModelConfig:
    """nanoGPT's choices on the preset's size: learned positions, tied head, vocab padded to a
    multiple of 64 (its 50,304 for GPT-2: "+~25% speedup" in its model.py config comment)."""
    padded = 64 * math.ceil(cfg.vocab_size / 64)
    return replace(cfg, vocab_size=padded, positional="learned", tie_embeddings=True)


def nanogpt_precision(device: torch.device) -> str:
    """nanoGPT's train.py: no autocast on CPU; bf16 where CUDA supports it, else fp16."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


# --- the three steps ---------------------------------------------------------------------------


@dataclass
class Runner:
    name: str
    step: Callable[[torch.Tensor, torch.Tensor], None]
    flops: int  # per token
    precision: str
    compile: bool
    first_step_s: float | None = None


def _plain_step(model, optimizer, precision, V: int) -> Callable:
    """A textbook / nanoGPT-style step: logits, cross-entropy, backward, clip, AdamW."""
    ctx = precision.autocast()
    scaler = precision.grad_scaler()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with ctx:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # a training loop logs its loss

    return step


def build(variant: str, model_cfg: ModelConfig, args, device: str, batch: int) -> Runner:
    torch.manual_seed(0)
    if variant == "textbook":
        prec = setup_precision(device, "fp32")
        model = TextbookGPT(model_cfg).to(prec.device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        step = _plain_step(model, optimizer, prec, model_cfg.vocab_size)
        return Runner(variant, step, flops_per_token(model_cfg), prec.name, False)
    if variant == "nanogpt":
        ncfg = nanogpt_config(model_cfg)
        base = setup_precision(device, "fp32")
        prec = setup_precision(device, nanogpt_precision(base.device))
        model = TextbookGPT(ncfg).to(prec.device).train()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0}]
        optimizer = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), fused=True)
        step = _plain_step(torch.compile(model), optimizer, prec, ncfg.vocab_size)
        # FLOPs of the true vocabulary: the padded columns are not useful work.
        return Runner(variant, step, flops_per_token(model_cfg), prec.name, True)
    cfg = TrainConfig(preset=args.preset, batch_size=batch, device=device)
    if args.precision != "auto":
        cfg = cfg.model_copy(update={"precision": args.precision})
    if args.compile != "default":
        cfg = cfg.model_copy(update={"compile": args.compile == "on"})
    prec = setup_precision(cfg.device, cfg.precision)
    model = GPT(model_cfg).to(prec.device).train()
    optimizer = configure_optimizer(model, cfg, prec.device)
    scaler = prec.grad_scaler()
    compiled = resolve_compile(cfg, prec.device)
    step_model = torch.compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        forward_backward(step_model, [(x, y)], prec, scaler)
        optimizer_step(model, optimizer, scaler, cfg.grad_clip)

    return Runner(variant, step, flops_per_token(model_cfg), prec.name, compiled)


def numerical_check(model_cfg: ModelConfig, args, device: str, batch: int) -> dict:
    """Our step's loss vs the textbook's on one batch, same weights, dropout off."""
    cfg = TrainConfig(preset=args.preset, device=device)
    if args.precision != "auto":
        cfg = cfg.model_copy(update={"precision": args.precision})
    prec = setup_precision(cfg.device, cfg.precision)
    torch.manual_seed(0)
    ours = GPT(model_cfg).to(prec.device).eval()  # eval(): no dropout, same masks on both
    textbook = TextbookGPT(model_cfg).to(prec.device).eval()
    V = model_cfg.vocab_size
    state = {k: v[:V] if v.size(0) > V and "emb" in k or "lm_head" in k else v
             for k, v in ours.state_dict().items()}  # fmt: skip
    textbook.load_state_dict(state)
    x = torch.randint(0, V, (batch, model_cfg.context_length), device=prec.device)
    y = torch.randint(0, V, (batch, model_cfg.context_length), device=prec.device)
    ref = F.cross_entropy(textbook(x).view(-1, V), y.view(-1)).item()
    got = forward_backward(ours, [(x, y)], prec, prec.grad_scaler())
    rel = abs(got - ref) / abs(ref)
    return {
        "check": "loss",
        "precision": prec.name,
        "textbook_loss": round(ref, 6),
        "ours_loss": round(got, 6),
        "rel_diff": rel,
        "tolerance": TOLERANCE[prec.name],
        "ok": rel <= TOLERANCE[prec.name],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args) -> list[dict]:
    model_cfg = PRESETS[args.preset]
    device = setup_precision(args.device, "fp32").device
    results = []
    for batch in args.batch:
        check = numerical_check(model_cfg, args, args.device, min(batch, 4))
        print(json.dumps({"preset": args.preset, "batch_size": batch} | check), flush=True)
        if not check["ok"]:
            raise SystemExit(f"numerical check failed: {check}")
        T = model_cfg.context_length
        gen = torch.Generator().manual_seed(batch)
        x = torch.randint(0, model_cfg.vocab_size, (batch, T), generator=gen).to(device)
        y = torch.randint(0, model_cfg.vocab_size, (batch, T), generator=gen).to(device)
        runners = [build(v, model_cfg, args, args.device, batch) for v in args.variants]
        per_step: dict[str, list[float]] = {r.name: [] for r in runners}
        peak_mem: dict[str, int | None] = {}
        for r in runners:  # warmup: the first step compiles; timed apart
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t0 = time.perf_counter()
            r.step(x, y)
            _sync(device)
            r.first_step_s = time.perf_counter() - t0
            for _ in range(args.warmup - 1):
                r.step(x, y)
            _sync(device)
            peak_mem[r.name] = (
                torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            )
        for rep in range(args.reps):
            for r in runners:
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    r.step(x, y)
                _sync(device)
                seconds = (time.perf_counter() - t0) / args.steps
                per_step[r.name].append(seconds)
                row = {
                    "preset": args.preset,
                    "batch_size": batch,
                    "variant": r.name,
                    "rep": rep,
                    "step_ms": round(1000 * seconds, 2),
                    "tokens_per_s": round(batch * T / seconds, 1),
                }
                print(json.dumps(row), flush=True)
        for r in runners:
            seconds = statistics.median(per_step[r.name])
            tps = batch * T / seconds
            results.append(
                {
                    "preset": args.preset,
                    "batch_size": batch,
                    "variant": r.name,
                    "precision": r.precision,
                    "compile": r.compile,
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "threads": torch.get_num_threads(),
                    "tokens_per_s": round(tps, 1),
                    "tokens_per_s_reps": [round(batch * T / s, 1) for s in per_step[r.name]],
                    "flops_per_token": r.flops,
                    "gflops": round(r.flops * tps / 1e9, 1),
                    "mfu": mfu(r.flops, tps, peak_flops(device)),
                    "compile_s": round(max(0.0, r.first_step_s - seconds), 1) if r.compile else 0,
                    "peak_mem_gib": round(peak_mem[r.name] / 2**30, 2)
                    if peak_mem[r.name]
                    else None,
                }
            )
        del runners
    for res in results:
        # Paired ratios: rep i of one variant against rep i of the baseline, which ran right
        # before or after it, then the median; steadier than a ratio of medians under load.
        same = {r["variant"]: r["tokens_per_s_reps"] for r in results
                if r["batch_size"] == res["batch_size"]}  # fmt: skip
        for base in ("textbook", "nanogpt"):
            if base in same:
                pairs = zip(res["tokens_per_s_reps"], same[base], strict=True)
                res[f"vs_{base}"] = round(statistics.median(a / b for a, b in pairs), 3)
        print(json.dumps({"summary": True} | res), flush=True)
    return results


def table(results: list[dict]) -> str:
    head = ("batch", "variant", "precision", "compile", "tokens/s", "MFLOP/tok", "GFLOP/s",
            "MFU", "vs textbook", "vs nanogpt", "compile s", "peak GiB")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = (
            r["batch_size"], r["variant"], r["precision"], "on" if r["compile"] else "off",
            f"{r['tokens_per_s']:,.0f}", f"{r['flops_per_token'] / 1e6:.0f}", r["gflops"],
            f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-", r.get("vs_textbook", "-"),
            r.get("vs_nanogpt", "-"), r["compile_s"] or "-", r["peak_mem_gib"] or "-",
        )  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=1, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    parser.add_argument("--reps", type=int, default=5, help="round-robin repetitions")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--compile", default="default", choices=["default", "on", "off"],
                        help="ours: TrainConfig's default, or forced")  # fmt: skip
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.warmup = max(1, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = measure(args)
    print(table(results), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
