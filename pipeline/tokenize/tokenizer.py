"""Tokenize stage: documents in, token shards split into train and val out.

The tokenizer is tiktoken's `encoding` (GPT-2 by default) or, with `tokenizer = "train"`, a
byte-level BPE trained first on the train split's documents (pipeline/tokenize/bpe.py) and
written into the version as `tokenizer-bpe.json`; the manifest names it (`bpe-<vocab>-<sha12>`).

Each document becomes one row `(id, tokens, num_tokens)` whose tokens end with `<|endoftext|>`,
so a loader can concatenate rows and still see document boundaries (as nanoGPT's
`prepare.py` does). Input shard i becomes `train/part-i.parquet` and `val/part-i.parquet`.

A document goes to val iff `int(sha256(id)[:8], 16) / 2**32 < val_fraction`: the choice depends
on the id alone, so it is the same whatever the shard layout, order or neighbours, and a page
re-crawled later lands on the same side (no train/val leakage across versions). Tiny datasets
still get both sides: with >= 2 documents, if none hashed into val the one with the smallest
hash moves to val, and if none stayed in train the one with the largest hash moves to train.

    from pipeline.tokenize.tokenizer import TokenizeConfig, run
    run(TokenizeConfig(), Path("dedup/data"), Path("tokens"))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tiktoken
from pydantic import BaseModel, ConfigDict, Field, model_serializer

from pipeline.documents import (
    DOCUMENT_SCHEMA,
    Source,
    check_shard,
    file_name,
    iter_batches,
    list_shards,
    read_schema,
    shard_folder,
)
from pipeline.errors import DataError, EmptyStageError
from pipeline.stage import ParallelMap, ShardResult, StageResult, serial_map
from pipeline.store.fs import as_folder
from pipeline.tokenize import bpe

STAGE = "tokenize"
SPLITS = ("train", "val")


class TokenizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoding: str = "gpt2"  # tiktoken name; gpt2 = 50,257 tokens, <|endoftext|> = 50256
    # "gpt2": the tiktoken `encoding` above; "train": a byte-level BPE trained on this
    # dataset's train split (pipeline/tokenize/bpe.py), stored in the version.
    tokenizer: Literal["gpt2", "train"] = "gpt2"
    # "train" only; EOT included. Measured on 10.8 MB train / 1.3 MB val of real text
    # (Shakespeare, dolma CCNet pages, trafilatura's multilingual test pages), val tokens per
    # byte: GPT-2 0.324; trained 4,096: 0.356, 8,192: 0.315, 16,384: 0.282, 32,768: 0.256.
    # 8,192 already beats GPT-2 on this text with 1/6 of its vocabulary; each doubling after
    # it saves ~10% of the tokens but doubles embedding + head (8,192 x 256 = 2.1M parameters
    # at d_model 256, 50,257 x 256 = 12.9M), which a small CPU model pays for in steps.
    vocab_size: int = Field(8192, ge=257, le=1 << 20)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)  # share of documents (by id hash) in val
    batch_size: int = Field(256, ge=1)  # documents per encode_ordinary_batch call
    threads: int = Field(2, ge=1)  # REFERENCE.md: 2 threads ~19 MB/s of text on this machine
    # ~2 MiB of uint16 per Parquet row group: bounds writer memory, lets loaders read in pieces.
    row_group_tokens: int = Field(1 << 20, ge=1)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """With the GPT-2 tokenizer the dump has no `tokenizer`/`vocab_size` keys: the config
        part of existing versions' ids stays what it was (pipeline/stages.py plan())."""
        data = handler(self)
        if self.tokenizer == "gpt2":
            data.pop("tokenizer", None)
            data.pop("vocab_size", None)
        return data


def get_encoding(name: str) -> tiktoken.Encoding:
    """A tiktoken encoding, or one DataError line saying why it cannot be loaded.

    tiktoken downloads BPE files on first use and fails with requests/urllib/ssl errors
    offline; users need to be told to point TIKTOKEN_CACHE_DIR at a folder holding them.
    """
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise DataError(f"unknown tiktoken encoding '{name}' (known: {', '.join(sorted(known))})")
    try:
        return tiktoken.get_encoding(name)
    except (OSError, ImportError) as exc:  # requests/urllib3/ssl errors are all OSErrors
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "unset")
        raise DataError(
            f"tiktoken could not load '{name}' BPE files (offline?): set TIKTOKEN_CACHE_DIR "
            f"to a folder holding them (now {cache}; {type(exc).__name__})"
        ) from None
    except ValueError as exc:  # hash mismatch: a corrupt cached or downloaded file
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"tiktoken '{name}' BPE files are unusable: {first_line}") from None


