"""Train from the command line, in one process or data-parallel under torchrun.

    python -m model.train_cli --tokens DIR --out DIR --set preset=tiny --set max_steps=300
    torchrun --standalone --nproc_per_node=2 -m model.train_cli --tokens DIR --out DIR [--resume]
    torchrun ... -m model.train_cli --tokens s3://bucket/llmforge/versions/tokenize/ID --out DIR

`--set key=value` sets any TrainConfig field, parsed as `llmforge --set` parses values
(pipeline/config.py: TOML values, `none`/`null` for None, else a bare string). `batch_size` is
per process. Rank 0 logs and prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model.config import TrainConfig
from model.distributed import cleanup, init_distributed
from model.train import TrainingError, train
from pipeline.errors import ConfigError, DataError
from pipeline.overrides import apply_override


def train_config(items: list[str]) -> TrainConfig:
    """TrainConfig from `key=value` items; raises ConfigError or ValidationError."""
    data: dict[str, Any] = {}
    for item in items:
        apply_override(data, item)
    return TrainConfig.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train_cli", description=__doc__)
    parser.add_argument(
        "--tokens", required=True, help="token dataset folder, or its URL in the store (s3://...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, logs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args = parser.parse_args(argv)
    try:
        cfg = train_config(args.set)
    except ValidationError as exc:
        parser.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except ConfigError as exc:
        parser.error(str(exc))
    ctx = init_distributed(cfg.device)
    logging.basicConfig(
        level=logging.INFO if ctx.is_main else logging.WARNING,
        format=f"[rank {ctx.rank}] %(message)s" if ctx.distributed else "%(message)s",
    )
    try:
        summary = train(cfg, args.tokens, args.out, resume=args.resume, ctx=ctx)
    except (DataError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    if ctx.is_main:
        print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
