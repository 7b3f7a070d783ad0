"""Token datasets for training: the manifest, a resumable batch loader, the fixed val set.

The tokenize stage writes `<dir>/manifest.json` and `<dir>/{train,val}/part-NNNNN.parquet`
with one row per document (`tokens`: list<uint16>, EOT appended). `TokenLoader` gives each
batch windows of T+1 tokens drawn at random from across the training set, as a textbook loop's
`torch.randint` offsets into the whole token array do (nanoGPT's get_batch), but without
replacement within an epoch and with a cursor a checkpoint can resume from exactly.

Memory: tokens stay in the file's dtype (uint16 for GPT-2, never int64) and the loader holds
one *group* of row groups at a time, about GROUP_TOKENS tokens (128 MiB). Each epoch permutes
all (shard, row group) chunks and cuts that order into groups; the windows of a group are
shuffled. A split up to 2*GROUP_TOKENS is one group, so batches are uniform over the whole
split. A larger one (bigger than RAM, say) is the usual shuffle-buffer trade-off: a batch's
windows come from the ~64 random row groups (tokenize writes ~1M tokens per row group) of one
group, not from all of them, so batches are slightly more alike than iid windows would be;
row groups are drawn from every shard, and a row group's documents are as the crawl ordered
them. Groups are read once per epoch, in order, so reading stays sequential per row group.

Under data parallelism every rank computes the same order and takes its own block of B
windows out of each global batch of world_size*B (nanoGPT's split of a batch), so N processes
at batch B see exactly the data of one process at batch N*B, and ranks never share a window.

A token dataset is a local folder or a URL in the store (`s3://bucket/llmforge/versions/
tokenize/<id>`): a rank on a machine that shares no disk with the pipeline reads its row
groups straight from the store through `pipeline.store.fs.Folder` (pyarrow reads ranges of the
file object), holding no local copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from model.config import GPT2_VOCAB_SIZE
from pipeline.documents import list_shards
from pipeline.errors import DataError
from pipeline.store.fs import Folder, is_url, locate

logger = logging.getLogger(__name__)

# Tokens a loader holds in memory at once: 64M uint16 tokens = 128 MiB per process. A split up
# to twice this size is one group, so its windows are shuffled over the whole split; a larger
# one is visited as random groups of row groups (see the module docstring).
GROUP_TOKENS = 1 << 26


@dataclass(frozen=True)
class TokenDatasetInfo:
    """What a token dataset's manifest says about it (defaults where a key is absent)."""

    path: Path | Folder
    version_id: str | None
    tokenizer: str = "gpt2"
    vocab_size: int = GPT2_VOCAB_SIZE
    eot_token: int = GPT2_VOCAB_SIZE - 1
    tokens_train: int | None = None
    tokens_val: int | None = None
    tokenizer_sha256: str | None = None  # a trained tokenizer's file (tokenizer-bpe.json)
    tokenizer_file: str | None = None


def token_folder(location: str | Path | Folder) -> Path | Folder:
    """Where a token dataset (or one split of it) lives: a local folder as a Path, as always;
    a URL (s3://...) as a store Folder, read without a local copy."""
    if isinstance(location, Folder) or is_url(location):
        folder = Folder(location)
        return folder.local_path() if folder.is_local else folder
    return Path(location)


def _parquet(shard: Path | str) -> pq.ParquetFile:
    """A shard opened for reading row groups: a local file, or a file object on the store."""
    try:
        if isinstance(shard, Path):
            return pq.ParquetFile(shard)
        folder, name = locate(shard)
        return pq.ParquetFile(folder.open(name))  # open as long as the loader reads it
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{shard}: not a readable Parquet file ({exc})") from None