def token_dtype(n_vocab: int) -> pa.DataType:
    """uint16 holds every GPT-2 id (half the bytes of int32); bigger vocabularies need uint32."""
    return pa.uint16() if n_vocab <= 1 << 16 else pa.uint32()


def token_schema(dtype: pa.DataType) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("tokens", pa.list_(dtype), nullable=False),  # ends with the EOT token
            pa.field("num_tokens", pa.int32(), nullable=False),  # len(tokens), EOT included
        ]
    )


def check_token_dataset(folder: Source, splits: Sequence[str] = SPLITS) -> None:
    """One DataError line unless `folder` (a local path or URL) holds token shards for `splits`
    (what train and evaluate read): `tokens` a list of uint16/uint32 ids, `num_tokens` an
    integer if present."""
    root = as_folder(folder)
    if not root.is_dir():
        raise DataError(f"{folder}: token dataset folder not found")
    for split in splits:
        if not root.is_dir(split):
            raise DataError(f"{folder}: not a token dataset: no {split}/ folder of token shards")
        for shard in list_shards(root.url_of(split)):
            schema = read_schema(shard)
            if "tokens" not in schema.names:
                have = ", ".join(schema.names[:12])
                raise DataError(f"{shard}: not a token shard: no column 'tokens' (columns: {have})")
            dtype = schema.field("tokens").type
            is_list = pa.types.is_list(dtype) or pa.types.is_large_list(dtype)
            if not is_list or dtype.value_type not in (pa.uint16(), pa.uint32()):
                got = f"list<{dtype.value_type}>" if is_list else str(dtype)
                raise DataError(
                    f"{shard}: column 'tokens' is {got}, expected list<uint16> or list<uint32>"
                )
            if "num_tokens" in schema.names and not pa.types.is_integer(
                schema.field("num_tokens").type
            ):
                got = schema.field("num_tokens").type
                raise DataError(f"{shard}: column 'num_tokens' is {got}, expected an integer")


def decode_tokens(encoding_name: str, tokens: Sequence[int] | np.ndarray) -> str:
    """Text of a token sequence (EOT shows as `<|endoftext|>`); for checks and samples."""
    return get_encoding(encoding_name).decode([int(t) for t in tokens])


def val_score(doc_id: str) -> float:
    """The id's position in [0, 1): documents below val_fraction go to val."""
    return int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest()[:8], 16) / 2**32


@dataclass(frozen=True)
class SplitPlan:
    """The hash rule plus at most one document moved each way so both sides are non-empty."""

    val_fraction: float
    force_val: str | None = None
    force_train: str | None = None

    def is_val(self, doc_id: str) -> bool:
        if doc_id == self.force_val:
            return True
        if doc_id == self.force_train:
            return False
        return val_score(doc_id) < self.val_fraction


def plan_split(shards: Sequence[Source], val_fraction: float) -> SplitPlan:
    """One pass over the id columns; stops as soon as both sides have a document."""
    if val_fraction <= 0:
        return SplitPlan(val_fraction)
    docs, any_val, any_train = 0, False, False
    lowest: tuple[float, str] | None = None
    highest: tuple[float, str] | None = None
    for shard in shards:
        for batch in iter_batches(shard, columns=["id"]):
            for doc_id in batch.column(0).to_pylist():
                if doc_id is None:
                    raise DataError(f"{shard}: a document has a null id")
                key = (val_score(doc_id), doc_id)
                lowest = key if lowest is None else min(lowest, key)
                highest = key if highest is None else max(highest, key)
                any_val |= key[0] < val_fraction
                any_train |= key[0] >= val_fraction
                docs += 1
            if any_val and any_train:
                return SplitPlan(val_fraction)
    if docs < 2:
        return SplitPlan(val_fraction)
    return SplitPlan(
        val_fraction,
        force_val=None if any_val else lowest[1],
        force_train=None if any_train else highest[1],
    )


