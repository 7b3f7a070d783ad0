"""Evaluate a checkpoint: val loss, perplexity, bits per byte, samples, HellaSwag, lm_eval.

    from model.evaluate import evaluate
    evaluate(EvalConfig(), Path("runs/x/checkpoint.pt"), Path("tokens/v1"), Path("evals/x"))

Writes `eval.json` (atomically) and `samples.txt` to out_dir and returns the same dict. The
validation tokens are the first `eval_tokens` of the val split, identified by the token
dataset's version id, count and hash so runs compare on the same text (REFERENCE, Evaluation):
`val_set_sha256` names them (sha256 of the token ids), and `llmforge runs compare` refuses to
compare metrics measured on different ones. `contamination` counts the evaluation items (val
documents, HellaSwag items) sharing a word 13-gram with a training document
(pipeline/contamination.py). `lm_eval` holds lm-evaluation-harness scores of the tasks
`lm_eval_tasks` names (model/harness.py), HellaSwag's beside our own scorer's `hellaswag`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import load_model
from model.config import EvalConfig
from model.data import (
    ValidationSet,
    checkpoint_encoding,
    read_token_manifest,
    validation_tokens,
)
from model.gpt import GPT
from model.hellaswag import evaluate_hellaswag
from model.precision import Precision, setup_precision
from model.sampling import prompt_ids
from pipeline.contamination import NgramIndex, hellaswag_texts, token_dataset_texts
from pipeline.errors import DataError
from pipeline.store.fs import atomic_write


def check_settings(cfg: EvalConfig):
    """The HellaSwag file and lm_eval's tasks, folders and data files, checked before a model
    loads (one line each); lm-evaluation-harness (model/harness.py) when tasks are set."""
    if cfg.hellaswag_path and not Path(cfg.hellaswag_path).is_file():
        raise DataError(f"{cfg.hellaswag_path}: no such file (evaluate.hellaswag_path)")
    if not cfg.lm_eval_tasks:
        return None
    harness = load_harness()
    harness.check_tasks(cfg)
    return harness


def load_harness():
    """model/harness.py, or one line saying how to install lm-evaluation-harness."""
    try:
        from model import harness
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "lm_eval":
            raise
        raise DataError(
            "evaluate.lm_eval_tasks needs lm-evaluation-harness: pip install 'llmforge[eval]'"
        ) from None
    return harness


@torch.no_grad()
def token_losses(
    model: torch.nn.Module,
    tokens: np.ndarray,
    context_length: int,
    batch_size: int,
    precision: Precision,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token NLL (nats) of windows of T+1 tokens stepping by T, and their target ids.

    Every token after the first is a target exactly once, except the tail that does not fill
    a whole window (dropped, so all predictions see up to T tokens of context the same way).
    """
    T = context_length
    windows = (len(tokens) - 1) // T
    if windows < 1:
        raise DataError(f"{len(tokens)} validation tokens, need at least context_length+1={T + 1}")
    ids = torch.from_numpy(tokens[: windows * T + 1].astype(np.int64))
    x_all = ids[:-1].view(windows, T)
    y_all = ids[1:].view(windows, T)
    was_training = model.training
    model.eval()
    losses = []
    for start in range(0, windows, batch_size):
        x = x_all[start : start + batch_size].to(precision.device)
        y = y_all[start : start + batch_size].to(precision.device)
        with precision.autocast():
            logits, _ = model(x)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, T)
        losses.append(nll.flatten().cpu())
    model.train(was_training)
    return torch.cat(losses).numpy().astype(np.float64), y_all.flatten().numpy()


def val_loss(
    model: torch.nn.Module,
    val: ValidationSet,
    context_length: int,
    batch_size: int,
    precision: Precision,
) -> float:
    """Mean NLL per token over the fixed validation set (what training logs)."""
    nll, _ = token_losses(model, val.tokens, context_length, batch_size, precision)
    return float(nll.mean())


def bits_per_byte(nll: np.ndarray, targets: np.ndarray, decode_bytes, eot_token: int) -> float:
    """sum NLL (nats) / (ln 2 x UTF-8 bytes of the target text) (REFERENCE, Evaluation).

    End-of-text targets are document separators, not text: they are left out of both sums
    (as nanochat's evaluate_bpb does with special tokens).
    """
    keep = targets != eot_token
    n_bytes = len(decode_bytes(targets[keep].tolist()))
    if n_bytes == 0:
        return float("nan")
    return float(nll[keep].sum() / (math.log(2) * n_bytes))


