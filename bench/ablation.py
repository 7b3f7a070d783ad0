"""Equal-wall-time ablation of the modern recipe, one piece at a time.

    python bench/ablation.py --tokens DIR --seconds 300 --depth 4     # the real ablation
    python bench/ablation.py --tokens DIR --seconds 5 --depth 1 --batch-size 4 --context 64
    python bench/ablation.py --tokens DIR --only baseline,muon        # some rows only

DIR is a token dataset as the tokenize stage writes it. Every row trains a fresh model of the
same width and depth (d_model = 64·depth, depth layers, heads of 64) for --seconds of wall
time with model.train.train, then scores the first --eval-tokens of the val split: val loss
(nats/token) and bits per byte (model.evaluate.bits_per_byte with the dataset's tokenizer,
which is what compares across tokenizers). Rows, cumulative unless marked:

    baseline   mini's recipe: sinusoidal positions, LayerNorm, 4d GELU MLP, biases, GPT-2
               init, AdamW at --lr
    rope       + rotary positions instead of the sinusoidal table
    rmsnorm    + parameter-free RMSNorm, also after the token embedding
    qk_norm    + RMS-normalized q and k
    relu2      + ReLU² MLP
    swiglu     SwiGLU instead of ReLU² (a side row: not carried on)
    no_bias    + no biases
    init       + nanochat's init (zero output projections, lm_head std 0.001)
    muon       + Muon for the block matrices (nanochat's lrs): exactly preset "modern"

Each row is a budgeted run (`max_seconds=--seconds`): the trainer times a few rehearsal steps,
undoes them and plans the step count so warmup and cosine decay end when the budget does.
One JSON line per row on stdout, then a Markdown table with the change in val bpb against the
baseline.
Compile stays off by default: its start-up time would count against the budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from model import data  # noqa: E402
from model.checkpoint import CHECKPOINT_NAME, load_model  # noqa: E402
from model.config import ModelConfig, TrainConfig  # noqa: E402
from model.evaluate import bits_per_byte, token_losses  # noqa: E402
from model.precision import setup_precision  # noqa: E402
from model.train import train  # noqa: E402

# The baseline's architecture fields; each row changes some of them (ModelConfig names).
BASELINE: dict[str, Any] = dict(
    positional="sinusoidal",
    norm="layernorm",
    embed_norm=False,
    qk_norm=False,
    mlp="gelu",
    bias=True,
    init="gpt2",
)
# (key, label, architecture changes, optimizer or None to keep, carried on to later rows)
ROWS: list[tuple[str, str, dict[str, Any], str | None, bool]] = [
    ("baseline", "baseline (sinusoidal, LayerNorm, GELU, bias, AdamW)", {}, "adamw", True),
    ("rope", "+ rope", {"positional": "rope"}, None, True),
    ("rmsnorm", "+ rmsnorm", {"norm": "rmsnorm", "embed_norm": True}, None, True),
    ("qk_norm", "+ qk_norm", {"qk_norm": True}, None, True),
    ("relu2", "+ relu2", {"mlp": "relu2"}, None, True),
    ("swiglu", "  swiglu instead of relu2", {"mlp": "swiglu"}, None, False),
    ("no_bias", "+ no bias", {"bias": False}, None, True),
    ("init", "+ nanochat init", {"init": "nanochat"}, None, True),
    ("muon", "+ muon (= preset modern)", {}, "muon", True),
]


class AblationConfig(TrainConfig):
    """TrainConfig whose architecture is preset "modern" with `arch` fields replaced."""

    arch: dict[str, Any] = {}

    def model_config_for(
        self, vocab_size: int | None = None, depth: int | None = None
    ) -> ModelConfig:
        return dataclasses.replace(super().model_config_for(vocab_size, depth), **self.arch)


def plan_rows(only: set[str] | None = None) -> list[dict[str, Any]]:
    """Each row's key, label, architecture (the baseline plus the changes so far) and
    optimizer; only the rows named in `only` (all by default)."""
    arch, optimizer, rows = dict(BASELINE), "adamw", []
    for key, label, changes, opt, carried in ROWS:
        row_arch, row_opt = arch | changes, opt or optimizer
        if carried:
            arch, optimizer = row_arch, row_opt
        if only is None or key in only:
            rows.append({"row": key, "label": label, "arch": row_arch, "optimizer": row_opt})
    return rows


def run_row(row: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base = dict(
        preset="modern",
        depth=args.depth,
        context_length=args.context,
        batch_size=args.batch_size,
        lr=args.lr,
        # train() scores the untrained model inside the budget: one window there; the real
        # evaluation (--eval-tokens) comes after, outside it.
        eval_tokens=args.context + 1,
        precision=args.precision,
        device=args.device,
        compile=args.compile,
        seed=args.seed,
        optimizer=row["optimizer"],
        arch=row["arch"],
    )
    # The trainer plans the run for the budget: it times rehearsal steps (then undoes them) and
    # fixes the step count so warmup and cosine decay end when the budget does.
    cfg = AblationConfig(
        **base,
        max_steps=1_000_000,  # the budget decides, not a step count
        max_seconds=args.seconds,
        eval_interval=1_000_000,
        checkpoint_interval=1_000_000,
        log_interval=50,
    )
    out = work / row["row"]
    summary = train(cfg, args.tokens, out)
    model, _ = load_model(out / CHECKPOINT_NAME)
    precision = setup_precision(args.device, args.precision)
    model = model.to(precision.device)
    info = data.read_token_manifest(args.tokens)
    val = data.validation_tokens(args.tokens, args.eval_tokens, min_tokens=args.context + 1)
    nll, targets = token_losses(model, val.tokens, args.context, args.batch_size, precision)
    bpb = bits_per_byte(nll, targets, data.encoding_for(args.tokens).decode_bytes, info.eot_token)
    return {
        "row": row["row"],
        "label": row["label"],
        "optimizer": row["optimizer"],
        "arch": row["arch"],
        "depth": args.depth,
        "d_model": 64 * args.depth,
        "params": summary["params"],
        "flops_per_token": summary["flops_per_token"],
        "steps": summary["steps"],
        "planned_steps": summary.get("planned_steps"),
        "stopped": summary["stopped"],
        "tokens_seen": summary["tokens_seen"],
        "tokens_per_s": summary["tokens_per_s"],
        "elapsed_s": summary["elapsed_s"],
        "val_loss": float(nll.mean()),
        "val_bpb": bpb,
        "device": summary["device"],
        "precision": summary["precision"],
    }


def markdown(results: list[dict[str, Any]]) -> str:
    base = next((r["val_bpb"] for r in results if r["row"] == "baseline"), None)
    lines = [
        "| row | val loss | val bpb | Δ bpb vs baseline | tokens/s | steps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        delta = f"{r['val_bpb'] - base:+.4f}" if base is not None else "-"
        lines.append(
            f"| {r['label']} | {r['val_loss']:.4f} | {r['val_bpb']:.4f} | {delta} "
            f"| {r['tokens_per_s']:,.0f} | {r['steps']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=Path, required=True, help="token dataset folder")
    p.add_argument("--seconds", type=float, default=300.0, help="wall-time budget per row")
    p.add_argument("--depth", type=int, default=4, help="modern_config depth (d_model 64*depth)")
    p.add_argument("--context", type=int, default=256, help="context length")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=TrainConfig.model_fields["lr"].default)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile every row")
    p.add_argument("--seed", type=int, default=1337)
    keys = [key for key, *_ in ROWS]
    p.add_argument("--only", help=f"comma-separated rows out of {','.join(keys)}")
    p.add_argument("--work", type=Path, help="folder for the runs (default: a temp folder)")
    args = p.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(keys)
        if unknown:
            p.error(f"unknown rows {', '.join(sorted(unknown))}; choose from {', '.join(keys)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    results = []
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        work = args.work or Path(tmp)
        for row in plan_rows(only):
            result = run_row(row, args, work)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
