"""Documents from anywhere: Parquet or JSON Lines from other tools into document shards.

FineWeb Parquet, Dolma JSONL.gz, RedPajama JSONL, `datasets.Dataset.to_parquet` output or a
plain `{"text": ...}` per line: anything with a text column becomes `part-NNNNN.parquet`
shards with DOCUMENT_SCHEMA, so the filter, dedup and tokenize stages read it as they read
extracted pages. Per document:

- required: the text (`text_column`, "text" by default), a string; a null text is removed with
  reason `source_no_text`, never dropped silently;
- used when present (under their own name, or the one `columns` maps them to): id, url,
  domain, title, language, language_score, fetched_at, source_warc, source_offset;
- derived when absent: `id` = doc_id(url) like crawled pages, else the same hash of the text;
  `domain` = the url's host; `language`/`language_score` with the project's py3langid model
  (`detect_language`, on for the pipeline source);
- coerced when harmless: integer ids to strings, ISO 8601 strings to timestamps (UTC),
  float64 and integer scores to float32; anything else of the wrong type fails;
- carried through: every other column, as one JSON object in `meta` (an input `meta` object,
  as RedPajama has, is its base), which every later stage keeps untouched.

A missing text column, a wrong type or an unreadable file fails with one line naming the file
(and line) and the column. Files are read as streams (Parquet batch by batch, JSONL line by
line through gzip or zstd) and written in shards of about `shard_bytes` of text.
Input files and the output folder may be URLs: every read and write goes through
`store.fs.Folder`, and a task carries file locations and its output Folder only, so it runs on
any worker that reaches them.

    from pipeline.extract.sources import DocumentsConfig, ingest, list_source_files
    files = list_source_files(["fineweb/*.parquet"])
    ingest(DocumentsConfig(), files, Path("documents/"))  # documents/data/part-00000.parquet
"""

from __future__ import annotations

import base64
import contextlib
import glob
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from pipeline.documents import (
    DOCUMENT_COLUMNS,
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    ShardWriter,
    describe_type,
    doc_id,
    first_line,
    removed_row,
    shard_name,
)
from pipeline.errors import DataError
from pipeline.stage import ParallelMap, ShardResult, StageResult, serial_map
from pipeline.store.fs import Folder, as_folder, is_url, locate

STAGE = "source"
PARQUET = (".parquet",)
JSONL = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".jsonl.zstd")
SUFFIXES = PARQUET + JSONL
# Document fields read from a same-named input column (or the one `columns` names).
FIELDS = [name for name in DOCUMENT_COLUMNS if name not in ("text", "meta")]


class DocumentsConfig(BaseModel):
    """How to read documents from other tools (the `source` section, kind = "documents")."""

    model_config = ConfigDict(extra="forbid")

    # Files, folders (searched recursively for *.parquet, *.jsonl[.gz|.zst], *.json[.gz]) or
    # globs ("data/*/000_0000*.parquet").
    paths: list[str] = []
    text_column: str = "text"
    # Other document fields under another input name, e.g. {fetched_at = "date"} for FineWeb.
    columns: dict[str, str] = {}
    # Fill a missing language/language_score with py3langid, as extract does for crawled pages.
    # Off, the filter stage's language filter identifies them itself (and the data keeps nulls).
    detect_language: bool = True
    # Identify from the first N characters, as extract does (ExtractConfig.langid_max_chars:
    # 1000 characters held the FineWeb en >= 0.65 decision on 985 of 988 pages, bench/extract.py).
    langid_max_chars: int | None = Field(1000, gt=0)
    # Text bytes per output shard (~64 MiB: a few hundred MB in the filter's memory at most).
    shard_bytes: int = Field(64 << 20, ge=1)


def reading_config(source: BaseModel | None) -> DocumentsConfig:
    """The DocumentsConfig part of a `source` section (None: the defaults)."""
    if source is None:
        return DocumentsConfig()
    return DocumentsConfig.model_validate(
        source.model_dump(include=set(DocumentsConfig.model_fields))
    )


@dataclass(frozen=True)
class SourceFiles:
    """External document files and how to read them: what a stage reads instead of a folder
    of document shards (`pipeline/stages.py` converts them first)."""

    files: tuple[Path | str, ...]  # local paths or URLs
    config: DocumentsConfig


def _kind(path: Path | str) -> str | None:
    name = str(path).rsplit("/", 1)[-1].lower()
    if name.endswith(PARQUET):
        return "parquet"
    if name.endswith(JSONL):
        return "jsonl"
    return None


def _visible(name: str) -> bool:
    """Skip hidden and marker files (`.crc`, `_SUCCESS`) and our own side folders."""
    side = {"removed", "attributes", "signatures"}  # a llmforge version's other folders
    return not any(p.startswith((".", "_")) or p in side for p in name.split("/"))