class _TokenShardWriter:
    """Writes one token shard row group by row group to `path` (a `Folder.output` temp file:
    published by the caller's block only if every writer closed cleanly)."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_tokens: int):
        self.schema = schema
        self.row_group_tokens = row_group_tokens
        self.writer = pq.ParquetWriter(path, schema)
        wide = schema.field("tokens").type.value_type == pa.uint32()
        self.np_dtype = np.uint32 if wide else np.uint16  # not to_pandas_dtype: imports pandas
        self.pending: list[pa.RecordBatch] = []
        self.pending_tokens = 0

    def write(self, ids: list[str], token_lists: list[list[int]], eot: int) -> None:
        if not ids:
            return
        lengths = np.fromiter((len(t) + 1 for t in token_lists), np.int32, len(token_lists))
        offsets = np.zeros(len(ids) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.empty(int(offsets[-1]), self.np_dtype)
        for start, tokens in zip(offsets[:-1], token_lists, strict=True):
            flat[start : start + len(tokens)] = tokens
            flat[start + len(tokens)] = eot
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(ids, pa.string()),
                pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
                pa.array(lengths),
            ],
            schema=self.schema,
        )
        self.pending.append(batch)
        self.pending_tokens += len(flat)
        if self.pending_tokens >= self.row_group_tokens:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.pending, self.pending_tokens = [], 0

    def __enter__(self) -> _TokenShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._flush()
        self.writer.close()


@dataclass(frozen=True)
class TokenizeTask:
    """One input shard's work, small and picklable for any ParallelMap: the shard and the out
    folder are local paths or URLs (Folders pickle as theirs), never driver-only state."""

    input: Source
    out: Source
    config: TokenizeConfig
    plan: SplitPlan
    spec: str | None = None  # the trained tokenizer's file text (tokenizer = "train")


def stage_encoding(config: TokenizeConfig, spec: str | None) -> tiktoken.Encoding:
    """The encoding the stage writes with: the trained one when there is a spec, else tiktoken's."""
    return bpe.encoding_from_spec(spec) if spec is not None else get_encoding(config.encoding)


def tokenize_shard(task: TokenizeTask) -> ShardResult:
    """Tokenize one document shard into its train and val token shards."""
    config, path = task.config, task.input
    name, dest = file_name(path), as_folder(task.out)
    enc = stage_encoding(config, task.spec)
    # Compression against GPT-2 on the same val text (only worth a second encode when the
    # stage's own tokenizer is not GPT-2 already).
    reference = get_encoding("gpt2") if task.spec is not None else None
    schema = token_schema(token_dtype(enc.n_vocab))
    counts = {f"{kind}_{split}": 0 for kind in ("docs", "tokens") for split in SPLITS}
    counts.update(text_bytes=0, text_bytes_val=0)
    if reference is not None:
        counts["gpt2_tokens_val"] = 0
    with contextlib.ExitStack() as stack:  # an error drops both shards, a clean end keeps both
        writers = {}
        for split in SPLITS:
            local = stack.enter_context(dest.output(f"{split}/{name}"))
            writers[split] = stack.enter_context(
                _TokenShardWriter(local, schema, config.row_group_tokens)
            )
        for batch in iter_batches(path, config.batch_size, columns=["id", "text"]):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            if batch.column("text").null_count or batch.column("id").null_count:
                bad = next(i for i, t in zip(ids, texts, strict=True) if t is None or i is None)
                raise DataError(f"{path}: document {bad} has a null id or text")
            token_lists = enc.encode_ordinary_batch(texts, num_threads=config.threads)
            to_val = [task.plan.is_val(doc_id) for doc_id in ids]
            nbytes = pc.binary_length(batch.column("text")).to_numpy()
            counts["text_bytes"] += int(nbytes.sum())
            counts["text_bytes_val"] += int(nbytes[np.array(to_val, bool)].sum())
            if reference is not None:
                val_texts = [t for t, v in zip(texts, to_val, strict=True) if v]
                counts["gpt2_tokens_val"] += sum(
                    map(len, reference.encode_ordinary_batch(val_texts, num_threads=config.threads))
                )
            for split, want_val in zip(SPLITS, (False, True), strict=True):
                keep = [i for i, v in enumerate(to_val) if v == want_val]
                side = [token_lists[i] for i in keep]
                writers[split].write([ids[i] for i in keep], side, enc.eot_token)
                counts[f"docs_{split}"] += len(side)
                counts[f"tokens_{split}"] += sum(len(t) + 1 for t in side)
    docs = counts["docs_train"] + counts["docs_val"]
    return ShardResult(shard=name, docs_in=docs, docs_out=docs, extra=counts)


def input_shards(input_dir: Source) -> list[str]:
    """The shards (paths or URLs) of a document stage's output folder (its `data/`) or of a
    shard folder."""
    data = as_folder(input_dir) / "data"
    folder, names = shard_folder(data if data.is_dir() else input_dir)
    return [folder.url_of(name) for name in names]


