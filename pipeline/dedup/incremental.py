"""Incremental dedup: new documents against the signatures of earlier dataset versions.

`DedupConfig.against` lists earlier dedup version folders; each keeps `signatures/` (one row
per document that version saw, kept or removed). Their documents join this run's LSH and
exact groups as nodes numbered after the new ones, with three rules:

- earlier documents are never removed (they belong to a published version) and never linked
  to each other (their version already deduplicated them);
- a new document in a cluster with an earlier document is removed, with reason
  `dedup_exact_previous` (same normalized text as that earlier document) or
  `dedup_near_previous`; `duplicate_of` is the earlier document's id and `cluster_id` is
  `previous:<version folder name>:<that id>`;
- the rest is deduplicated among itself as usual.

So a weekly crawl does not re-admit last week's pages, changed pages (below the similarity
threshold) come back, and pages that were removed as duplicates last week still block their
copies. Signatures must have been made with the same parameters (checked, DataError if not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.lsh import band_hashes, save_array
from pipeline.dedup.signatures import hashvalues_matrix, written_params
from pipeline.documents import Source, file_name, list_shards, read_schema, read_table
from pipeline.errors import DataError
from pipeline.stage import ShardResult
from pipeline.store.fs import Folder

SIGNATURES = "signatures"  # folder of a dedup version that keeps its signatures
PREVIOUS = "previous"  # cluster_id prefix of documents removed against an earlier version


@dataclass(frozen=True)
class Earlier:
    """One earlier dedup version: its folder name (for cluster ids) and signature shards."""

    name: str
    signatures: tuple[Source, ...]  # local paths or URLs


def earlier_versions(against: list[str], params: dict[str, Any]) -> list[Earlier]:
    """Check every `against` folder (a local path or URL) up front: signatures present and made
    like ours."""
    versions = []
    for location in against:
        folder = Folder(location)
        if not folder.is_dir(SIGNATURES):
            raise DataError(
                f"{location}: dedup.against needs a dedup version folder with signatures/"
            )
        shards = tuple(list_shards(folder.url_of(SIGNATURES)))
        for shard in shards:
            check_params(shard, _read_params(shard), params)
        versions.append(Earlier(folder.name, shards))
    return versions


def _read_params(path: Source) -> dict[str, Any] | None:
    schema = read_schema(path)
    try:
        return written_params(schema)
    except ValueError as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def check_params(path: Source, found: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    if found != expected:
        raise DataError(f"{path}: signatures made with {found}, config needs {expected}")


def cluster_label(version: str, doc_id: str) -> str:
    return f"{PREVIOUS}:{version}:{doc_id}"


@dataclass(frozen=True)
class IndexTask:
    """Band hashes (and, to verify, raw signatures) of one earlier signature shard."""

    signatures: Source
    bands_out: Source
    signatures_out: Source | None
    config: DedupConfig


def index_shard(task: IndexTask) -> ShardResult:
    """Write the LSH inputs of one earlier shard, as `sign_shard` does for new ones."""
    config = task.config
    table = read_table(task.signatures, columns=["hashvalues"])
    check_params(task.signatures, written_params(table.schema), config.signature_params())
    matrix = hashvalues_matrix(table.column("hashvalues"), config.num_perm)
    save_array(band_hashes(matrix, config.bands, config.rows), task.bands_out)
    if task.signatures_out is not None:
        save_array(matrix, task.signatures_out)
    return ShardResult(shard=file_name(task.signatures), docs_in=len(matrix), docs_out=len(matrix))
