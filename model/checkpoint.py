"""Checkpoints that resume a run exactly and load safely with `weights_only=True`.

A checkpoint holds only tensors and plain containers: the model's state dict (taken from the
unwrapped module, so no `_orig_mod.`/`module.` prefixes), optimizer and scaler states, step,
tokens seen, RNG states (python, numpy, torch, cuda) and the data cursor of every rank, the
resolved configs as dicts, the tokenizer name and the token dataset's version id (REFERENCE,
Training: "RNG states ... per rank, and the data cursor per rank"). `ranks` lists each rank's
{"rng", "data"}; the top-level `rng` and `data` repeat rank 0's, the single-process view.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import ModelConfig
from model.gpt import GPT
from pipeline.errors import DataError
from pipeline.store.fs import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile (`_orig_mod`) or DDP (`module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_state(
    state: dict[str, Any], rank: int, world_size: int, path: Path | str = CHECKPOINT_NAME
) -> dict[str, Any]:
    """This rank's {"rng", "data"} from a checkpoint; an error if it was saved by another
    number of processes (each rank's cursor and random numbers only fit the same split)."""
    ranks = state.get("ranks") or [{"rng": state["rng"], "data": state["data"]}]
    saved = int(state.get("world_size", len(ranks)))
    if saved != world_size or len(ranks) != world_size:
        raise DataError(
            f"{path}: saved by a run with world_size={saved} but this run has "
            f"world_size={world_size}; resume with {saved} process(es) or start a new run"
        )
    return ranks[rank]


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> Path:
    """torch.save to a temp file beside `path`, then rename: a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load on CPU with weights_only=True (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DataError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise DataError(f"{path}: not an llmforge checkpoint (no model / model_config)")
    return state


def check_compatible(
    state: dict[str, Any],
    model_cfg: ModelConfig,
    tokenizer: str | None = None,
    path: Path | str = CHECKPOINT_NAME,
) -> None:
    """Raise naming the first differences between a checkpoint and the config it should fit.

    Dropout does not change the weights' shapes or meaning, so it may differ. Fields added
    to ModelConfig later are absent from older checkpoints: those mean the field's default.
    """
    saved = ModelConfig.from_dict(state["model_config"]).to_dict()
    wanted = model_cfg.to_dict()
    diffs = [
        f"checkpoint {key}={saved.get(key)!r} but config {key}={value!r}"
        for key, value in wanted.items()
        if key != "dropout" and saved.get(key) != value
    ]
    if tokenizer is not None and state.get("tokenizer") != tokenizer:
        diffs.append(f"checkpoint tokenizer={state.get('tokenizer')!r} but data uses {tokenizer!r}")
    if diffs:
        raise DataError(f"{path}: incompatible checkpoint: " + "; ".join(diffs))


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[GPT, dict]:
    """A GPT rebuilt from a checkpoint's own config, in eval mode, plus the checkpoint dict."""
    state = load_checkpoint(path)
    cfg = ModelConfig.from_dict(state["model_config"])
    model = GPT(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
