"""Equal wall time, three recipes, one held-out text: validation bits per byte side by side.

    python bench/budget.py --seconds 300                  # the issue's comparison (~20 min)
    python bench/budget.py --seconds 900 --recipes nanogpt,ours
    python bench/budget.py --seconds 5 --pages 60 --val-bytes 20000   # a smoke run

Data: trafilatura's 990 annotated real web pages (`../shared/data/extraction-trafilatura`),
written into WARC files and extracted by our extract stage, then tokenized by our tokenize stage
twice: with GPT-2's tokens and with a BPE trained on the training split. Both tokenizations
split train/val by page (the stage's sha256(id) rule, the same `--val-fraction`), so every
recipe is scored on the same held-out pages that neither the model nor the tokenizer saw.

Recipes, each trained for `--seconds` of wall time on the same 2 cores (setup and the final
scoring are outside the budget):
1. seeds: what the README gave before issue 14: `preset="mini"` (288/6/6/256, sinusoidal,
   AdamW 0.9/0.95, wd 0.1, lr 3e-4, warmup 100, 2,000 steps, batch 32, dropout 0.1), GPT-2
   tokens, `max_seconds` as a hard stop (`fit_schedule_to_budget=False`: the old behaviour).
2. nanogpt: nanoGPT's own laptop recipe (its README's CPU command on
   config/train_shakespeare_char.py: n_layer 4, n_head 4, n_embd 128, block 64, batch 12,
   dropout 0, lr 1e-3 -> 1e-4 cosine over 2,000 iters, warmup 100, beta2 0.99, wd 0.1, clip 1,
   no biases, learned positions, tied head; eval every 250 iters on 20 batches), on GPT-2
   tokens, written below in its spirit (random-offset batches, its loop) and stopped at the
   budget as its user would stop it.
3. ours: what llmforge now trains by default for a budget: the trained tokenizer,
   `preset="auto"` and the budget planning the schedule.

Scoring: the same val pages for every recipe (the first pages by id until `--val-bytes` of
text), each model with its own context in non-overlapping windows, bits per byte =
sum NLL / (ln 2 x UTF-8 bytes of the targets), end-of-text targets left out
(model.evaluate.bits_per_byte). One JSON line per recipe, then a table with the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import load_pages, split, write_warc  # noqa: E402

from model.checkpoint import CHECKPOINT_NAME, load_model  # noqa: E402
from model.config import GPT2_VOCAB_SIZE, ModelConfig, TrainConfig  # noqa: E402
from model.data import encoding_for, read_token_manifest  # noqa: E402
from model.evaluate import bits_per_byte, token_losses  # noqa: E402
from model.gpt import GPT, flops_per_token  # noqa: E402
from model.precision import setup_precision  # noqa: E402
from model.train import train  # noqa: E402
from pipeline.documents import list_shards  # noqa: E402
from pipeline.extract.extractor import ExtractConfig  # noqa: E402
from pipeline.extract.extractor import run as extract_run  # noqa: E402
from pipeline.stage import process_map  # noqa: E402
from pipeline.tokenize.tokenizer import TokenizeConfig  # noqa: E402
from pipeline.tokenize.tokenizer import run as tokenize_run  # noqa: E402

RECIPES = ("seeds", "nanogpt", "ours")


# --- data: pages -> WARC -> our extract stage -> our tokenize stage ------------------------------


def extracted_pages(work: Path, pages: int | None, workers: int) -> Path:
    """The extract stage's output folder for the pages (built once, reused by later runs)."""
    out = work / f"extract-{pages or 'all'}"
    if (out / "data").is_dir():
        return out
    build = work / f"extract-{pages or 'all'}.tmp"
    shutil.rmtree(build, ignore_errors=True)
    (build / "warc").mkdir(parents=True)
    parts = split(load_pages(limit=pages), 8)
    warcs = [write_warc(build / "warc" / f"pages-{i:02d}.warc.gz", p) for i, p in enumerate(parts)]
    extract_run(ExtractConfig(), warcs, build / "out", process_map(workers))
    (build / "out").rename(out)
    shutil.rmtree(build)
    return out


def tokenized(work: Path, docs: Path, config: TokenizeConfig, name: str) -> Path:
    out = work / f"tokens-{name}"
    if (out / "manifest.json").exists():
        return out
    build = work / f"tokens-{name}.tmp"
    shutil.rmtree(build, ignore_errors=True)
    result = tokenize_run(config, docs / "data", build)
    manifest = {"version_id": f"bench-{name}", "counts": {"extra": result.extra}}
    (build / "manifest.json").write_text(json.dumps(manifest, indent=2))
    build.rename(out)
    return out