def read_token_manifest(token_dir: Path | str | Folder) -> TokenDatasetInfo:
    """Read `<dir>/manifest.json` defensively: missing keys fall back to GPT-2 defaults."""
    token_dir = token_folder(token_dir)
    local = isinstance(token_dir, Path)
    if not (token_dir.is_dir() if local else token_dir.exists()):
        raise DataError(f"{token_dir}: token dataset folder not found")
    path = token_dir / "manifest.json"
    if not (path.exists() if local else token_dir.exists("manifest.json")):
        return TokenDatasetInfo(path=token_dir, version_id=None)
    try:
        text = path.read_text() if local else token_dir.read_text("manifest.json")
        manifest = json.loads(text)
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
            tokenizer_sha256=extra.get("tokenizer_sha256"),
            tokenizer_file=extra.get("tokenizer_file"),
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: bad value in counts.extra ({exc})") from None


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def get_encoding(name: str):
    """The tokenizer by name: the tokenize stage's helper when present, else tiktoken's."""
    try:
        from pipeline.tokenize.tokenizer import get_encoding as pipeline_get_encoding
    except ImportError:
        import tiktoken

        return tiktoken.get_encoding(name)
    return pipeline_get_encoding(name)


def tokenizer_spec(token_dir: Path | str | Folder) -> str | None:
    """A token dataset's trained tokenizer file as text (checked against the manifest's
    sha256), or None when it uses a tiktoken encoding by name (GPT-2)."""
    info = read_token_manifest(token_dir)
    if not info.tokenizer.startswith("bpe-"):
        return None
    from pipeline.tokenize.bpe import TOKENIZER_FILE, spec_sha256

    folder = token_folder(token_dir)
    name = info.tokenizer_file or TOKENIZER_FILE
    try:
        text = (
            (folder / name).read_text("utf-8")
            if isinstance(folder, Path)
            else folder.read_text(name)
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{token_dir}: tokenizer {info.tokenizer} file {name} unreadable ({exc})"
        ) from None
    if info.tokenizer_sha256 and spec_sha256(text) != info.tokenizer_sha256:
        raise DataError(f"{token_dir}/{name}: sha256 differs from the manifest's tokenizer_sha256")
    return text


def encoding_for(token_dir: Path | str | Folder):
    """The tiktoken Encoding a token dataset was written with: GPT-2 (or another tiktoken
    encoding) by name, or the BPE trained by the tokenize stage, from its file in the version."""
    spec = tokenizer_spec(token_dir)
    if spec is None:
        return get_encoding(read_token_manifest(token_dir).tokenizer)
    from pipeline.tokenize.bpe import encoding_from_spec

    return encoding_from_spec(spec)


def checkpoint_encoding(state: dict[str, Any]):
    """The Encoding a checkpoint was trained with, from the checkpoint alone: its
    `tokenizer_spec` (a trained tokenizer's file text) or its tokenizer name (GPT-2)."""
    spec = state.get("tokenizer_spec")
    if spec:
        from pipeline.tokenize.bpe import encoding_from_spec

        return encoding_from_spec(spec)
    return get_encoding(state.get("tokenizer") or "gpt2")


