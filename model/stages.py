"""Train and evaluate as stages: what `pipeline/stages.py` lists for them.

Their flows (reuse, resumable training, concurrency limits, artifact links) are in
flows/model.py; here is what needs no Prefect: the code that shapes each version, the checks
before any work, and `llmforge stage train|evaluate --input ... --output ...`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from model.config import EvalConfig, TrainConfig
from pipeline.errors import DataError
from pipeline.stage import Stage, version_input
from pipeline.tokenize.tokenizer import check_token_dataset

# The modules that shape the trained model (not plots, export, doctor or the hardware cache).
TRAIN_CODE = tuple(
    f"model/{name}.py"
    for name in (
        *("config", "gpt", "head", "data", "optim", "precision", "distributed", "train"),
        "sizing",
        "base",
    )
) + ("model/checkpoint.py", "model/evaluate.py", "pipeline/stage.py")  # val loss: evaluate.py
EVAL_CODE = tuple(
    f"model/{name}.py"
    for name in ("config", "gpt", "head", "data", "precision", "checkpoint", "evaluate")
) + (
    "model/hellaswag.py",
    "model/harness.py",
    "model/lm_eval_tasks/*",  # the harness's task definitions
    "pipeline/contamination.py",
    "pipeline/stage.py",
)


def check_train_input(input_path: Path, tokens: Path | None = None) -> None:
    """Train reads a token dataset with train/ and val/ splits: one line if not."""
    check_token_dataset(input_path, ("train", "val"))


def check_eval_input(input_path: Path, tokens: Path | None = None) -> None:
    """Evaluate scores on the val split of `tokens`."""
    if tokens is not None:
        check_token_dataset(tokens, ("val",))


def check_train(config: Any) -> None:
    """train.init_from names a GPT-2 folder, a checkpoint or a recorded run (not read yet)."""
    if config.train.init_from is not None:
        from model.base import locate

        locate(config.train.init_from, config.run.storage_root)


def check_eval(config: Any) -> None:
    """The HellaSwag file and lm_eval's tasks, before a run trains (evaluate checks again)."""
    from model.evaluate import check_settings

    check_settings(config.evaluate)


def train_inputs(config: Any, tokens: Any) -> list[dict[str, str]]:
    """What a train version is built from, as its id sees it: the token dataset `tokens` (a
    Version) and, with train.init_from, the base model by content (model/base.py)."""
    inputs = [version_input(tokens)]
    if config.train.init_from is not None:
        from model.base import base_input

        inputs.append(base_input(config.train.init_from, config.run.storage_root))
    return inputs


def _manifest(summary: dict[str, Any]) -> dict[str, Any]:
    return {"counts": {"docs_in": 0, "docs_out": 0, "drops": {}, "extra": summary}}


def fresh_output(output_path: Path, resume: bool, force: bool) -> None:
    """Refuse to write over an earlier result, as every data stage does: a non-empty OUTPUT is
    continued (--resume, train only), replaced (--force), or left alone with one error line."""
    if resume or not output_path.is_dir() or not any(output_path.iterdir()):
        return
    if not force:
        resumable = (output_path / "checkpoint.pt").exists()
        hint = "--resume to continue its training or " if resumable else ""
        raise DataError(
            f"{output_path}: output folder exists and is not empty "
            f"(use {hint}--force to replace it)"
        )
    shutil.rmtree(output_path)


def train_command(
    config: Any, input_path: Path, output_path: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """`llmforge stage train`: train into OUTPUT (resumable there with --resume); the CLI has
    checked the input with `check_input` first."""
    from model.train import train

    resume = bool(options.get("resume"))
    fresh_output(output_path, resume, bool(options.get("force")))
    root = config.run.storage_root  # where a run id in train.init_from is found
    return _manifest(train(config.train, input_path, output_path, resume, storage_root=root))


def evaluate_command(
    config: Any, input_path: Path, output_path: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """`llmforge stage evaluate --input CHECKPOINT_OR_TRAIN_DIR --tokens TOKEN_DATASET_DIR`."""
    from model.evaluate import evaluate

    tokens = options.get("tokens")  # checked by the CLI with `check_input` first
    if tokens is None:
        raise DataError("stage evaluate: give --tokens TOKEN_DATASET_DIR")
    check_eval(config)  # before --force replaces OUTPUT: a bad setting leaves it as it was
    fresh_output(output_path, False, bool(options.get("force")))
    checkpoint = input_path / "checkpoint.pt" if input_path.is_dir() else input_path
    return _manifest(evaluate(config.evaluate, checkpoint, tokens, output_path))


def describe_train(extra: dict[str, Any]) -> str:
    bpb = extra.get("final_val_bpb")
    parts = [
        *([f"val bpb {bpb:.3f}"] if bpb is not None else []),
        f"{extra['steps']} steps",
        f"train loss {extra['first_loss']:.3f} → {extra['last_loss']:.3f}",
        f"val loss {extra['final_val_loss']:.3f}",
    ]
    if extra.get("plan_summary"):
        parts.append(extra["plan_summary"])
    if extra.get("depth") is not None:
        parts.append(f"auto depth {extra['depth']}")
    base = extra.get("init_from")
    if base:  # train.init_from: which base, by content
        parts.append(f"from {base['kind']} {base['ref']} (sha256 {base['sha256'][:12]})")
    return ", ".join(parts)


def describe_eval(extra: dict[str, Any]) -> str:
    from pipeline.store.compare import harness_lines  # not at the top: it imports the stages

    parts = [
        f"bits per byte {extra['bits_per_byte']:.3f}, val loss {extra['val_loss']:.3f}, "
        f"perplexity {extra['perplexity']:.1f}"
    ]
    if isinstance(extra.get("hellaswag"), dict):
        hs = extra["hellaswag"]
        parts.append(f"hellaswag ({hs['n']}): acc {hs['acc']:.3f}, acc_norm {hs['acc_norm']:.3f}")
    return "; ".join(parts + harness_lines(extra))


TRAIN = Stage(
    name="train",
    config=TrainConfig,
    code=TRAIN_CODE,
    libraries=("torch",),
    kind="model",
    command=train_command,
    options=("resume",),
    check=check_train,
    check_input=check_train_input,
    describe=describe_train,
)
EVALUATE = Stage(
    name="evaluate",
    config=EvalConfig,
    code=EVAL_CODE,
    libraries=("torch", "tiktoken", "lm_eval"),
    check=check_eval,
    kind="model",
    command=evaluate_command,
    options=("tokens",),
    check_input=check_eval_input,
    describe=describe_eval,
)
