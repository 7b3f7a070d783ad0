"""Train and evaluate as stages: what `pipeline/stages.py` lists for them.

Their flows (reuse, resumable training, concurrency limits, artifact links) are in
flows/model.py; here is what needs no Prefect: the code that shapes each version, the checks
before any work, and `llmforge stage train|evaluate --input ... --output ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import EvalConfig, TrainConfig
from pipeline.errors import DataError
from pipeline.stage import Stage
from pipeline.tokenize.tokenizer import check_token_dataset

# The modules that shape the trained model (not plots, export, doctor or the hardware cache).
TRAIN_CODE = tuple(
    f"model/{name}.py"
    for name in (
        *("config", "gpt", "head", "data", "optim", "precision", "distributed", "train"),
        "sizing",
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


def check_eval(config: Any) -> None:
    path = config.evaluate.hellaswag_path
    if path and not Path(path).is_file():
        raise DataError(f"{path}: no such file (evaluate.hellaswag_path)")
    if config.evaluate.lm_eval_tasks:  # names, folders and data files, before training
        from model.evaluate import load_harness

        load_harness().check_tasks(config.evaluate)


def _manifest(summary: dict[str, Any]) -> dict[str, Any]:
    return {"counts": {"docs_in": 0, "docs_out": 0, "drops": {}, "extra": summary}}


def train_command(
    config: Any, input_path: Path, output_path: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """`llmforge stage train`: train into OUTPUT (resumable there with --resume); the CLI has
    checked the input with `check_input` first."""
    from model.train import train

    return _manifest(train(config.train, input_path, output_path, bool(options.get("resume"))))


def evaluate_command(
    config: Any, input_path: Path, output_path: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """`llmforge stage evaluate --input CHECKPOINT_OR_TRAIN_DIR --tokens TOKEN_DATASET_DIR`."""
    from model.evaluate import evaluate

    tokens = options.get("tokens")  # checked by the CLI with `check_input` first
    if tokens is None:
        raise DataError("stage evaluate: give --tokens TOKEN_DATASET_DIR")
    check_eval(config)  # the HellaSwag file, the harness's tasks: before loading the model
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
