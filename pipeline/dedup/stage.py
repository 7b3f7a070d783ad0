"""The dedup stage: exact then MinHash-LSH near-duplicate removal, in three phases.

1. `sign_shard` (per shard, parallel): exact hash and MinHash signature of every document,
   written to `out_dir/signatures/` and kept there for later incremental runs.
2. `find_duplicates` (global, one process): clusters and survivors from all signatures
   (`clusters.cluster_documents`), written as per-shard decisions.
3. `write_shard` (per shard, parallel): kept documents to `data/`, the others to `removed/`
   with reason `dedup_exact` or `dedup_near` and the survivor's id.

    from pipeline.dedup import DedupConfig, run
    run(DedupConfig(), Path("filter/data"), Path("dedup"))
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.dedup.clusters import cluster_documents
from pipeline.dedup.exact import NORMALIZATION, exact_hash, normalize_text
from pipeline.dedup.minhash import (
    SCHEME,
    Signer,
    hashvalues_matrix,
    lsh_threshold,
    signature_schema,
    word_shingles,
    written_params,
)
from pipeline.documents import (
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    DataError,
    ShardWriter,
    atomic_write_table,
    iter_batches,
    iter_documents,
    list_shards,
    read_table,
    removed_row,
)
from pipeline.stage import ParallelMap, ShardResult, StageResult, serial_map

STAGE = "dedup"
SIGNATURES = "signatures"  # folder inside the stage output; kept for incremental dedup
DECISIONS = "decisions"  # per-shard removal lists between phases 2 and 3; deleted after
DECISION_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("id", pa.string()),
        ("reason", pa.string()),
        ("duplicate_of", pa.string()),
    ]
)


class DedupConfig(BaseModel):
    """Exact and near-duplicate removal.

    The LSH is set by `bands` x `rows` rather than a threshold: they are what FineWeb publishes
    and what decides the S-curve, while datasketch's threshold-to-params optimizer gives other
    values (12 x 9 for 0.72 at 112 permutations). `threshold` is derived from them.
    """

    model_config = ConfigDict(extra="forbid")

    exact: bool = True  # drop documents whose normalized text repeats (exact.normalize_text)
    near: bool = True  # drop near duplicates found by MinHash-LSH
    ngram: int = Field(5, ge=1)  # word 5-grams: FineWeb (datatrove MinhashConfig n_grams=5)
    # FineWeb: 112 hashes = 14 buckets x 8 hashes. P(candidate) = 1 - (1 - s^8)^14 is 5% at
    # Jaccard 0.5, 56% at 0.7, 92% at 0.8, 98.8% at 0.85, 99.96% at 0.9; threshold ~0.72.
    num_perm: int = Field(112, ge=2)  # may exceed bands*rows: spare values sharpen verification
    bands: int = Field(14, ge=2)
    rows: int = Field(8, ge=1)
    seed: int = 1  # permutation seed; signatures made with another seed are not comparable
    # Optional: keep an LSH pair only if its signatures agree on >= this fraction of positions
    # (estimated Jaccard), dropping bucket collisions of dissimilar texts. None: no check, as
    # FineWeb/datatrove do.
    verify_threshold: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _bands_fit(self) -> DedupConfig:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands*rows = {self.bands}*{self.rows} exceeds num_perm = {self.num_perm}"
            )
        return self

    @property
    def threshold(self) -> float:
        """Jaccard similarity at the S-curve's steepest point, (1/bands)^(1/rows)."""
        return lsh_threshold(self.bands, self.rows)

    def signature_params(self) -> dict[str, Any]:
        """Everything that must match for two signatures to be comparable."""
        return {
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "scheme": SCHEME,
            "normalization": NORMALIZATION,
        }


@dataclass(frozen=True)
class SignTask:
    shard: Path
    out: Path
    config: DedupConfig


def sign_shard(task: SignTask) -> ShardResult:
    """Phase 1: one signature row per document of `task.shard`, in row order."""
    config = task.config
    signer = Signer(config.num_perm, config.seed)
    ids: list[str] = []
    lengths: list[int] = []
    hashes: list[str] = []
    signatures: list[np.ndarray] = []
    for batch in iter_batches(task.shard, columns=["id", "text"]):
        for doc in batch.to_pylist():
            text = doc["text"] or ""
            normalized = normalize_text(text)
            ids.append(doc["id"])
            lengths.append(len(text))
            hashes.append(exact_hash(normalized))
            signatures.append(signer.sign(word_shingles(normalized, config.ngram)))
    flat = np.concatenate(signatures) if signatures else np.empty(0, dtype=np.uint32)
    schema = signature_schema(config.num_perm, config.signature_params())
    columns = [
        pa.array(ids, pa.string()),
        pa.array(lengths, pa.int64()),
        pa.array(hashes, pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.uint32()), config.num_perm),
    ]
    atomic_write_table(pa.Table.from_arrays(columns, schema=schema), task.out)
    return ShardResult(shard=task.shard.name, docs_in=len(ids), docs_out=len(ids))


