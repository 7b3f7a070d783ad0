"""The crawl's output: rotating gzipped WARC files and the Parquet index of every fetch.

Each WARC file starts with a `warcinfo` record, then a `request` + `response` pair per stored
page. Every record is its own gzip member, so the index's `offset` (start of the response
record) lets a reader seek straight to one page: `ArchiveIterator(f)` after `f.seek(offset)`.
The output folder may be a URL: each file is written to a local path from `Folder.output`
and published whole when complete (renamed into place locally, uploaded remotely).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, BinaryIO

import pyarrow as pa
from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import WARCWriter

from pipeline.crawl.fetch import Fetched
from pipeline.documents import atomic_write_table, shard_name
from pipeline.store.fs import Folder

INDEX_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("status", pa.int32()),  # null when no response came back
        pa.field("content_type", pa.string()),  # media type only, lower case
        pa.field("bytes", pa.int64()),  # body bytes received (on the wire)
        pa.field("fetched_at", pa.timestamp("s", tz="UTC")),
        pa.field("elapsed_ms", pa.int64()),
        pa.field("depth", pa.int32()),
        pa.field("warc_file", pa.string()),  # relative to the crawl folder; null if not stored
        pa.field("offset", pa.int64()),  # byte offset of the response record in warc_file
        pa.field("error", pa.string()),  # null for a stored page, else a short code
    ]
)
# The body is stored de-chunked, so a Transfer-Encoding header would mislead WARC readers.
_DROP_HEADERS = {"transfer-encoding"}


def index_row(fetched: Fetched, depth: int, warc: tuple[str, int] | None = None) -> dict[str, Any]:
    return {
        "url": fetched.url,
        "status": fetched.status,
        "content_type": fetched.content_type,
        "bytes": fetched.nbytes,
        "fetched_at": fetched.fetched_at,
        "elapsed_ms": fetched.elapsed_ms,
        "depth": depth,
        "warc_file": warc[0] if warc else None,
        "offset": warc[1] if warc else None,
        "error": fetched.error,
    }


def write_index(rows: list[dict[str, Any]], out: Folder) -> str:
    """Write the index into `out`; returns its name there."""
    name = f"index/{shard_name(0)}"
    with out.output(name) as path:
        atomic_write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), path)
    return name


class WarcSink:
    """Appends request/response pairs, starting a new file every `records_per_file` pages."""

    def __init__(self, out: Folder, records_per_file: int, info: dict[str, str]):
        self.out = out
        self.records_per_file = records_per_file
        self.info = info
        self.files: list[str] = []  # finished files, relative to out
        self._stream: BinaryIO | None = None
        self._writer: WARCWriter | None = None
        self._output = contextlib.ExitStack()  # the open file's `Folder.output` block
        self._name = ""
        self._records = 0

    def _open(self) -> None:
        filename = f"crawl-{len(self.files):05d}.warc.gz"
        self._name = f"warc/{filename}"
        path = self._output.enter_context(self.out.output(self._name))
        self._stream = self._output.enter_context(open(path, "wb"))  # noqa: SIM115 - closed in _finish
        self._writer = WARCWriter(self._stream, gzip=True, warc_version="1.1")
        self._writer.write_record(self._writer.create_warcinfo_record(filename, self.info))
        self._records = 0

    def _finish(self) -> None:
        """Publish the open file, complete and on disk."""
        if self._stream is None:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._output.close()  # closes the file, then publishes it
        self.files.append(self._name)
        self._stream = self._writer = None

    def write(self, fetched: Fetched) -> tuple[str, int]:
        """Store one page; returns (WARC file relative to out, response record offset)."""
        if self._writer is None or self._records >= self.records_per_file:
            self._finish()
            self._open()
        assert self._writer is not None and self._stream is not None
        writer = self._writer
        date = datetime_to_iso_date(fetched.fetched_at.replace(tzinfo=None))
        common = {"WARC-Date": date}
        if fetched.ip:
            common["WARC-IP-Address"] = fetched.ip
        headers = [(k, v) for k, v in fetched.headers if k.lower() not in _DROP_HEADERS]
        status_line = f"{fetched.status} {fetched.reason}".strip()
        response = writer.create_warc_record(
            fetched.url,
            "response",
            payload=io.BytesIO(fetched.body or b""),
            length=len(fetched.body or b""),
            http_headers=StatusAndHeaders(status_line, headers, protocol=fetched.http_version),
            warc_headers_dict=dict(common),
        )
        request_headers = dict(common)
        request_headers["WARC-Concurrent-To"] = response.rec_headers.get_header("WARC-Record-ID")
        request = writer.create_warc_record(
            fetched.url,
            "request",
            http_headers=StatusAndHeaders(
                f"GET {_request_target(fetched.url)} HTTP/1.1",
                fetched.request_headers,
                is_http_request=True,
            ),
            warc_headers_dict=request_headers,
        )
        writer.write_record(request)
        offset = self._stream.tell()
        writer.write_record(response)
        self._records += 1
        return self._name, offset

    def close(self) -> list[str]:
        self._finish()
        return self.files

    def abort(self, error: BaseException) -> None:
        """Drop the open file after `error`: nothing half-written is published."""
        self._output.__exit__(type(error), error, error.__traceback__)
        self._stream = self._writer = None


def _request_target(url: str) -> str:
    """Path and query of a URL, as in an HTTP request line."""
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
