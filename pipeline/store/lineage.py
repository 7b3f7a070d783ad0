"""Lineage of a run: the chain from its model (or last dataset) back to the seeds or WARC files.

    print(format_lineage(lineage(Storage.at("storage"), "20261122-001500-3fa2c1")))

The chain follows each version's manifest "inputs", not the usual stage order, so runs that
stop early (run.until = "tokenize") and runs that start from existing WARC files come out right.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import DataError
from pipeline.stage import scalar_extras
from pipeline.stages import names
from pipeline.store.runs import RunRecord
from pipeline.store.versions import MANIFEST, Storage, canonical_json


def _rank(stage: str) -> int:
    """Position in pipeline order (crawl ... evaluate); unknown stages last."""
    order = names()
    return order.index(stage) if stage in order else len(order)


def _head(record: RunRecord) -> dict[str, Any]:
    """The run's most downstream version: where its lineage starts."""
    versions = list((record.data.get("versions") or {}).values())
    if not versions:
        status = record.data.get("status", "unknown")
        raise DataError(f"run '{record.run_id}' recorded no versions (status: {status})")
    return max(versions, key=lambda v: _rank(str(v["stage"])))


def _entry(
    storage: Storage, record: RunRecord | None, stage: str, version_id: str
) -> dict[str, Any]:
    folder = storage.version_folder(stage, version_id)
    recorded = ((record.data.get("versions") if record else None) or {}).get(stage) or {}
    entry: dict[str, Any] = {
        "stage": stage,
        "version_id": version_id,
        "path": folder.url,
        "missing": not storage.has_version(stage, version_id),
        "config": None,
        "counts": recorded.get("counts", {}) if recorded.get("version_id") == version_id else {},
        "inputs": [],
    }
    if entry["missing"]:
        return entry  # deleted (gc) or never committed: only the run record's counts are left
    manifest = folder.read_json(MANIFEST)
    entry.update(
        config=manifest.get("config"),
        counts=manifest.get("counts", {}),
        inputs=manifest.get("inputs") or [],
        created_at=manifest.get("created_at"),
        code_version=manifest.get("code_version"),
    )
    extra = entry["counts"].get("extra") or {}
    if any(i.get("source") == "seeds" for i in entry["inputs"]):  # a crawl
        entry["seeds"] = (entry["config"] or {}).get("seeds") or extra.get("seeds") or []
        entry["warc_files"] = extra.get("warc_files") or []
    sources = [dict(i) for i in entry["inputs"] if "source" in i]
    for source in sources:
        if source.get("source") == "files":
            # The fingerprint is of the files' contents; their names are in the run's config.
            config = (record.data.get("config") if record else None) or {}
            source["warc_paths"] = config.get("source", {}).get("warc_paths", [])
    entry["sources"] = sources
    return entry


def lineage(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    """Every version behind run `run_id`'s last stage, downstream first (evaluate ... crawl).

    Each entry has stage, version_id, path, missing, config, counts, inputs and sources
    (external inputs: seeds snapshot, user WARC files with their fingerprint and paths); a
    crawl also has its seeds and WARC files.
    """
    record = RunRecord.load(storage, run_id)
    head = _head(record)
    return version_lineage(storage, str(head["stage"]), str(head["version_id"]), record)


def version_lineage(
    storage: Storage, stage: str, version_id: str, record: RunRecord | None = None
) -> list[dict[str, Any]]:
    """The chain behind one version, downstream first, as `lineage` gives it; `record` (the
    run that made it, if known) supplies counts of deleted versions and WARC paths."""
    todo = [(stage, version_id)]
    chain: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    while todo:
        ref = todo.pop(0)
        if ref in seen:
            continue
        seen.add(ref)
        entry = _entry(storage, record, *ref)
        chain.append(entry)
        todo += [(str(i["stage"]), str(i["version_id"])) for i in entry["inputs"] if "stage" in i]
    # Breadth-first order already runs downstream to upstream; the sort fixes diamonds
    # (evaluate reads train and tokenize) so each stage appears once, in chain order.
    return sorted(chain, key=lambda e: -_rank(e["stage"]))


def _counts_line(counts: dict[str, Any]) -> str:
    """Documents in -> out with the drops, then the stage's own numbers; the model stages read
    no documents, so they show only their numbers (steps, val loss, ...)."""
    parts = []
    drops = counts.get("drops") or {}
    if counts.get("docs_in") or counts.get("docs_out") or drops:
        docs = f"docs {counts.get('docs_in', '-')} -> {counts.get('docs_out', '-')}"
        if drops:
            docs += " (dropped: " + ", ".join(f"{k} {v}" for k, v in drops.items()) + ")"
        parts.append(docs)
    scalars = scalar_extras(counts)
    if scalars:
        parts.append(", ".join(f"{k}={v}" for k, v in scalars.items()))
    return "; ".join(parts) or "-"


def format_lineage(chain: list[dict[str, Any]]) -> str:
    """The chain as text, one block per version, each pointing (<-) to what it was built from."""
    lines: list[str] = []
    for i, entry in enumerate(chain):
        arrow = "" if i == 0 else "<- "
        state = "  (missing: deleted or never committed)" if entry.get("missing") else ""
        lines.append(f"{arrow}{entry['stage']} {entry['version_id']}{state}")
        if entry.get("config") is not None:
            lines.append(f"     config  {canonical_json(entry['config'])}")
        if entry.get("counts"):
            lines.append(f"     counts  {_counts_line(entry['counts'])}")
        if entry.get("seeds"):
            lines.append(f"     seeds   {', '.join(entry['seeds'])}")
        if entry.get("warc_files"):
            lines.append(f"     warc    {', '.join(entry['warc_files'])}")
        for source in entry.get("sources") or []:
            if source.get("source") == "files":
                paths = ", ".join(source.get("warc_paths") or []) or "(paths not recorded)"
                lines.append(f"<- WARC files {paths} (fingerprint {source.get('fingerprint')})")
            else:
                lines.append(f"<- source {canonical_json(source)}")
    return "\n".join(lines)