def find_duplicates(
    config: DedupConfig, signature_files: list[Path], decisions_dir: Path
) -> dict[str, Any]:
    """Phase 2: cluster all documents; write per shard the rows to remove. Returns counts."""
    expected = config.signature_params()
    ids: list[str] = []
    lengths: list[int] = []
    hashes: list[str] = []
    matrices: list[np.ndarray] = []
    where: list[tuple[int, int]] = []  # (shard index, row) of each document
    columns = ["id", "length", "exact_hash"] + (["hashvalues"] if config.near else [])
    for s, path in enumerate(signature_files):
        table = read_table(path, columns=columns)
        found = written_params(table.schema)
        if found != expected:
            raise DataError(f"{path}: signatures made with {found}, config needs {expected}")
        ids += table.column("id").to_pylist()
        lengths += table.column("length").to_pylist()
        hashes += table.column("exact_hash").to_pylist()
        if config.near:
            matrices.append(hashvalues_matrix(table.column("hashvalues"), config.num_perm))
        where += [(s, row) for row in range(table.num_rows)]

    hashvalues = None
    if config.near:
        hashvalues = np.concatenate(matrices) if matrices else np.empty((0, config.num_perm))
    clustering = cluster_documents(
        ids,
        lengths,
        hashes,
        hashvalues,
        exact=config.exact,
        bands=config.bands,
        rows=config.rows,
        seed=config.seed,
        verify_threshold=config.verify_threshold,
    )

    removed: list[list[dict[str, Any]]] = [[] for _ in signature_files]
    for i, s in enumerate(clustering.survivor.tolist()):
        if s != i:
            shard, row = where[i]
            reason = "dedup_exact" if clustering.exact[i] else "dedup_near"
            removed[shard].append(
                {"row": row, "id": ids[i], "reason": reason, "duplicate_of": ids[s]}
            )
    for path, rows in zip(signature_files, removed, strict=True):
        table = pa.Table.from_pylist(rows, schema=DECISION_SCHEMA)
        atomic_write_table(table, decisions_dir / path.name)
    return {
        "clusters": clustering.clusters,
        "largest_cluster": clustering.largest_cluster,
        "candidate_pairs": clustering.candidate_pairs,
        "verified_away_pairs": clustering.verified_away_pairs,
    }


@dataclass(frozen=True)
class WriteTask:
    shard: Path
    decisions: Path
    data_out: Path
    removed_out: Path


def write_shard(task: WriteTask) -> ShardResult:
    """Phase 3: split one input shard into kept and removed documents, in input order."""
    decisions = {d["row"]: d for d in read_table(task.decisions).to_pylist()}
    drops: Counter[str] = Counter()
    docs_in = 0
    with (
        ShardWriter(task.data_out, DOCUMENT_SCHEMA) as kept,
        ShardWriter(task.removed_out, REMOVED_SCHEMA) as removed,
    ):
        for row, doc in enumerate(iter_documents(task.shard)):
            docs_in += 1
            decision = decisions.get(row)
            if decision is None:
                kept.write(doc)
                continue
            if decision["id"] != doc["id"]:
                raise DataError(
                    f"{task.shard}: row {row} is {doc['id']}, signatures say {decision['id']}"
                    " (input changed during dedup)"
                )
            survivor = decision["duplicate_of"]
            removed.write(removed_row(doc, decision["reason"], STAGE, survivor, survivor))
            drops[decision["reason"]] += 1
    if docs_in < len(decisions):
        raise DataError(f"{task.shard}: {docs_in} rows, fewer than its signatures (input changed)")
    return ShardResult(task.shard.name, docs_in, kept.rows, dict(sorted(drops.items())))


def run(
    config: DedupConfig, input_dir: Path, out_dir: Path, pmap: ParallelMap = serial_map
) -> StageResult:
    """Deduplicate the documents of `input_dir` into `out_dir` (data/, removed/, signatures/).

    `extra` reports clusters (of 2+ documents), largest_cluster, candidate_pairs,
    verified_away_pairs, the derived threshold, the signatures folder (relative to out_dir)
    and seconds per phase. The cluster id of a removed document is its survivor's id.
    """
    shards = list_shards(input_dir)
    signatures = [out_dir / SIGNATURES / shard.name for shard in shards]
    decisions = out_dir / DECISIONS
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    sign_tasks = [SignTask(s, out, config) for s, out in zip(shards, signatures, strict=True)]
    pmap(sign_shard, sign_tasks, "dedup-sign")
    seconds["sign"] = time.perf_counter() - start

    start = time.perf_counter()
    stats = find_duplicates(config, signatures, decisions)
    seconds["cluster"] = time.perf_counter() - start

    start = time.perf_counter()
    tasks = [
        WriteTask(s, decisions / s.name, out_dir / "data" / s.name, out_dir / "removed" / s.name)
        for s in shards
    ]
    results = pmap(write_shard, tasks, "dedup-write")
    seconds["write"] = time.perf_counter() - start
    shutil.rmtree(decisions)

    extra = {
        **stats,
        "threshold": round(config.threshold, 4),
        "signatures": SIGNATURES,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    return StageResult.from_shards(results, extra=extra)
