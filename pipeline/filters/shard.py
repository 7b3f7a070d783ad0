"""One shard through the filters: measure (or read stored signals), decide, write.

Per input document: every enabled filter rewrites (`transform`) and measures it, each filter
decides from its own signals, and the first failing filter's reason removes it. Kept documents
are written with every filter's rewrite and `finish` (C4's cleaned lines, PII redaction);
removed ones as they came in. Re-tuning (`attributes_from`) reads the signals instead of
measuring and rewrites only the kept documents, so its outputs equal a full run's.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from pipeline.documents import (
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    ShardWriter,
    Source,
    file_name,
    iter_documents,
    removed_row,
)
from pipeline.errors import DataError
from pipeline.filters.attributes import (
    InputHash,
    attribute_row,
    attributes_schema,
    read_attributes,
    stored_signals,
    write_attributes,
)
from pipeline.filters.base import Document, DocumentFilter, Signals
from pipeline.filters.config import FilterConfig, build_filters, signals_config
from pipeline.stage import ShardResult
from pipeline.store.fs import as_folder

STAGE = "filter"


def measure(filters: list[DocumentFilter], doc: Document) -> tuple[Document, list[Signals]]:
    """Every filter's rewrite and signals: (the rewritten document, signals per filter)."""
    signals = []
    for step in filters:
        doc = step.transform(doc)
        signals.append(step.signals(doc))
    return doc, signals


def rewrite(filters: list[DocumentFilter], doc: Document) -> Document:
    """Every filter's rewrite, without measuring: what `measure` returns as its document."""
    for step in filters:
        doc = step.transform(doc)
    return doc


def filter_document(filters: list[DocumentFilter], doc: Document) -> tuple[Document, str | None]:
    """Run one document through `filters`, stopping at the first failure: (the document as
    rewritten so far, the failing reason or None). For quick checks; the stage measures all."""
    for step in filters:
        doc = step.transform(doc)
        reason = step.decide(step.signals(doc))
        if reason is not None:
            return doc, reason
    return doc, None


@dataclass(frozen=True)
class FilterTask:
    """One shard's work; small and picklable so any ParallelMap can ship it. Files and folders
    are local paths or URLs (Folders pickle as theirs): a worker needs no driver disk."""

    input: Source  # the input shard
    out: Source  # folder that gets data/, removed/ and attributes/ shards named like the input
    config: FilterConfig
    attributes_from: Source | None = None  # stored attributes of this shard: re-decide only


class StoredSignals:
    """One shard's stored attributes, checked against the input documents as they are read."""

    def __init__(self, path: Source):
        self.path = path
        self.rows, self.input_hash = read_attributes(path)

    def signals(self, filters: list[DocumentFilter], index: int, doc: Document) -> list[Signals]:
        if index >= len(self.rows) or self.rows[index]["id"] != doc["id"]:
            raise DataError(f"{self.path}: row {index} is not document {doc['id']}")
        return stored_signals(filters, self.rows[index])

    def check(self, rows: int, input_hash: str, input_path: Source) -> None:
        if rows != len(self.rows) or input_hash != self.input_hash:
            raise DataError(f"{self.path}: measured from other input than {input_path}")


def filter_shard(task: FilterTask) -> ShardResult:
    filters = build_filters(task.config)
    name, dest = file_name(task.input), as_folder(task.out)
    stored = StoredSignals(task.attributes_from) if task.attributes_from else None
    drops: Counter[str] = Counter()
    # C4 rewrites kept documents and PII redacts them: the counts show how much that changed.
    counts = Counter({"chars_in": 0, "chars_out": 0})
    counts.update({f"{f.name}_{s}": 0 for f in filters for s in f.counted})
    rows = []
    input_hash = InputHash()
    with (
        ShardWriter(dest.url_of(f"data/{name}"), DOCUMENT_SCHEMA) as kept,
        ShardWriter(dest.url_of(f"removed/{name}"), REMOVED_SCHEMA) as removed,
    ):
        for i, doc in enumerate(iter_documents(task.input)):
            input_hash.update(doc)
            if stored is not None:
                rewritten, signals = None, stored.signals(filters, i, doc)
            else:
                rewritten, signals = measure(filters, doc)
            reasons = [step.decide(s) for step, s in zip(filters, signals, strict=True)]
            final = next((r for r in reasons if r is not None), None)
            rows.append(attribute_row(doc["id"], filters, signals, reasons, final))
            counts["chars_in"] += len(doc.get("text") or "")
            if final is not None:
                removed.write(removed_row(doc, final, STAGE))
                drops[final] += 1
                continue
            out = rewritten if rewritten is not None else rewrite(filters, doc)
            for step, values in zip(filters, signals, strict=True):
                out = step.finish(out)
                counts.update({f"{step.name}_{s}": int(values.get(s, 0)) for s in step.counted})
            kept.write(out)
            counts["chars_out"] += len(out.get("text") or "")
        if stored is not None:  # before the writers close: nothing is written on a mismatch
            stored.check(len(rows), input_hash.hexdigest(), task.input)
        config_json = json.dumps(signals_config(task.config), sort_keys=True)
        path = dest.url_of(f"attributes/{name}")
        write_attributes(
            path, attributes_schema(filters), rows, config_json, input_hash.hexdigest()
        )
    return ShardResult(name, len(rows), kept.rows, dict(sorted(drops.items())), dict(counts))