def list_source_files(paths: list[str] | tuple[str, ...]) -> list[Path | str]:
    """The document files `paths` name (files, folders, globs; local or URLs), each folder's
    sorted: local files as `Path`s, remote ones as URLs."""
    files: list[Path | str] = []
    for entry in paths:
        if glob.has_magic(entry):
            files += _matching(entry)
            continue
        folder = Folder(entry)
        if not folder.exists():
            raise DataError(f"{_shown(entry)}: no such file or directory")
        if folder.is_file():
            if _kind(entry) is None:
                raise DataError(
                    f"{_shown(entry)}: not a Parquet or JSON Lines file ({', '.join(SUFFIXES)})"
                )
            files.append(_shown(entry))
            continue
        if folder.is_dir("data") and folder.exists("manifest.json"):
            folder, entry = folder / "data", f"{entry.rstrip('/')}/data"  # a llmforge version
        found = [name for name in folder.list() if _kind(name) and _visible(name)]
        if not found:
            raise DataError(f"{_shown(entry)}: no Parquet or JSON Lines files in this folder")
        if is_url(entry):
            files += [folder.url_of(name) for name in found]
        else:
            files += sorted(Path(entry) / name for name in found)
    return list(dict.fromkeys(files))  # a file named twice is read once


def _shown(entry: str) -> Path | str:
    """A local path as a Path (as the user wrote it), a URL as it is."""
    return entry if is_url(entry) else Path(entry)


def _matching(pattern: str) -> list[Path | str]:
    """The document files a glob matches (`**` for any depth)."""
    if is_url(pattern):
        parts = pattern.split("/")
        base = "/".join(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])
        folder = Folder(base)
        rest = pattern[len(base) + 1 :]
        matched: list[Path | str] = [folder.url_of(name) for name in folder.list(rest)]
    else:
        matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    if not matched:
        raise DataError(f"{pattern}: no files match this pattern")
    kept = [p for p in matched if _kind(p) and (isinstance(p, str) or p.is_file())]
    if not kept:
        raise DataError(f"{pattern}: no Parquet or JSON Lines files match this pattern")
    return kept


# --- reading -------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_text(path: Path | str) -> Iterator[IO[str]]:
    """A JSON Lines file (local or URL) as text, gzip or zstd undone as it streams."""
    folder, name = locate(path)
    with contextlib.ExitStack() as stack:
        raw: Any = stack.enter_context(folder.open(name, "rb"))
        if name.lower().endswith(".gz"):
            raw = stack.enter_context(gzip.GzipFile(fileobj=raw))
        elif name.lower().endswith((".zst", ".zstd")):
            # pyarrow's zstd codec: no extra dependency, and it streams.
            raw = stack.enter_context(pa.input_stream(raw, compression="zstd"))
        yield stack.enter_context(io.TextIOWrapper(raw, encoding="utf-8"))


def iter_jsonl(path: Path | str, batch_size: int = 1024) -> Iterator[list[tuple[str, dict]]]:
    """Batches of (where, record) from a JSON Lines file, one line at a time."""
    batch: list[tuple[str, dict]] = []
    lineno = 0
    try:
        with _open_text(path) as lines:
            for lineno, line in enumerate(lines, 1):  # noqa: B007 (lineno used in errors)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno}: not a JSON object")
                batch.append((f"{path}:{lineno}", record))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
    except (OSError, EOFError, UnicodeDecodeError, pa.ArrowException) as exc:
        where = f"{path}:{lineno + 1}" if lineno else str(path)
        raise DataError(f"{where}: not a readable JSON Lines file ({first_line(exc)})") from None
    if batch:
        yield batch


