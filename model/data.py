"""Token datasets for training: the manifest, a resumable batch loader, the fixed val set.

The tokenize stage writes `<dir>/manifest.json` and `<dir>/{train,val}/part-NNNNN.parquet`
with one row per document (`tokens`: list<uint16>, EOT appended). The loader streams one
Parquet row group at a time as a flat uint16 array (never a whole shard, never int64), walks
shards and row groups in a seeded order per epoch, and cuts contiguous windows of T+1 tokens.
Its cursor (epoch, position in the order, token offset) is all a checkpoint needs to resume
on exactly the same batches. Under data parallelism every rank walks the same stream and takes
its own block of B windows out of each global batch of world_size*B (nanoGPT's loader), so N
processes at batch B see exactly the data of one process at batch N*B.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from model.config import GPT2_VOCAB_SIZE
from pipeline.documents import DataError, list_shards


@dataclass(frozen=True)
class TokenDatasetInfo:
    """What a token dataset's manifest says about it (defaults where a key is absent)."""

    path: Path
    version_id: str | None
    tokenizer: str = "gpt2"
    vocab_size: int = GPT2_VOCAB_SIZE
    eot_token: int = GPT2_VOCAB_SIZE - 1
    tokens_train: int | None = None
    tokens_val: int | None = None


def read_token_manifest(token_dir: Path | str) -> TokenDatasetInfo:
    """Read `<dir>/manifest.json` defensively: missing keys fall back to GPT-2 defaults."""
    token_dir = Path(token_dir)
    if not token_dir.is_dir():
        raise DataError(f"{token_dir}: token dataset folder not found")
    path = token_dir / "manifest.json"
    if not path.exists():
        return TokenDatasetInfo(path=token_dir, version_id=None)
    try:
        manifest = json.loads(path.read_text())
        extra = (manifest.get("counts") or {}).get("extra") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{path}: not a valid token dataset manifest ({exc})") from None
    dtype = extra.get("dtype", "uint16")
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"{path}: counts.extra.dtype={dtype!r}, expected uint16 or uint32")
    try:
        vocab_size = int(extra.get("vocab_size", GPT2_VOCAB_SIZE))
        return TokenDatasetInfo(
            path=token_dir,
            version_id=manifest.get("version_id"),
            tokenizer=str(extra.get("tokenizer", "gpt2")),
            vocab_size=vocab_size,
            eot_token=int(extra.get("eot_token", vocab_size - 1)),
            tokens_train=_optional_int(extra.get("tokens_train")),
            tokens_val=_optional_int(extra.get("tokens_val")),
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: bad value in counts.extra ({exc})") from None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def get_encoding(name: str):
    """The tokenizer by name: the tokenize stage's helper when present, else tiktoken's."""
    try:
        from pipeline.tokenize import get_encoding as pipeline_get_encoding
    except ImportError:
        import tiktoken

        return tiktoken.get_encoding(name)
    return pipeline_get_encoding(name)


def _read_chunk(parquet: pq.ParquetFile, path: Path, row_group: int) -> np.ndarray:
    """One row group's tokens as a flat array in the file's dtype (uint16 for GPT-2)."""
    try:
        column = parquet.read_row_group(row_group, columns=["tokens"]).column("tokens")
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read row group {row_group} ({exc})") from None
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise DataError(f"{path}: column 'tokens' is {column.type}, expected list<uint16>")
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def count_tokens(shards: list[Path]) -> int:
    """Tokens in a split from the `num_tokens` column (cheap) or else the lists' lengths."""
    total = 0
    for path in shards:
        try:
            parquet = pq.ParquetFile(path)
            if "num_tokens" in parquet.schema_arrow.names:
                column = parquet.read(columns=["num_tokens"]).column(0)
                total += int(pc.sum(column).as_py() or 0)
            else:
                column = parquet.read(columns=["tokens"]).column(0)
                total += int(pc.sum(pc.list_value_length(column)).as_py() or 0)
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot count tokens ({exc})") from None
    return total


class TokenLoader:
    """Batches (x, y) of shape (B, T) from a split, in a seeded, resumable order.

    Each epoch visits every (shard, row group) once: shard order and then each shard's row
    group order are permuted by a generator seeded with (seed, epoch). The token stream is
    cut into windows of T+1 consecutive tokens (x = first T, y = last T); a step's global batch
    is world_size*B windows, of which rank r takes windows r*B .. r*B+B-1. The cursor then
    advances by world_size*B*T so the last window's last token starts the next batch, as in
    nanoGPT.
    """

    def __init__(
        self,
        split_dir: Path | str,
        batch_size: int,
        context_length: int,
        seed: int = 0,
        vocab_size: int = GPT2_VOCAB_SIZE,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.split_dir = Path(split_dir)
        self.batch_size = batch_size
        self.context_length = context_length
        self.seed = seed
        self.vocab_size = vocab_size
        self.rank, self.world_size = rank, world_size
        self.shards = list_shards(self.split_dir)
        self.total_tokens = count_tokens(self.shards)
        need = world_size * batch_size * (context_length + 1)
        if self.total_tokens < need:
            per = f"{batch_size}*({context_length}+1)"
            what = f"N*B*(T+1) = {world_size}*{per}" if world_size > 1 else f"B*(T+1) = {per}"
            raise DataError(
                f"{self.split_dir}: {self.total_tokens} tokens, fewer than one batch of "
                f"{what} = {need}"
            )
        self._files: dict[int, pq.ParquetFile] = {}
        self._row_groups = [self._file(i).num_row_groups for i in range(len(self.shards))]
        self._cache: dict[tuple[int, int], np.ndarray] = {}
        self._lengths: dict[tuple[int, int], int] = {}
        self._orders: dict[int, list[tuple[int, int]]] = {}
        self.epoch, self.position, self.offset = 0, 0, 0  # the cursor

    def _file(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            try:
                self._files[shard] = pq.ParquetFile(self.shards[shard])
            except (OSError, pa.ArrowException) as exc:
                path = self.shards[shard]
                raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return self._files[shard]

    def order(self, epoch: int) -> list[tuple[int, int]]:
        """The (shard index, row group index) visiting order of one epoch."""
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            order = []
            for shard in rng.permutation(len(self.shards)):
                for group in rng.permutation(self._row_groups[shard]):
                    order.append((int(shard), int(group)))
            self._orders = {epoch: order}  # keep only the current epoch's order
        return self._orders[epoch]

    def _chunk(self, key: tuple[int, int]) -> np.ndarray:
        if key not in self._cache:
            shard, group = key
            tokens = _read_chunk(self._file(shard), self.shards[shard], group)
            if tokens.size and int(tokens.max()) >= self.vocab_size:
                raise DataError(
                    f"{self.shards[shard]}: row group {group} has token id {int(tokens.max())}"
                    f" >= vocab_size {self.vocab_size}"
                )
            if self._lengths.setdefault(key, tokens.size) != tokens.size:
                raise DataError(
                    f"{self.shards[shard]}: row group {group} has {tokens.size} tokens but its"
                    f" num_tokens column says {self._lengths[key]}"
                )
            if len(self._cache) >= 4:  # windows span a few consecutive chunks at most
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = tokens
        return self._cache[key]

    def _length(self, key: tuple[int, int]) -> int:
        """Tokens in a chunk; from its `num_tokens` column when there is one, so a rank can
        step over the other ranks' windows without decoding them."""
        if key not in self._lengths:
            shard, group = key
            parquet = self._file(shard)
            if "num_tokens" not in parquet.schema_arrow.names:
                return len(self._chunk(key))
            try:
                column = parquet.read_row_group(group, columns=["num_tokens"]).column(0)
            except (OSError, pa.ArrowException) as exc:
                path = self.shards[shard]
                raise DataError(f"{path}: cannot read row group {group} ({exc})") from None
            self._lengths[key] = int(pc.sum(column).as_py() or 0)
        return self._lengths[key]

    def _following(self, epoch: int, position: int) -> tuple[int, int]:
        """The chunk after (epoch, position): the next one in this epoch, or the next epoch's."""
        return (epoch, position + 1) if position + 1 < len(self.order(epoch)) else (epoch + 1, 0)

    def _walk(self, skip: int, count: int, advance: int) -> np.ndarray:
        """Tokens [skip, skip+count) of the stream after the cursor; the cursor moves by
        `advance` tokens (to the start of a chunk rather than the end of the one before)."""
        parts, cursor = [], None
        epoch, position, offset = self.epoch, self.position, self.offset
        start = 0  # stream position of (epoch, position, offset), relative to the cursor
        while True:
            key = self.order(epoch)[position]
            end = start + self._length(key) - offset
            lo, hi = max(start, skip), min(end, skip + count)
            if lo < hi:
                parts.append(self._chunk(key)[offset + lo - start : offset + hi - start])
            if cursor is None and start <= advance < end:
                cursor = (epoch, position, offset + advance - start)
            if cursor is not None and end >= skip + count:
                break
            (epoch, position), offset, start = self._following(epoch, position), 0, end
        self.epoch, self.position, self.offset = cursor
        return np.concatenate(parts)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: int64 (B, T), y shifted by one token; this rank's block of the global batch."""
        B, T = self.batch_size, self.context_length
        tokens = self._walk(self.rank * B * T, B * T + 1, self.world_size * B * T)
        tokens = torch.from_numpy(tokens.astype(np.int64))
        x = tokens[:-1].view(B, T)
        y = tokens[1:].view(B, T)
        return x, y

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position, offset = int(state["epoch"]), int(state["position"]), int(state["offset"])
        if position >= len(self.order(epoch)):
            raise DataError(f"{self.split_dir}: data cursor {state} is outside this dataset")
        self.epoch, self.position, self.offset = epoch, position, offset


@dataclass(frozen=True)
class ValidationSet:
    """The fixed validation tokens and what identifies them across runs."""

    tokens: np.ndarray  # flat token ids in the file's dtype
    version_id: str | None
    sha256: str  # of the tokens' little-endian uint32 bytes: same ids, same hash

    def identity(self) -> dict[str, Any]:
        size = int(self.tokens.size)
        return {"version_id": self.version_id, "tokens": size, "sha256": self.sha256}


def validation_tokens(
    token_dir: Path | str, eval_tokens: int, min_tokens: int = 2
) -> ValidationSet:
    """The first `eval_tokens` tokens of the val split in shard and row group order."""
    info = read_token_manifest(token_dir)
    split_dir = Path(token_dir) / "val"
    parts, taken = [], 0
    for path in list_shards(split_dir):
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        for group in range(parquet.num_row_groups):
            chunk = _read_chunk(parquet, path, group)[: eval_tokens - taken]
            parts.append(chunk)
            taken += len(chunk)
            if taken >= eval_tokens:
                break
        if taken >= eval_tokens:
            break
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    if tokens.size < min_tokens:
        raise DataError(f"{split_dir}: {tokens.size} val tokens, need at least {min_tokens}")
    digest = hashlib.sha256(tokens.astype("<u4").tobytes()).hexdigest()[:16]
    return ValidationSet(tokens=tokens, version_id=info.version_id, sha256=digest)