def _read_chunk(parquet: pq.ParquetFile, path: Path | str, row_group: int) -> np.ndarray:
    """One row group's tokens as a flat array in the file's dtype (uint16 for GPT-2)."""
    try:
        column = parquet.read_row_group(row_group, columns=["tokens"]).column("tokens")
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read row group {row_group} ({exc})") from None
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise DataError(f"{path}: column 'tokens' is {column.type}, expected list<uint16>")
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _row_group_lengths(parquet: pq.ParquetFile, path: Path | str) -> list[int]:
    """Tokens per row group: from the `num_tokens` column (cheap) or else by reading the
    token lists one row group at a time."""
    lengths = []
    for group in range(parquet.num_row_groups):
        try:
            if "num_tokens" in parquet.schema_arrow.names:
                column = parquet.read_row_group(group, columns=["num_tokens"]).column(0)
                lengths.append(int(pc.sum(column).as_py() or 0))
            else:
                column = parquet.read_row_group(group, columns=["tokens"]).column(0)
                lengths.append(int(pc.sum(pc.list_value_length(column)).as_py() or 0))
        except (OSError, KeyError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot read row group {group} ({exc})") from None
    return lengths


class TokenLoader:
    """Batches (x, y) of shape (B, T): windows drawn at random from across the whole split.

    Epoch e permutes every (shard, row group) chunk of the split with a generator seeded by
    (seed, e) and cuts that order into groups of about `group_tokens` tokens (one group when
    the split is smaller). A group is read into memory (uint16), offset by a random 0..T-1
    tokens and cut into windows of T+1 tokens stepping by T (x = first T, y = last T, as
    nanoGPT's get_batch); its windows are visited in a random order seeded by (seed, e, group).
    So every window of an epoch is used once, and a step's global batch is world_size*B windows
    of which rank r takes r*B .. r*B+B-1. The cursor (epoch, group, window) is all a checkpoint
    needs to resume on exactly the same batches.
    """

    def __init__(
        self,
        split_dir: Path | str | Folder,
        batch_size: int,
        context_length: int,
        seed: int = 0,
        vocab_size: int = GPT2_VOCAB_SIZE,
        rank: int = 0,
        world_size: int = 1,
        group_tokens: int = GROUP_TOKENS,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if group_tokens < 1:
            raise ValueError(f"group_tokens must be positive, got {group_tokens}")
        self.split_dir = token_folder(split_dir)
        self.batch_size = batch_size
        self.context_length = context_length
        self.seed = seed
        self.vocab_size = vocab_size
        self.rank, self.world_size = rank, world_size
        self.group_tokens = group_tokens
        self.shards = list_shards(self.split_dir)
        self._files: dict[int, pq.ParquetFile] = {}
        self.chunks: list[tuple[int, int]] = []  # (shard index, row group index)
        lengths: list[int] = []
        for shard, path in enumerate(self.shards):
            for group, length in enumerate(_row_group_lengths(self._file(shard), path)):
                self.chunks.append((shard, group))
                lengths.append(length)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.total_tokens = int(self.lengths.sum())
        need = world_size * batch_size * (context_length + 1)
        if self.total_tokens < need:
            per = f"{batch_size}*({context_length}+1)"
            what = f"N*B*(T+1) = {world_size}*{per}" if world_size > 1 else f"B*(T+1) = {per}"
            raise DataError(
                f"{self.split_dir}: {self.total_tokens} tokens, fewer than one batch of "
                f"{what} = {need}"
            )
        self._plan: tuple[int, list[np.ndarray]] | None = None  # (epoch, chunk ids per group)
        self._starts: dict[tuple[int, int], np.ndarray] = {}
        self._tokens: dict[tuple[int, int], np.ndarray] = {}  # the one group in memory
        self.epoch, self.group, self.window = 0, 0, 0  # the cursor

    def _file(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            self._files[shard] = _parquet(self.shards[shard])
        return self._files[shard]

    def groups(self, epoch: int) -> list[np.ndarray]:
        """Chunk indices (into self.chunks) of each group of an epoch, in visiting order."""
        if self._plan is None or self._plan[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks))
            n_groups = max(1, self.total_tokens // self.group_tokens)
            # A chunk joins the group its first token falls in: groups of ~total/n_groups
            # tokens each (>= group_tokens), whatever the chunks' sizes.
            first = np.cumsum(self.lengths[order]) - self.lengths[order]
            which = first * n_groups // self.total_tokens
            groups = [order[which == g] for g in range(n_groups)]
            self._plan = (epoch, [g for g in groups if len(g)])  # keep one epoch's plan
        return self._plan[1]

    def starts(self, epoch: int, group: int) -> np.ndarray:
        """Start offsets (in the group's token array) of its windows, in visiting order."""
        key = (epoch, group)
        if key not in self._starts:
            T = self.context_length
            size = int(self.lengths[self.groups(epoch)[group]].sum())
            rng = np.random.default_rng([self.seed, epoch, group, 1])
            offset = int(rng.integers(T))
            count = max(0, (size - offset - 1) // T)
            self._starts = {key: offset + T * rng.permutation(count)}  # keep one group's
        return self._starts[key]

    def _group_tokens(self, epoch: int, group: int) -> np.ndarray:
        """A group's chunks read and concatenated in group order, in the file's dtype."""
        key = (epoch, group)
        if key not in self._tokens:
            self._tokens.clear()  # free the last group before reading the next
            parts = [self._chunk(int(i)) for i in self.groups(epoch)[group]]
            self._tokens[key] = np.concatenate(parts)
        return self._tokens[key]

    def _chunk(self, index: int) -> np.ndarray:
        shard, group = self.chunks[index]
        path = self.shards[shard]
        tokens = _read_chunk(self._file(shard), path, group)
        if tokens.size != self.lengths[index]:
            raise DataError(
                f"{path}: row group {group} has {tokens.size} tokens but its num_tokens column"
                f" says {int(self.lengths[index])}"
            )
        if tokens.size and int(tokens.max()) >= self.vocab_size:
            raise DataError(
                f"{path}: row group {group} has token id {int(tokens.max())}"
                f" >= vocab_size {self.vocab_size}"
            )
        return tokens

    def _advance(self) -> None:
        """Move the cursor past a finished group: the next one, or the next epoch's first."""
        self.window = 0
        if self.group + 1 < len(self.groups(self.epoch)):
            self.group += 1
        else:
            self.epoch, self.group = self.epoch + 1, 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: int64 (B, T), y shifted by one token; this rank's block of the global batch."""
        B, T = self.batch_size, self.context_length
        mine = range(self.rank * B, self.rank * B + B)  # positions in the global batch
        rows, taken, empty = [], 0, 0
        while taken < self.world_size * B:
            starts = self.starts(self.epoch, self.group)
            n = min(len(starts) - self.window, self.world_size * B - taken)
            lo, hi = max(taken, mine.start), min(taken + n, mine.stop)
            if lo < hi:  # only the groups this rank takes windows from are read
                picked = starts[self.window + lo - taken : self.window + hi - taken]
                tokens = self._group_tokens(self.epoch, self.group)
                rows.append(tokens[picked[:, None] + np.arange(T + 1)])
            taken, self.window = taken + n, self.window + n
            empty = 0 if n else empty + 1
            if empty > len(self.groups(self.epoch)) + 1:  # only empty groups: never a window
                raise DataError(f"{self.split_dir}: no group holds a window of T+1={T + 1} tokens")
            if self.window == len(starts):
                self._advance()
        windows = np.concatenate(rows).astype(np.int64)  # (B, T+1)
        x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
        y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))
        return x, y

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "group": self.group,
            "window": self.window,
            "group_tokens": self.group_tokens,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "group" not in state:  # a cursor of the sequential loader before random windows
            epoch = int(state.get("epoch", 0))
            logger.warning(
                "%s: the checkpoint's data cursor %s is from the older sequential loader; "
                "resuming at the start of epoch %d in random-window order",
                self.split_dir,
                state,
                epoch,
            )
            self.epoch, self.group, self.window = epoch, 0, 0
            return
        if int(state.get("group_tokens", self.group_tokens)) != self.group_tokens:
            raise DataError(
                f"{self.split_dir}: data cursor made with group_tokens={state['group_tokens']}"
                f" but this loader uses {self.group_tokens}; its batches would differ"
            )
        epoch, group, window = int(state["epoch"]), int(state["group"]), int(state["window"])
        if group >= len(self.groups(epoch)) or window > len(self.starts(epoch, group)):
            raise DataError(f"{self.split_dir}: data cursor {state} is outside this dataset")
        self.epoch, self.group, self.window = epoch, group, window


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
    token_dir: Path | str | Folder, eval_tokens: int, min_tokens: int = 2
) -> ValidationSet:
    """The first `eval_tokens` tokens of the val split in shard and row group order."""
    info = read_token_manifest(token_dir)
    split_dir = token_folder(token_dir) / "val"
    parts, taken = [], 0
    for path in list_shards(split_dir):
        parquet = _parquet(path)
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