# Arrow types each document field accepts from a Parquet file (coerced where not a string).
def _accepts(name: str, dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_null(dtype):
        return True
    if name == "language_score":
        return pa.types.is_floating(dtype) or pa.types.is_integer(dtype)
    if name == "source_offset":
        return pa.types.is_integer(dtype)
    if name == "fetched_at":
        return pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or _is_string(dtype)
    if name == "id":
        return _is_string(dtype) or pa.types.is_integer(dtype)
    return _is_string(dtype)


def _is_string(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


EXPECTED = {
    "language_score": "a number",
    "source_offset": "an integer",
    "fetched_at": "a timestamp or an ISO 8601 string",
    "id": "a string or an integer",
}


class Columns:
    """Which input column feeds each document field, checked against a file's columns."""

    def __init__(self, config: DocumentsConfig):
        unknown = set(config.columns) - set(FIELDS)
        if unknown:
            raise DataError(
                f"config error: source.columns: unknown document field '{sorted(unknown)[0]}'"
                f" (fields: {', '.join(FIELDS)})"
            )
        self.text = config.text_column
        self.fields = {name: config.columns.get(name, name) for name in FIELDS}
        self.used = {self.text, *self.fields.values()}

    def missing_text(self, path: Path | str, have: list[str]) -> DataError:
        shown = ", ".join(have[:12]) + (", ..." if len(have) > 12 else "")
        hint = "" if self.text != "text" else "; set source.text_column to the one with the text"
        return DataError(f"{path}: no column '{self.text}' (columns: {shown}{hint})")

    def check_parquet(self, path: Path, schema: pa.Schema) -> None:
        """Every used column must have a type we can read the field from: one line if not."""
        if self.text not in schema.names:
            raise self.missing_text(path, schema.names)
        dtype = schema.field(self.text).type
        if not (_accepts("text", dtype)):
            raise DataError(
                f"{path}: column '{self.text}' is {describe_type(dtype)}, expected string"
            )
        for name, column in self.fields.items():
            if column in schema.names and not _accepts(name, schema.field(column).type):
                got = describe_type(schema.field(column).type)
                want = EXPECTED.get(name, "a string")
                raise DataError(f"{path}: column '{column}' is {got}, expected {want}")


def _json_default(value: Any) -> Any:
    """JSON for the values Arrow hands back that json cannot write as they are."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _parse_time(value: Any, where: str, column: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataError(
                f"{where}: column '{column}': {value[:40]!r} is not an ISO 8601 time"
            ) from None
    else:
        raise DataError(
            f"{where}: column '{column}' is {_type_name(value)}, expected {EXPECTED['fetched_at']}"
        )
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # naive times are taken as UTC, as WARC dates are
    return parsed


class Normalizer:
    """One input record (a dict) into one document row of DOCUMENT_SCHEMA."""

    def __init__(self, config: DocumentsConfig):
        self.columns = Columns(config)

    def __call__(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        cols = self.columns
        if cols.text not in record:
            raise cols.missing_text(where, list(record))
        text = record[cols.text]
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"{where}: column '{cols.text}' is {_type_name(text)}, expected a string"
            )
        doc: dict[str, Any] = {"text": text}
        for name, column in cols.fields.items():
            doc[name] = self._field(name, record.get(column), where, column)
        if doc["domain"] is None and doc["url"]:
            doc["domain"] = urlsplit(doc["url"]).hostname or None
        if doc["id"] is None:
            doc["id"] = doc_id(doc["url"] or text or "")
        doc["meta"] = self._meta(record, where)
        return doc

    def _field(self, name: str, value: Any, where: str, column: str) -> Any:
        if value is None:
            return None
        if name == "fetched_at":
            return _parse_time(value, where, column)
        if name == "language_score":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif name == "source_offset":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif name == "id":
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, str)
        if not ok:
            want = EXPECTED.get(name, "a string")
            raise DataError(f"{where}: column '{column}' is {_type_name(value)}, expected {want}")
        return float(value) if name == "language_score" else value

    def _meta(self, record: dict[str, Any], where: str) -> str | None:
        base = record.get("meta") if self.columns.text != "meta" else None
        if isinstance(base, str):
            with contextlib.suppress(json.JSONDecodeError):  # else carried as "meta": str
                base = json.loads(base)
        meta = dict(base) if isinstance(base, dict) else ({} if base is None else {"meta": base})
        for key, value in record.items():
            if key not in self.columns.used and key != "meta":
                meta[key] = value
        if not meta:
            return None
        return json.dumps(meta, ensure_ascii=False, default=_json_default)


def iter_records(path: Path | str, columns: Columns) -> Iterator[list[tuple[str, dict]]]:
    """Batches of (where, record) from a Parquet or JSON Lines file (local or URL), streamed."""
    if _kind(path) == "jsonl":
        yield from iter_jsonl(path)
        return
    folder, name = locate(path)
    try:
        with folder.open(name, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns.check_parquet(path, parquet.schema_arrow)
            row = 0
            for batch in parquet.iter_batches(batch_size=1024):
                records = batch.to_pylist()
                yield [(f"{path} row {row + i}", r) for i, r in enumerate(records)]
                row += len(records)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None


def check_files(files: list[Path | str] | tuple[Path | str, ...], config: DocumentsConfig) -> None:
    """Cheap checks before any work: each file opens and its first record has the text column
    (a Parquet file's schema, a JSONL file's first line)."""
    columns = Columns(config)
    normalize = Normalizer(config)
    for path in files:
        for batch in iter_records(path, columns):
            where, record = batch[0]
            normalize(record, where)
            break


# --- writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestTask:
    """A run of consecutive input files into shards `out/{data,removed}/<group>-<k>.parquet`
    (renamed to part-NNNNN in order once every group is done). Locations only: the files are
    paths or URLs, `out` a Folder (pickled as its URL)."""

    files: tuple[Path | str, ...]
    group: int
    out: Folder
    config: DocumentsConfig


class _Shard:
    """A data shard and its removed shard being filled; both published on `close`."""

    def __init__(self, out: Folder, name: str):
        self.name = name
        self._outputs = contextlib.ExitStack()
        data = self._outputs.enter_context(out.output(f"data/{name}"))
        removed = self._outputs.enter_context(out.output(f"removed/{name}"))
        self.data = ShardWriter(data, DOCUMENT_SCHEMA)
        self.removed = ShardWriter(removed, REMOVED_SCHEMA)

    def close(self) -> None:
        with self._outputs:  # published once both are written; dropped if a write fails
            self.data.close()
            self.removed.close()


def _label(docs: list[dict[str, Any]], max_chars: int | None) -> int:
    from pipeline.langid import detect_language

    labelled = 0
    for doc in docs:
        if doc["language"] is None and doc["text"] is not None:
            doc["language"], doc["language_score"] = detect_language(doc["text"][:max_chars])
            labelled += 1
    return labelled


def ingest_group(task: IngestTask) -> ShardResult:
    """Read the task's files in order; write document shards of ~shard_bytes of text."""
    config, normalize = task.config, Normalizer(task.config)
    counts = {"text_bytes": 0, "languages_detected": 0}
    result = ShardResult(shard=f"group-{task.group:05d}", extra={"shards": []})
    shard: _Shard | None = None
    shard_bytes = 0

    def close() -> None:
        nonlocal shard, shard_bytes
        if shard is not None:
            shard.close()
            result.extra["shards"].append(shard.name)
            shard, shard_bytes = None, 0

    for path in task.files:
        for batch in iter_records(path, normalize.columns):
            docs = [normalize(record, where) for where, record in batch]
            if config.detect_language:
                counts["languages_detected"] += _label(docs, config.langid_max_chars)
            for doc in docs:
                if shard is None:
                    name = f"{task.group:05d}-{len(result.extra['shards']):05d}.parquet"
                    shard = _Shard(task.out, name)
                result.docs_in += 1
                if doc["text"] is None:
                    shard.removed.write(removed_row(doc, "source_no_text", STAGE))
                    result.drops["source_no_text"] = result.drops.get("source_no_text", 0) + 1
                    continue
                shard.data.write(doc)
                result.docs_out += 1
                size = len(doc["text"].encode("utf-8"))
                counts["text_bytes"] += size
                shard_bytes += size
                if shard_bytes >= config.shard_bytes:
                    close()
    close()
    result.extra.update(counts)
    return result


def _groups(
    files: list[Path | str] | tuple[Path | str, ...], target: int
) -> list[tuple[Path | str, ...]]:
    """Consecutive files in groups of about `target` bytes stored: many small files share
    shards, a big one is a group (and a task) of its own."""
    groups, current, size = [], [], 0
    for path in files:
        current.append(path)
        folder, name = locate(path)
        size += folder.size(name)
        if size >= target:
            groups.append(tuple(current))
            current, size = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def ingest(
    config: DocumentsConfig,
    files: list[Path | str] | tuple[Path | str, ...],
    out: Folder | Path | str,
    pmap: ParallelMap = serial_map,
) -> StageResult:
    """Read `files` (paths or URLs) into `out/data/part-NNNNN.parquet` (and `removed/`
    alongside); `out` is a folder or URL."""
    out = as_folder(out)
    if not files:
        raise DataError("no document files to read")
    check_files(files, config)  # a wrong column fails here, in one line, before any work
    scratch = ".ingest"
    tasks = [
        IngestTask(group, i, out / scratch, config)
        for i, group in enumerate(_groups(files, config.shard_bytes))
    ]
    results = pmap(ingest_group, tasks, "source")
    index = 0
    for folder in ("data", "removed"):
        out.makedirs(folder)
    for result in results:
        for name in result.extra.pop("shards"):
            for folder in ("data", "removed"):
                out.move(f"{scratch}/{folder}/{name}", f"{folder}/{shard_name(index)}")
            index += 1
    out.remove(scratch)
    totals = {
        key: sum(r.extra[key] for r in results) for key in ("text_bytes", "languages_detected")
    }
    stage_result = StageResult.from_shards(
        results, extra={"files": len(files), "shards": index, **totals}
    )
    if stage_result.docs_out == 0:
        raise DataError(f"{files[0]}{' ...' if len(files) > 1 else ''}: no document with a text")
    return stage_result