def generate_samples(
    model: GPT, encoding, cfg: EvalConfig, device: torch.device
) -> list[dict[str, str]]:
    """One completion per prompt, from a generator seeded with cfg.seed: same run, same text."""
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    samples = []
    for prompt in cfg.prompts:
        ids = prompt_ids(encoding, prompt)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out = model.generate(idx, cfg.max_new_tokens, cfg.temperature, cfg.top_k, generator)
        completion = encoding.decode(out[0, len(ids) :].tolist())
        samples.append({"prompt": prompt, "completion": completion})
    return samples


def contamination_report(
    token_dir: Path | str,
    decode,
    eot_token: int,
    hellaswag_path: str | Path | None = None,
    hellaswag_limit: int | None = None,
) -> dict[str, Any]:
    """13-gram overlap of the val split's documents (and the HellaSwag items, when given)
    with the train split's documents, both decoded from the token dataset."""
    sets = {"val": token_dataset_texts(token_dir, "val", decode, eot_token)}
    if hellaswag_path:
        sets["hellaswag"] = hellaswag_texts(hellaswag_path, hellaswag_limit)
    index = NgramIndex(sets)
    for text in token_dataset_texts(token_dir, "train", decode, eot_token):
        index.scan(text)
    return index.report()


def evaluate(
    cfg: EvalConfig, checkpoint: Path, token_dir: Path | str, out_dir: Path
) -> dict[str, Any]:
    """Score one checkpoint on the token dataset's val split (+ HellaSwag if configured)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    harness = check_settings(cfg)  # a bad file or task name: one line, before any work
    precision = setup_precision(cfg.device, cfg.precision)
    model, state = load_model(checkpoint, precision.device)
    info = read_token_manifest(token_dir)
    tokenizer = state.get("tokenizer") or "gpt2"
    if tokenizer != info.tokenizer:
        raise DataError(
            f"{checkpoint}: checkpoint tokenizer={tokenizer!r} but {token_dir} uses "
            f"{info.tokenizer!r}"
        )
    encoding = checkpoint_encoding(state)
    T = model.cfg.context_length

    val = validation_tokens(token_dir, cfg.eval_tokens, min_tokens=T + 1)
    nll, targets = token_losses(model, val.tokens, T, cfg.batch_size, precision)
    loss = float(nll.mean())
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "step": state.get("step"),
        "trained_on": state.get("token_dataset"),
        "val_set_sha256": val.sha256,
        "val_set": val.identity() | {"targets": int(nll.size)},
        # The headline: bits per byte compares across tokenizers, loss per token does not.
        "bits_per_byte": bits_per_byte(nll, targets, encoding.decode_bytes, info.eot_token),
        "val_loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else float("inf"),
        "device": str(precision.device),
        "precision": precision.name,
    }

    samples = generate_samples(model, encoding, cfg, precision.device)
    result["samples"] = samples
    result["sampling"] = {
        "seed": cfg.seed,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "max_new_tokens": cfg.max_new_tokens,
    }

    if cfg.hellaswag_path:

        def forward(idx: torch.Tensor):
            with precision.autocast():
                return model(idx)

        result["hellaswag"] = evaluate_hellaswag(
            forward,
            cfg.hellaswag_path,
            encoding.encode_ordinary,
            T,
            precision.device,
            cfg.hellaswag_limit,
        )
    if harness is not None:
        lm = harness.HarnessLM(model, encoding, precision, cfg.batch_size)
        result["lm_eval"] = harness.run_harness(cfg, lm)
    if cfg.contamination:
        result["contamination"] = contamination_report(
            token_dir, encoding.decode, info.eot_token, cfg.hellaswag_path, cfg.hellaswag_limit
        )
    result["elapsed_s"] = round(time.perf_counter() - started, 3)

    out_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(f"=== {s['prompt']!r}\n{s['prompt']}{s['completion']}\n\n" for s in samples)
    atomic_write(out_dir / "samples.txt", text)
    atomic_write(out_dir / "eval.json", json.dumps(result, indent=2, allow_nan=True) + "\n")
    return result