def train_texts(shards: Sequence[Source], plan: SplitPlan, batch_size: int) -> Iterator[str]:
    """The texts of the train split's documents, in shard order: what the tokenizer learns
    from (val documents never reach the trainer, so val loss stays honest)."""
    for shard in shards:
        for batch in iter_batches(shard, batch_size, columns=["id", "text"]):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            for doc_id, text in zip(ids, texts, strict=True):
                if doc_id is not None and text is not None and not plan.is_val(doc_id):
                    yield text


def train_tokenizer(
    config: TokenizeConfig, shards: Sequence[Source], plan: SplitPlan, out: Any
) -> str:
    """Train the stage's BPE on the train split and write its file into the version folder;
    returns the file's text. Part of the version because it is derived from the documents
    and the config, which the version id already hashes."""
    spec = bpe.train_spec(train_texts(shards, plan, config.batch_size), config.vocab_size)
    out.write_text(bpe.TOKENIZER_FILE, spec)
    return spec


def tokenizer_extra(enc: tiktoken.Encoding, name: str, spec: str | None) -> dict[str, Any]:
    """The manifest's tokenizer keys (counts.extra): what readers (model/data.py) load."""
    extra: dict[str, Any] = {"tokenizer": name, "vocab_size": enc.n_vocab}
    extra["eot_token"] = enc.eot_token
    if spec is not None:
        extra.update(tokenizer_sha256=bpe.spec_sha256(spec), tokenizer_file=bpe.TOKENIZER_FILE)
    return extra


def run(
    config: TokenizeConfig, input_dir: Source, out_dir: Source, pmap: ParallelMap = serial_map
) -> StageResult:
    """Tokenize every shard of `input_dir` into `out_dir/{train,val}/part-NNNNN.parquet`
    (either may be a local path, a URL or a Folder); with tokenizer = "train", first train the
    tokenizer on the train split and write it as `out_dir/tokenizer-bpe.json`."""
    if config.tokenizer == "train":
        get_encoding("gpt2")  # the compression reference: fail before any work
    else:
        get_encoding(config.encoding)  # fail here, once, before any worker starts
    shards = input_shards(input_dir)
    for shard in shards:  # a wrong input fails in one line naming the file and the column
        check_shard(shard, DOCUMENT_SCHEMA, ["id", "text"])
    plan = plan_split(shards, config.val_fraction)
    out = as_folder(out_dir)
    spec = train_tokenizer(config, shards, plan, out) if config.tokenizer == "train" else None
    enc = stage_encoding(config, spec)
    name = bpe.tokenizer_name(spec) if spec is not None else config.encoding
    tasks = [TokenizeTask(shard, out, config, plan, spec) for shard in shards]
    results = pmap(tokenize_shard, tasks, STAGE)
    totals = {key: sum(r.extra[key] for r in results) for key in results[0].extra}
    if totals["docs_train"] + totals["docs_val"] == 0:
        raise EmptyStageError(STAGE, {})
    extra = {
        **tokenizer_extra(enc, name, spec),
        "dtype": str(token_dtype(enc.n_vocab)),
        **totals,
        **compression(totals),
        "force_val": plan.force_val,
        "force_train": plan.force_train,
    }
    return StageResult.from_shards(results, extra=extra)


def describe_compression(extra: dict[str, Any]) -> str | None:
    """One line on the tokenizer's compression for run summaries and reports, e.g.
    `bpe-8192-3fa2c1d4e5f6: 0.315 tokens/byte (GPT-2 0.324)`; None for older manifests."""
    if not isinstance(extra.get("tokens_per_byte"), int | float):
        return None
    line = f"{extra.get('tokenizer', '?')}: {extra['tokens_per_byte']:.3f} tokens/byte"
    if isinstance(extra.get("gpt2_tokens_per_byte"), int | float):
        line += f" (GPT-2 {extra['gpt2_tokens_per_byte']:.3f})"
    return line


def compression(totals: dict[str, int]) -> dict[str, float]:
    """Tokens per byte of UTF-8 text on the val split (EOTs not counted): the stage's
    tokenizer, and GPT-2 on the same text when the stage trained its own."""
    val_bytes = totals.get("text_bytes_val", 0)
    if not val_bytes:
        return {}
    out = {"tokens_per_byte": round((totals["tokens_val"] - totals["docs_val"]) / val_bytes, 4)}
    if "gpt2_tokens_val" in totals:
        out["gpt2_tokens_per_byte"] = round(totals["gpt2_tokens_val"] / val_bytes, 4)
    return out
