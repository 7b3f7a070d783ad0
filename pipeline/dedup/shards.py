"""The per-shard units of the dedup stage: sign a shard, then split it into kept and removed.

Both are module-level functions of one small frozen dataclass of files (local paths or URLs)
and settings, so `pmap` may run them in another process or on a Dask worker of another machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.exact import exact_hash, normalize_text
from pipeline.dedup.lsh import band_hashes, save_array
from pipeline.dedup.signatures import Signer, signature_schema
from pipeline.documents import (
    DOCUMENT_COLUMNS,
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    Source,
    atomic_write_table,
    file_name,
    iter_batches,
    read_table,
)
from pipeline.errors import DataError
from pipeline.stage import ShardResult

STAGE = "dedup"
DECISION_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("cluster_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class SignTask:
    shard: Source
    out: Source  # signature shard (Parquet, kept)
    bands_out: Source  # (bands, rows) uint64 .npy
    signatures_out: Source | None  # raw (rows, num_perm) .npy, only to verify pairs
    config: DedupConfig


def sign_shard(task: SignTask) -> ShardResult:
    """One signature row per document of `task.shard`, in row order."""
    config = task.config
    signer = Signer(config.num_perm, config.seed, config.ngram)
    ids, lengths, hashes, matrices = [], [], [], []
    for batch in iter_batches(task.shard, columns=["id", "text"]):
        texts = batch.column("text").to_pylist()
        normalized = [normalize_text(text) for text in texts]
        ids.append(batch.column("id"))
        lengths += [len(text or "") for text in texts]
        hashes += [exact_hash(text) for text in normalized]
        matrices.append(signer.sign(normalized))
    matrix = np.concatenate(matrices) if matrices else np.empty((0, config.num_perm), np.uint32)
    columns = [
        pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
        pa.array(lengths, pa.int64()),
        pa.array(hashes, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), config.num_perm),
    ]
    schema = signature_schema(config.num_perm, config.signature_params())
    atomic_write_table(pa.Table.from_arrays(columns, schema=schema), task.out)
    save_array(band_hashes(matrix, config.bands, config.rows), task.bands_out)
    if task.signatures_out is not None:
        save_array(matrix, task.signatures_out)
    return ShardResult(shard=file_name(task.shard), docs_in=len(matrix), docs_out=len(matrix))


@dataclass(frozen=True)
class WriteTask:
    shard: Source
    decisions: Source
    data_out: Source
    removed_out: Source


def write_shard(task: WriteTask) -> ShardResult:
    """Split one input shard into kept and removed documents, in input order."""
    table = read_table(task.shard, columns=DOCUMENT_COLUMNS)
    table = pa.Table.from_arrays(table.columns, schema=DOCUMENT_SCHEMA)
    decisions = read_table(task.decisions)
    rows = decisions.column("row").to_numpy()
    if len(rows) and rows[-1] >= table.num_rows:
        raise DataError(f"{task.shard}: fewer rows than its signatures (input changed)")
    if not table.column("id").take(pa.array(rows)).equals(decisions.column("id")):
        raise DataError(f"{task.shard}: ids differ from its signatures (input changed)")
    keep = np.ones(table.num_rows, bool)
    keep[rows] = False
    removed = table.take(pa.array(rows))
    removed = removed.append_column("reason", decisions.column("reason"))
    removed = removed.append_column("stage", pa.array([STAGE] * len(rows), pa.string()))
    for name in ("duplicate_of", "cluster_id"):
        removed = removed.append_column(name, decisions.column(name))
    atomic_write_table(table.filter(pa.array(keep)), task.data_out)
    atomic_write_table(removed.cast(REMOVED_SCHEMA), task.removed_out)
    reasons = decisions.column("reason").to_pylist()
    drops = {r: reasons.count(r) for r in sorted(set(reasons))}
    return ShardResult(file_name(task.shard), table.num_rows, int(keep.sum()), drops)