def read_split(token_dir: Path, split_name: str) -> dict[str, np.ndarray]:
    """Document id -> its tokens (EOT last) for one split."""
    docs: dict[str, np.ndarray] = {}
    for shard in list_shards(token_dir / split_name):
        table = pq.read_table(shard, columns=["id", "tokens"])
        for doc_id, tokens in zip(table["id"].to_pylist(), table["tokens"].to_numpy(), strict=True):
            docs[doc_id] = np.asarray(tokens)
    return docs


def val_pages(token_dirs: list[Path], val_bytes: int) -> list[str]:
    """The scored pages: the first val ids (sorted) until val_bytes of text, in every dataset."""
    splits = [read_split(d, "val") for d in token_dirs]
    common = sorted(set.intersection(*(set(s) for s in splits)))
    if set(common) != set(splits[0]):
        raise SystemExit("the tokenizations disagree on the val pages: same --val-fraction?")
    enc = encoding_for(token_dirs[0])
    chosen, size = [], 0
    for doc_id in common:
        chosen.append(doc_id)
        size += len(enc.decode_bytes(splits[0][doc_id][:-1].tolist()))
        if size >= val_bytes:
            break
    return chosen


def val_stream(token_dir: Path, ids: list[str]) -> np.ndarray:
    docs = read_split(token_dir, "val")
    return np.concatenate([docs[i] for i in ids]).astype(np.int64)


def score(model: GPT, token_dir: Path, ids: list[str]) -> dict[str, float]:
    info = read_token_manifest(token_dir)
    tokens = val_stream(token_dir, ids)
    precision = setup_precision("cpu", "fp32")
    nll, targets = token_losses(model, tokens, model.cfg.context_length, 8, precision)
    enc = encoding_for(token_dir)
    bpb = bits_per_byte(nll, targets, enc.decode_bytes, info.eot_token)
    return {"val_bpb": bpb, "val_loss": float(nll.mean()), "val_tokens": int(targets.size)}


# --- the recipes ---------------------------------------------------------------------------------


def train_ours(cfg: TrainConfig, tokens: Path, out: Path) -> tuple[GPT, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    summary = train(cfg, tokens, out)
    model, _ = load_model(out / CHECKPOINT_NAME)
    keep = ("steps", "tokens_seen", "tokens_per_s", "params", "elapsed_s", "stopped", "plan")
    return model, {k: summary.get(k) for k in keep} | {"model_config": summary["model_config"]}


# nanoGPT's README CPU command on config/train_shakespeare_char.py (karpathy/nanoGPT).
NANOGPT = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": 64,
    "batch_size": 12,
    "dropout": 0.0,
    "learning_rate": 1e-3,
    "min_lr": 1e-4,
    "warmup_iters": 100,
    "lr_decay_iters": 2000,
    "max_iters": 2000,
    "beta1": 0.9,
    "beta2": 0.99,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "eval_interval": 250,
    "eval_iters": 20,
}


def nanogpt_lr(it: int, h: dict[str, Any]) -> float:
    """Linear warmup, cosine to min_lr at lr_decay_iters (nanoGPT's get_lr, rewritten)."""
    if it < h["warmup_iters"]:
        return h["learning_rate"] * (it + 1) / (h["warmup_iters"] + 1)
    if it > h["lr_decay_iters"]:
        return h["min_lr"]
    ratio = (it - h["warmup_iters"]) / (h["lr_decay_iters"] - h["warmup_iters"])
    return h["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (
        h["learning_rate"] - h["min_lr"]
    )


