"""The one document type every stage speaks: Parquet schemas, ids and shard I/O.

Stages talk to each other only through these datasets. A document dataset is a folder of
`part-NNNNN.parquet` shards with DOCUMENT_SCHEMA; documents a stage removes go to a sibling
`removed/` folder with REMOVED_SCHEMA (the same columns plus why it was removed), so no stage
ever loses a document silently. Both load as-is with
`datasets.load_dataset("parquet", data_files=".../part-*.parquet")`.

Documents from other tools (FineWeb, Dolma, plain JSONL) become this schema in
`pipeline/extract/sources.py`; the columns it has no place for travel along in `meta`, a
JSON object, so every stage carries them through untouched. `check_shard` tells a document
shard from anything else in one line naming the file and the column.

Shards are read and written through `pipeline.store.fs.Folder`, so a dataset may live on an
object store (`s3://...`); a local file goes to pyarrow as a path, as fast as ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DataError
from pipeline.store.fs import Folder, as_folder, is_url, locate

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # doc_id(url): stable across re-crawls
        pa.field("url", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),  # ISO 639-1 code from py3langid
        pa.field("language_score", pa.float32()),  # probability of `language`, 0..1
        pa.field("fetched_at", pa.timestamp("ms", tz="UTC")),  # Parquet has no seconds unit
        pa.field("source_warc", pa.string()),  # WARC file the page came from
        pa.field("source_offset", pa.int64()),  # byte offset of its response record
        # The input's other columns as a JSON object (`json.loads(meta)`), for documents that
        # came from elsewhere (pipeline/extract/sources.py); null for crawled pages.
        pa.field("meta", pa.string()),
    ]
)

REMOVED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("reason", pa.string(), nullable=False))
REMOVED_SCHEMA = REMOVED_SCHEMA.append(pa.field("stage", pa.string()))
# Dedup only: the id of the document kept in its place and the cluster both belong to.
REMOVED_SCHEMA = REMOVED_SCHEMA.append(pa.field("duplicate_of", pa.string()))
REMOVED_SCHEMA = REMOVED_SCHEMA.append(pa.field("cluster_id", pa.string()))

DOCUMENT_COLUMNS = DOCUMENT_SCHEMA.names
SHARD_GLOB = "part-*.parquet"
# A file or folder for every function here: a local path, a URL (`folder.url_of(name)`) or a
# Folder, so a shard task on a machine without the driver's disk needs nothing but URLs.
Source = str | os.PathLike[str] | Folder


def describe_type(dtype: pa.DataType) -> str:
    return str(dtype).replace("large_string", "string")


def check_shard(
    path: Source, schema: pa.Schema, columns: list[str] | None = None, what: str = "document"
) -> None:
    """Raise one DataError line if `path` lacks one of `columns` (default: all of `schema`'s)
    or holds it with another type. Reads the Parquet footer only, so it is cheap to run on every
    shard before any work starts."""
    found = read_schema(path)
    for name in columns or schema.names:
        want = schema.field(name).type
        if name not in found.names:
            have = ", ".join(found.names[:12]) + (", ..." if len(found.names) > 12 else "")
            raise DataError(f"{path}: not a {what} shard: no column '{name}' (columns: {have})")
        got = found.field(name).type
        if got != want and not (got == pa.large_string() and want == pa.string()):
            raise DataError(
                f"{path}: column '{name}' is {describe_type(got)}, expected {describe_type(want)}"
            )


def is_document_shard(path: Source) -> bool:
    """True if `path` has every DOCUMENT_SCHEMA column with its type (extra columns allowed)."""
    try:
        check_shard(path, DOCUMENT_SCHEMA)
    except DataError:
        return False
    return True


def first_line(exc: BaseException) -> str:
    """An exception's first line (pyarrow's errors run to pages): enough for one error line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def doc_id(url: str) -> str:
    """Stable document id: the first 16 hex digits of sha256(url).

    Keyed on the URL alone so the same page keeps its id across crawls (incremental dedup,
    train/val split by id hash both rely on that).
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _local(file: Source) -> str | os.PathLike[str] | None:
    """`file` as a local path when it is one (pyarrow reads those directly, fastest)."""
    if isinstance(file, Folder):
        return file.path if file.is_local else None
    if not is_url(file):
        return file
    return str(file).removeprefix("file://") if str(file).startswith("file://") else None


def file_name(file: Source) -> str:
    """The name of `file` (a path, URL or Folder) without its folder."""
    local = _local(file)
    return Path(local).name if local is not None else locate(file)[1]


@contextlib.contextmanager
def readable(file: Source) -> Iterator[str | os.PathLike[str] | IO[bytes]]:
    """What pyarrow reads `file` from: the local path itself, else an open file object."""
    local = _local(file)
    if local is not None:
        yield local
        return
    folder, name = locate(file)
    with folder.open(name, "rb") as handle:
        yield handle


def read_schema(path: Source) -> pa.Schema:
    """A Parquet file's schema from its footer; one DataError line naming the file if unreadable."""
    try:
        with readable(path) as source:
            return pq.read_schema(source)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None


