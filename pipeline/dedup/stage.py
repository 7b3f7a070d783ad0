"""The dedup stage: exact then MinHash-LSH near-duplicate removal, in four phases.

1. `sign_shard` (per shard): exact hash and MinHash signature of every document, written to
   `out_dir/signatures/` (kept: later runs dedup against it) plus per-band hashes for phase 2;
   `incremental.index_shard` does the same for earlier versions' signatures (`against`).
2. `lsh.link_band` (per band x band_splits unit): a sort of the band hashes, edges between
   equal neighbours.
3. `find_duplicates` (one process): exact groups + edges -> clusters and survivors
   (`components.cluster_documents`), written as per-shard removal lists.
4. `write_shard` (per shard): kept documents to `data/`, the others to `removed/` with
   reason dedup_exact, dedup_near, dedup_exact_previous or dedup_near_previous, the id of the
   document kept in their place (`duplicate_of`) and their cluster.

Every per-shard/per-band unit is a module-level function of one small frozen dataclass of
paths and settings, so `pmap` may run it in another process or on a Dask worker. Scratch files
live in `out_dir/work/` and are deleted at the end.

    from pipeline.dedup import DedupConfig, run
    run(DedupConfig(), Path("filter/data"), Path("dedup"))
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup import incremental
from pipeline.dedup.components import cluster_documents, preference
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.lsh import BandTask, link_band
from pipeline.dedup.shards import DECISION_SCHEMA, SignTask, WriteTask, sign_shard, write_shard
from pipeline.dedup.signatures import written_params
from pipeline.documents import (
    DOCUMENT_SCHEMA,
    atomic_write_table,
    check_shard,
    list_shards,
    read_table,
)
from pipeline.stage import ParallelMap, StageResult, serial_map

SIGNATURES = incremental.SIGNATURES
WORK = "work"  # scratch folder inside out_dir: band hashes, edges, decisions; deleted after
REASONS = ["dedup_near", "dedup_exact", "dedup_near_previous", "dedup_exact_previous"]


def _read_signatures(paths: Sequence[Path], columns: list[str], params: dict) -> list[pa.Table]:
    tables = []
    for path in paths:
        table = read_table(path, columns=columns)
        incremental.check_params(path, written_params(table.schema), params)
        tables.append(table.replace_schema_metadata(None))
    return tables


def _concat(tables: list[pa.Table], column: str) -> pa.Array:
    chunks = [chunk for t in tables for chunk in t.column(column).chunks]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


def find_duplicates(
    config: DedupConfig,
    signature_files: Sequence[Path],
    decisions_dir: Path,
    edge_files: Sequence[Path] = (),
    earlier: Sequence[incremental.Earlier] = (),
) -> dict[str, Any]:
    """Phase 3: cluster all documents; write per shard the rows to remove. Returns counts."""
    params = config.signature_params()
    new = _read_signatures(signature_files, ["id", "length", "exact_hash"], params)
    old = [_read_signatures(v.signatures, ["id", "exact_hash"], params) for v in earlier]
    old_tables = [t for tables in old for t in tables]
    ids, old_ids = _concat(new, "id"), _concat(old_tables, "id")
    n = len(ids)
    hashes = pa.concat_arrays([_concat(new, "exact_hash"), _concat(old_tables, "exact_hash")])
    groups = pc.dictionary_encode(hashes).indices.to_numpy().astype(np.int64)
    edges = [np.load(path) for path in edge_files]
    edges = np.concatenate(edges, axis=1) if edges else np.empty((2, 0), np.int64)
    lengths = _concat(new, "length").to_numpy(zero_copy_only=False)
    clustering = cluster_documents(preference(ids, lengths), groups, edges, exact=config.exact)

    removed = clustering.removed
    target = clustering.duplicate_of[removed]
    previous = target >= n
    code = clustering.exact[removed].astype(np.int64) + 2 * previous
    version_sizes = [sum(t.num_rows for t in tables) for tables in old]
    version = np.searchsorted(np.cumsum(version_sizes), target[previous] - n, side="right")
    duplicate_of = np.empty(len(removed), object)
    duplicate_of[~previous] = ids.take(pa.array(target[~previous])).to_numpy(False)
    duplicate_of[previous] = old_ids.take(pa.array(target[previous] - n)).to_numpy(False)
    cluster = duplicate_of.copy()
    names = [v.name for v in earlier]
    cluster[previous] = [
        incremental.cluster_label(names[v], i)
        for v, i in zip(version.tolist(), duplicate_of[previous].tolist(), strict=True)
    ]
    offsets = np.cumsum([0] + [t.num_rows for t in new])
    bounds = np.searchsorted(removed, offsets)
    for s, path in enumerate(signature_files):
        part = slice(bounds[s], bounds[s + 1])
        table = pa.table(
            {
                "row": removed[part] - offsets[s],
                "id": ids.take(pa.array(removed[part])),
                "reason": [REASONS[c] for c in code[part]],
                "duplicate_of": duplicate_of[part].tolist(),
                "cluster_id": cluster[part].tolist(),
            },
            schema=DECISION_SCHEMA,
        )
        atomic_write_table(table, decisions_dir / path.name)
    return {
        "clusters": clustering.clusters,
        "largest_cluster": clustering.largest_cluster,
        "earlier_documents": len(old_ids),
    }


def run(
    config: DedupConfig, input_dir: Path, out_dir: Path, pmap: ParallelMap = serial_map
) -> StageResult:
    """Deduplicate the documents of `input_dir` into `out_dir` (data/, removed/, signatures/).

    `extra` reports clusters (of 2+ documents), largest_cluster, candidate_pairs,
    verified_away_pairs, earlier_documents, the derived threshold, the signatures folder
    (relative to out_dir) and seconds per phase. The cluster id of a removed document is its
    survivor's id (`previous:<version>:<id>` when it repeats an earlier version).
    """
    shards = list_shards(input_dir)
    for shard in shards:  # a wrong input fails in one line naming the file and the column
        check_shard(shard, DOCUMENT_SCHEMA)
    earlier = incremental.earlier_versions(config.against, config.signature_params())
    work = out_dir / WORK
    verify = config.near and config.verify_threshold is not None
    seconds: dict[str, float] = {}

    def timed(phase: str, fn, items, name: str) -> list:
        start = time.perf_counter()
        results = pmap(fn, items, name) if items else []
        seconds[phase] = round(time.perf_counter() - start, 3)
        return results

    signatures = [out_dir / SIGNATURES / s.name for s in shards]
    band_files = [work / "bands" / "new" / f"{s.stem}.npy" for s in shards]
    raw = [work / "signatures" / "new" / f"{s.stem}.npy" for s in shards]
    tasks = [
        SignTask(s, o, b, r if verify else None, config)
        for s, o, b, r in zip(shards, signatures, band_files, raw, strict=True)
    ]
    new_docs = sum(r.docs_in for r in timed("sign", sign_shard, tasks, "dedup-sign"))

    index_tasks = []
    for k, version in enumerate(earlier):
        for path in version.signatures:
            name = f"{k:03d}-{version.name}/{path.stem}.npy"
            band_files.append(work / "bands" / name)
            raw.append(work / "signatures" / name)
            task = incremental.IndexTask(path, band_files[-1], raw[-1] if verify else None, config)
            index_tasks.append(task)
    timed("index", incremental.index_shard, index_tasks, "dedup-index")

    units = [(b, s) for b in range(config.bands) for s in range(config.band_splits)]
    band_tasks = [
        BandTask(
            band=band,
            split=split,
            splits=config.band_splits,
            band_files=tuple(band_files),
            new_docs=new_docs,
            out=work / "edges" / f"band-{band:03d}-{split:03d}.npy",
            signature_files=tuple(raw) if verify else (),
            verify_threshold=config.verify_threshold,
        )
        for band, split in (units if config.near else [])
    ]
    lsh = timed("lsh", link_band, band_tasks, "dedup-lsh")

    start = time.perf_counter()
    decisions = work / "decisions"
    edge_files = [t.out for t in band_tasks]
    stats = find_duplicates(config, signatures, decisions, edge_files, earlier)
    seconds["cluster"] = round(time.perf_counter() - start, 3)

    tasks = [
        WriteTask(s, decisions / s.name, out_dir / "data" / s.name, out_dir / "removed" / s.name)
        for s in shards
    ]
    results = timed("write", write_shard, tasks, "dedup-write")
    shutil.rmtree(work)
    extra = {
        **stats,
        "candidate_pairs": sum(r.extra["candidate_pairs"] for r in lsh),
        "verified_away_pairs": sum(r.extra["verified_away_pairs"] for r in lsh),
        "threshold": round(config.threshold, 4),
        "signatures": SIGNATURES,
        "seconds": seconds,
    }
    return StageResult.from_shards(results, extra=extra)