def train_nanogpt(tokens: Path, seconds: float, seed: int) -> tuple[GPT, dict[str, Any]]:
    h = NANOGPT
    train_docs = read_split(tokens, "train")
    data = torch.from_numpy(np.concatenate(list(train_docs.values())).astype(np.int64))
    val_docs = read_split(tokens, "val")
    val = torch.from_numpy(np.concatenate(list(val_docs.values())).astype(np.int64))
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=GPT2_VOCAB_SIZE,
        context_length=h["block_size"],
        d_model=h["n_embd"],
        n_heads=h["n_head"],
        n_layers=h["n_layer"],
        dropout=h["dropout"],
        bias=False,
        positional="learned",
        tie_embeddings=True,
    )
    model = GPT(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": h["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # nanoGPT uses the fused AdamW on CUDA only: on CPU, torch's default implementation.
    opt = torch.optim.AdamW(groups, lr=h["learning_rate"], betas=(h["beta1"], h["beta2"]))
    B, T = h["batch_size"], h["block_size"]

    def batch(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(source) - T, (B,))
        return torch.stack([source[i : i + T] for i in ix]), torch.stack(
            [source[i + 1 : i + 1 + T] for i in ix]
        )

    @torch.no_grad()
    def estimate_loss() -> None:  # nanoGPT's periodic eval: its cost is part of its budget
        model.eval()
        for source in (data, val):
            for _ in range(h["eval_iters"]):
                model(*batch(source))
        model.train()

    started, it = time.perf_counter(), 0
    while it < h["max_iters"]:
        if it % h["eval_interval"] == 0:
            estimate_loss()
        for group in opt.param_groups:
            group["lr"] = nanogpt_lr(it, h)
        x, y = batch(data)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), h["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        it += 1
        if time.perf_counter() - started >= seconds:
            break
    elapsed = time.perf_counter() - started
    info = {
        "steps": it,
        "tokens_seen": it * B * T,
        "tokens_per_s": it * B * T / elapsed,
        "params": model.num_params(),
        "elapsed_s": round(elapsed, 3),
        "flops_per_token": flops_per_token(cfg),
        "model_config": cfg.to_dict(),
    }
    return model, info


def run_recipe(name: str, args: argparse.Namespace, data: dict[str, Path], work: Path):
    common = {"max_seconds": args.seconds, "seed": args.seed, "device": "cpu"}
    if name == "seeds":
        cfg = TrainConfig(preset="mini", fit_schedule_to_budget=False, **common)
        return data["gpt2"], *train_ours(cfg, data["gpt2"], work / "run-seeds")
    if name == "nanogpt":
        return data["gpt2"], *train_nanogpt(data["gpt2"], args.seconds, args.seed)
    if name.startswith("d") and name[1:].isdigit():  # the modern family at a fixed depth
        cfg = TrainConfig(preset="modern", depth=int(name[1:]), **common)
        return data["trained"], *train_ours(cfg, data["trained"], work / f"run-{name}")
    cfg = TrainConfig(preset="auto", **common)
    return data["trained"], *train_ours(cfg, data["trained"], work / "run-ours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall time each")
    parser.add_argument(
        "--recipes",
        default=",".join(RECIPES),
        help="comma-separated: seeds, nanogpt, ours, and dN (the modern family at depth N: the "
        "sweep that measures preset=auto's tokens-per-parameter rule)",
    )
    parser.add_argument("--work", type=Path, default=Path("storage/bench/budget"))
    parser.add_argument("--pages", type=int, default=None, help="first N pages (default all)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--val-bytes", type=int, default=150_000, help="scored val text")
    parser.add_argument("--vocab-size", type=int, default=None, help="trained BPE (default: ours)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    recipes = [r for r in args.recipes.split(",") if r]
    depths = {r for r in recipes if r.startswith("d") and r[1:].isdigit()}
    if unknown := set(recipes) - set(RECIPES) - depths:
        raise SystemExit(f"--recipes: unknown {sorted(unknown)}; choose from {RECIPES}")
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    docs = extracted_pages(args.work, args.pages, args.workers)
    base = {"val_fraction": args.val_fraction}
    trained = base | {"tokenizer": "train"}
    if args.vocab_size:
        trained["vocab_size"] = args.vocab_size
    data = {
        "gpt2": tokenized(args.work, docs, TokenizeConfig(**base), "gpt2"),
        "trained": tokenized(
            args.work, docs, TokenizeConfig(**trained), f"bpe-{args.vocab_size or 'default'}"
        ),
    }
    ids = val_pages([data["gpt2"], data["trained"]], args.val_bytes)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {len(ids)} val pages", flush=True)

    rows = []
    for name in recipes:
        tokens, model, info = run_recipe(name, args, data, args.work)
        row = {"recipe": name, "seconds": args.seconds, **score(model, tokens, ids), **info}
        row["tokenizer"] = read_token_manifest(tokens).tokenizer
        rows.append(row)
        print(json.dumps(row), flush=True)

    by_name = {r["recipe"]: r["val_bpb"] for r in rows}
    print("\n| recipe | tokenizer | params | steps | tokens seen | val bpb | vs nanogpt |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['val_bpb'] / by_name['nanogpt']:.2f}x" if "nanogpt" in by_name else "-"
        print(
            f"| {r['recipe']} | {r['tokenizer']} | {r['params'] / 1e6:.2f}M | {r['steps']} | "
            f"{r['tokens_seen']:,} | {r['val_bpb']:.3f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