def shard_folder(where: Source) -> tuple[Folder, list[str]]:
    """A dataset's folder and its shard names in order: every part-*.parquet of a folder, or the
    one file `where` names; a clear error if there are none."""
    local = _local(where)
    if local is not None:
        shards = list_shards(local)
        return Folder(shards[0].parent), [shard.name for shard in shards]
    folder = as_folder(where)
    if not folder.exists():
        raise DataError(f"{where}: no such file or directory")
    if folder.is_file():
        parent, name = locate(folder)
        return parent, [name]
    names = folder.list(SHARD_GLOB)
    if not names:
        raise DataError(f"{where}: no {SHARD_GLOB} files in this folder")
    return folder, names


def list_shards(folder: Source) -> list[Path] | list[str]:
    """The shards of a dataset folder, in name order: local paths for a local folder, URLs for
    a remote one; a clear error if there are none."""
    local = _local(folder)
    if local is None:
        parent, names = shard_folder(folder)
        return [parent.url_of(name) for name in names]
    folder = Path(local)
    if not folder.exists():
        raise DataError(f"{folder}: no such file or directory")
    if folder.is_file():
        return [folder]
    shards = sorted(folder.glob(SHARD_GLOB))
    if not shards:
        raise DataError(f"{folder}: no {SHARD_GLOB} files in this folder")
    return shards


def _check_columns(path: Source, columns: list[str] | None) -> None:
    """Document columns asked for must exist with their types: one line, not pyarrow's dump."""
    wanted = [c for c in columns or [] if c in DOCUMENT_COLUMNS]
    if wanted:
        check_shard(path, DOCUMENT_SCHEMA, wanted)


def read_table(path: Source, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, turning pyarrow's errors into one line naming the file."""
    _check_columns(path, columns)
    try:
        with readable(path) as source:
            return pq.read_table(source, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None


def iter_batches(
    path: Source, batch_size: int = 1024, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file in record batches so big shards never sit whole in memory."""
    _check_columns(path, columns)
    try:
        with readable(path) as source:
            parquet = pq.ParquetFile(source)
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None


def iter_documents(path: Source, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Documents of one shard as dicts with DOCUMENT_SCHEMA's keys."""
    for batch in iter_batches(path, batch_size, columns=DOCUMENT_COLUMNS):
        yield from batch.to_pylist()


def atomic_write_table(table: pa.Table, path: Source, **kwargs: Any) -> None:
    """Write a Parquet file so it is never half-visible (`Folder.output`: a temp file renamed
    into place locally, one upload remotely)."""
    folder, name = locate(path)
    with folder.output(name) as tmp:
        if table.num_rows:
            pq.write_table(table, tmp, **kwargs)
        else:
            # No row group at all: `datasets` fails on a 0-row group ("BatchSize must be
            # greater than 0") but reads a file without any as an empty split.
            pq.ParquetWriter(tmp, table.schema, **kwargs).close()


class ShardWriter:
    """Collects rows for one output shard and writes it atomically on close.

    Rows are buffered in memory: shards are sized so one fits comfortably (a few hundred MB at
    most), which keeps the write a single atomic rename (or upload).
    """

    def __init__(self, path: Source, schema: pa.Schema):
        self.path = path if isinstance(path, Folder) or is_url(path) else Path(path)
        self.schema = schema
        self._batches: list[pa.RecordBatch] = []
        self._pending: list[dict[str, Any]] = []
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        self.rows += 1
        if len(self._pending) >= 1024:
            self._flush()

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def _flush(self) -> None:
        if self._pending:
            self._batches.append(pa.RecordBatch.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def close(self) -> None:
        """Write the shard (an empty one too, so every input shard has its output)."""
        self._flush()
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        atomic_write_table(table, self.path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def removed_row(
    doc: dict[str, Any],
    reason: str,
    stage: str,
    duplicate_of: str | None = None,
    cluster_id: str | None = None,
) -> dict[str, Any]:
    """A removed-dataset row: the document as it was plus why and where it was dropped."""
    row = {name: doc.get(name) for name in DOCUMENT_COLUMNS}
    row.update(reason=reason, stage=stage, duplicate_of=duplicate_of, cluster_id=cluster_id)
    return row
