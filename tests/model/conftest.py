"""Token datasets in the tokenize stage's layout, built from tinyshakespeare, for model tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken

from model.config import TrainConfig
from model.train import train
from tests.conftest import shared_data

TOKEN_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("tokens", pa.list_(pa.uint16())),
        pa.field("num_tokens", pa.int32()),
    ]
)


def write_token_dataset(
    root: Path,
    docs: list[list[int]],
    val_docs: list[list[int]],
    version_id: str = "tokens-test-v1",
    shards: int = 2,
    row_group_size: int = 64,
) -> Path:
    """`root/manifest.json`, `root/train/part-*.parquet` (docs spread over shards), `root/val/`."""
    for split, split_docs, n in (("train", docs, shards), ("val", val_docs, 1)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for s in range(n):
            part = split_docs[s::n]
            table = pa.table(
                {
                    "id": [f"{split}-{s}-{i}" for i in range(len(part))],
                    "tokens": part,
                    "num_tokens": [len(d) for d in part],
                },
                schema=TOKEN_SCHEMA,
            )
            pq.write_table(
                table, root / split / f"part-{s:05d}.parquet", row_group_size=row_group_size
            )
    extra = {
        "tokenizer": "gpt2",
        "vocab_size": 50257,
        "eot_token": 50256,
        "dtype": "uint16",
        "tokens_train": sum(map(len, docs)),
        "tokens_val": sum(map(len, val_docs)),
    }
    manifest = {"version_id": version_id, "counts": {"extra": extra}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def shakespeare_docs() -> tuple[list[list[int]], list[list[int]]]:
    """Speeches (blank-line separated) of tinyshakespeare as GPT-2 tokens + EOT, 90/10 split."""
    text = shared_data("text", "tinyshakespeare", "data", "tinyshakespeare", "input.txt")
    speeches = [s for s in text.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    enc = tiktoken.get_encoding("gpt2")
    docs = [ids + [enc.eot_token] for ids in enc.encode_ordinary_batch(speeches)]
    cut = int(len(docs) * 0.9)
    return docs[:cut], docs[cut:]


@pytest.fixture(scope="session")
def shakespeare_tokens(tmp_path_factory) -> Path:
    train_docs, val_docs = shakespeare_docs()
    return write_token_dataset(tmp_path_factory.mktemp("tokens"), train_docs, val_docs)


# A model small enough for a 2-core CPU: the 50,257-way head dominates its cost anyway.
SMALL = dict(preset="tiny", d_model=32, n_layers=1, n_heads=2, context_length=32, batch_size=4)


def small_cfg(**overrides) -> TrainConfig:
    base = dict(SMALL, lr=3e-3, warmup_steps=5, max_steps=40, eval_tokens=1024, precision="fp32")
    return TrainConfig(**(base | overrides))


@pytest.fixture(scope="session")
def trained_run(shakespeare_tokens, tmp_path_factory):
    """One small 40-step run shared by the training and evaluation tests."""
    out = tmp_path_factory.mktemp("run")
    logged = []
    cfg = small_cfg(eval_interval=20, checkpoint_interval=20, log_interval=10)
    summary = train(cfg, shakespeare_tokens, out, on_log=logged.append)
    return out, summary, logged
