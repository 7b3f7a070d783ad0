"""Per-document attributes: every filter's signals and verdict, and the final reason.

The filter stage writes `attributes/part-NNNNN.parquet` beside `data/` and `removed/`: one row
per input document, in input order, with `id`, a column `<filter>.<signal>` per signal (float,
or string for a label such as `language.label`; null where a signal is not measurable), a
column `<filter>.reason` per dropping filter (its own verdict, null when it passes), and
`reason`, the first failing filter's reason (null when kept). Every enabled filter measures
every document, even one an earlier filter removed, so a re-tuned threshold can change which
filter removes a document and the stored signals still answer correctly.

Each file's Parquet metadata records the signals config it was measured under and a hash of
the input it was measured from: re-tuning checks both before trusting the stored signals.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from pipeline.documents import Source, atomic_write_table, read_schema, read_table
from pipeline.errors import DataError
from pipeline.filters.base import Document, DocumentFilter, Signals
from pipeline.store.fs import as_folder

SIGNALS_CONFIG_KEY = b"llmforge.signals_config"
INPUT_KEY = b"llmforge.input_sha256"


def column(filter_name: str, key: str) -> str:
    return f"{filter_name}.{key}"


def attributes_schema(filters: list[DocumentFilter]) -> pa.Schema:
    fields = [pa.field("id", pa.string(), nullable=False)]
    for step in filters:
        for signal in step.signal_names:
            kind = pa.string() if signal in step.label_signals else pa.float64()
            fields.append(pa.field(column(step.name, signal), kind))
        if step.can_drop:
            fields.append(pa.field(column(step.name, "reason"), pa.string()))
    fields.append(pa.field("reason", pa.string()))
    return pa.schema(fields)


def attribute_row(
    doc_id: str,
    filters: list[DocumentFilter],
    signals: list[Signals],
    reasons: list[str | None],
    final: str | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": doc_id}
    for step, values, reason in zip(filters, signals, reasons, strict=True):
        for signal in step.signal_names:
            row[column(step.name, signal)] = values.get(signal)
        if step.can_drop:
            row[column(step.name, "reason")] = reason
    row["reason"] = final
    return row


def stored_signals(filters: list[DocumentFilter], row: dict[str, Any]) -> list[Signals]:
    """Each filter's signals as `signals()` returned them (nulls were missing keys)."""
    out = []
    for step in filters:
        values = {s: row[column(step.name, s)] for s in step.signal_names}
        out.append({s: v for s, v in values.items() if v is not None})
    return out


class InputHash:
    """A hash of what the filters read from each document, to catch stale attributes.

    Ids alone are not enough: a re-extraction keeps the URL-based ids but changes the text.
    """

    FIELDS = ("id", "url", "domain", "text", "language", "language_score")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, doc: Document) -> None:
        values = [doc.get(name) for name in self.FIELDS]
        self._hash.update(json.dumps(values, ensure_ascii=False).encode() + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def write_attributes(
    path: Source, schema: pa.Schema, rows: list[dict[str, Any]], config_json: str, input_hash: str
) -> None:
    metadata = {SIGNALS_CONFIG_KEY: config_json.encode(), INPUT_KEY: input_hash.encode()}
    table = pa.Table.from_pylist(rows, schema=schema.with_metadata(metadata))
    atomic_write_table(table, path)


def read_attributes(path: Source) -> tuple[list[dict[str, Any]], str]:
    """(rows, input hash) of a stored attributes shard."""
    table = read_table(path)
    metadata = table.schema.metadata or {}
    if INPUT_KEY not in metadata:
        raise DataError(f"{path}: not a filter attributes file (no {INPUT_KEY.decode()})")
    return table.to_pylist(), metadata[INPUT_KEY].decode()


def reuse_problem(folder: Source, shard_names: list[str], wanted: dict[str, Any]) -> str | None:
    """Why the attributes in `folder` cannot stand in for measuring, or None if they can."""
    folder = as_folder(folder)
    if not folder.is_dir():
        return f"{folder}: no attributes folder"
    for name in shard_names:
        path = folder.url_of(name)
        if not folder.is_file(name):
            return f"{path}: missing"
        try:
            metadata = read_schema(path).metadata or {}
        except DataError:
            return f"{path}: not a readable Parquet file"
        stored = json.loads(metadata.get(SIGNALS_CONFIG_KEY, b"null"))
        if stored != wanted:
            return f"{path}: measured under another signals config ({_diff(stored, wanted)})"
    return None


def _diff(stored: Any, wanted: dict[str, Any]) -> str:
    """The filters whose signal settings differ, for the fallback message."""
    if not isinstance(stored, dict) or stored.get("format") != wanted["format"]:
        return "attributes format"
    old, new = stored.get("filters", {}), wanted["filters"]
    names = [n for n in {**old, **new} if old.get(n) != new.get(n)]
    return "filters: " + ", ".join(names)
