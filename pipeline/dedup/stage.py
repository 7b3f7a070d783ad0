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
files (local paths or URLs) and settings, so `pmap` may run it in another process or on a Dask
worker of another machine. Every file goes through `store.fs.Folder`: the input, `out_dir` and
the scratch files in `out_dir/work/` (deleted at the end) may all be on an object store.

    from pipeline.dedup import DedupConfig, run
    run(DedupConfig(), Path("filter/data"), Path("dedup"))  # or Folders / URLs
"""

from __future__ import annotations

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
from pipeline.dedup.lsh import BandTask, link_band, load_rows
from pipeline.dedup.shards import DECISION_SCHEMA, SignTask, WriteTask, sign_shard, write_shard
from pipeline.dedup.signatures import written_params
from pipeline.documents import (
    DOCUMENT_SCHEMA,
    Source,
    atomic_write_table,
    check_shard,
    file_name,
    read_table,
    shard_folder,
)
from pipeline.stage import ParallelMap, StageResult, serial_map
from pipeline.store.fs import as_folder

SIGNATURES = incremental.SIGNATURES
WORK = "work"  # scratch folder inside out_dir: band hashes, edges, decisions; deleted after
REASONS = ["dedup_near", "dedup_exact", "dedup_near_previous", "dedup_exact_previous"]


def _read_signatures(paths: Sequence[Source], columns: list[str], params: dict) -> list[pa.Table]:
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
    signature_files: Sequence[Source],
    decisions_dir: Source,
    edge_files: Sequence[Source] = (),
    earlier: Sequence[incremental.Earlier] = (),
) -> dict[str, Any]:
    """Phase 3: cluster all documents; write per shard the rows to remove. Returns counts.

    Runs on the driver, reading the signatures and edges the tasks wrote through their Folder."""
    params = config.signature_params()
    new = _read_signatures(signature_files, ["id", "length", "exact_hash"], params)
    old = [_read_signatures(v.signatures, ["id", "exact_hash"], params) for v in earlier]
    old_tables = [t for tables in old for t in tables]
    ids, old_ids = _concat(new, "id"), _concat(old_tables, "id")
    n = len(ids)
    hashes = pa.concat_arrays([_concat(new, "exact_hash"), _concat(old_tables, "exact_hash")])
    groups = pc.dictionary_encode(hashes).indices.to_numpy().astype(np.int64)
    edges = [np.asarray(load_rows(path)) for path in edge_files]
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
    decisions = as_folder(decisions_dir)
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
        atomic_write_table(table, decisions.url_of(file_name(path)))
    return {
        "clusters": clustering.clusters,
        "largest_cluster": clustering.largest_cluster,
        "earlier_documents": len(old_ids),
    }


def run(
    config: DedupConfig, input_dir: Source, out_dir: Source, pmap: ParallelMap = serial_map
) -> StageResult:
    """Deduplicate the documents of `input_dir` into `out_dir` (data/, removed/, signatures/).

    `extra` reports clusters (of 2+ documents), largest_cluster, candidate_pairs,
    verified_away_pairs, earlier_documents, the derived threshold, the signatures folder
    (relative to out_dir) and seconds per phase. The cluster id of a removed document is its
    survivor's id (`previous:<version>:<id>` when it repeats an earlier version).
    """
    folder, names = shard_folder(input_dir)
    shards = [folder.url_of(name) for name in names]
    for shard in shards:  # a wrong input fails in one line naming the file and the column
        check_shard(shard, DOCUMENT_SCHEMA)
    earlier = incremental.earlier_versions(config.against, config.signature_params())
    out = as_folder(out_dir)
    work = out / WORK
    verify = config.near and config.verify_threshold is not None
    seconds: dict[str, float] = {}

    def timed(phase: str, fn, items, name: str) -> list:
        start = time.perf_counter()
        results = pmap(fn, items, name) if items else []
        seconds[phase] = round(time.perf_counter() - start, 3)
        return results

    signatures = [out.url_of(f"{SIGNATURES}/{name}") for name in names]
    stems = [Path(name).stem for name in names]
    band_files = [work.url_of(f"bands/new/{stem}.npy") for stem in stems]
    raw = [work.url_of(f"signatures/new/{stem}.npy") for stem in stems]
    tasks = [
        SignTask(s, o, b, r if verify else None, config)
        for s, o, b, r in zip(shards, signatures, band_files, raw, strict=True)
    ]
    new_docs = sum(r.docs_in for r in timed("sign", sign_shard, tasks, "dedup-sign"))

    index_tasks = []
    for k, version in enumerate(earlier):
        for path in version.signatures:
            name = f"{k:03d}-{version.name}/{Path(file_name(path)).stem}.npy"
            band_files.append(work.url_of(f"bands/{name}"))
            raw.append(work.url_of(f"signatures/{name}"))
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
            out=work.url_of(f"edges/band-{band:03d}-{split:03d}.npy"),
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
        WriteTask(
            shard,
            decisions.url_of(name),
            out.url_of(f"data/{name}"),
            out.url_of(f"removed/{name}"),
        )
        for shard, name in zip(shards, names, strict=True)
    ]
    results = timed("write", write_shard, tasks, "dedup-write")
    out.remove(WORK)
    extra = {
        **stats,
        "candidate_pairs": sum(r.extra["candidate_pairs"] for r in lsh),
        "verified_away_pairs": sum(r.extra["verified_away_pairs"] for r in lsh),
        "threshold": round(config.threshold, 4),
        "signatures": SIGNATURES,
        "seconds": seconds,
    }
    return StageResult.from_shards(results, extra=extra)
