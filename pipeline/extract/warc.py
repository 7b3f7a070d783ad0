"""Reading WARC files strictly: response records out, corrupt files refused with one line.

warcio reads real-world WARC (and ARC) files well but forgives too much for a data pipeline:
on a corrupt gzip member it prints the zlib error and stops early, on a wrong Content-Length it
prints a warning and carries on, and a truncated last record comes out short. Each of those
would silently lose or mangle pages, so `iter_responses` turns them into `DataError`s naming the
file and offset (and prints nothing).

Every read is bounded, so a hostile file cannot take the memory: a response body is de-chunked
and inflated (Content-Encoding gzip/deflate) here, block by block, and reading stops one byte
past `max_body_bytes` (a 4 MB gzip body that inflates to 4 GiB costs 4 MB of reading); header
lines have a size limit; the rest of a record is skipped in warcio's 16 KiB blocks of the file,
which inflate to ~16 MiB at most (deflate's ratio is at most ~1032:1, zlib's technical notes).

    for page in iter_responses(Path("crawl.warc.gz"), stats, max_body_bytes=5 << 20):
        if not page.truncated:
            html = decode_html(page.body, page.content_type)

A WARC file is a local path, a URL (`s3://bucket/crawl/warc/crawl-00000.warc.gz`) or a
`WarcFile` (a `store.fs.Folder` and a name): it is read as a stream through the Folder, so a
worker on another machine needs only the URL.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.limitreader import LimitReader
from warcio.statusandheaders import StatusAndHeadersParserException

from pipeline.errors import DataError
from pipeline.store.fs import Folder, as_folder, is_url, locate

WARC_SUFFIXES = (".warc", ".warc.gz")
HTML_TYPES = ("text/html", "application/xhtml+xml")
_GZIP_MAGIC = b"\x1f\x8b"
# A body is read, and inflated, this many bytes per step at most: a gzip bomb's step stays small
# whatever its ratio, and a step is still quick.
_BLOCK = 64 * 1024
# The WARC + HTTP header lines of one record, together. h11 (httpx, our crawler) refuses a
# response whose header block exceeds 16 KiB (its max_incomplete_event_size); 1 MiB leaves room
# for other crawlers and still refuses a "header" of a gigabyte without a newline.
MAX_HEADER_BYTES = 1 << 20
# Compressed input kept, before any output, to pass a body through if it does not inflate.
_MAX_HELD = 1 << 20
# Content-Encodings undone here, as warcio does (it also decodes `br` when brotli is installed,
# unbounded). Our crawler asks for gzip and deflate only (crawl.py's Accept-Encoding); other
# encodings pass through as sent, as warcio does without brotli.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass
class Response:
    """One HTTP response record: what extraction needs, body already de-chunked/decompressed."""

    url: str
    fetched_at: datetime | None  # WARC-Date, UTC
    offset: int  # byte offset of the record in the file (of its gzip member, if compressed)
    status: int | None  # HTTP status; None when the status line is unreadable
    content_type: str | None  # the HTTP Content-Type header as sent
    body: bytes  # decoded, at most `max_body_bytes` of it
    truncated: bool = False  # the decoded body is longer than `max_body_bytes`: cut there


@dataclass(frozen=True)
class WarcFile:
    """One WARC file to read: its folder (local or URL) and its name there; `source` is what its
    documents record as `source_warc` (default: the file's location)."""

    folder: Folder
    name: str
    source: str = ""

    @classmethod
    def of(cls, entry: WarcInput) -> WarcFile:
        """A WarcFile as it is; a path or URL, recorded as given."""
        if isinstance(entry, WarcFile):
            return entry
        folder, name = locate(entry)
        return cls(folder, name, str(entry))

    @property
    def url(self) -> str:
        return self.folder.url_of(self.name)

    @property
    def label(self) -> str:
        return self.source or self.url


WarcInput = WarcFile | Path | str


def list_warc_files(location: Path | str | Folder) -> list[Path | str]:
    """A WARC file as given, or every `*.warc` / `*.warc.gz` under a folder, sorted: `Path`s for
    a local path, URLs for a URL or a `Folder` (a crawl version's `warc/` folder)."""
    folder = as_folder(location)
    remote = isinstance(location, Folder) or is_url(location)
    if not folder.exists():
        raise DataError(f"{location}: no such file or directory")
    if folder.is_file():
        return [folder.url if remote else Path(location)]
    names = _warc_names(folder, location)
    if remote:
        return [folder.url_of(name) for name in names]
    return sorted(Path(location) / name for name in names)


def _warc_names(folder: Folder, location: Path | str | Folder) -> list[str]:
    names = [name for name in folder.list() if name.endswith(WARC_SUFFIXES)]
    if not names:
        raise DataError(f"{location}: no *.warc or *.warc.gz files in this folder")
    return names


def warc_files_in(folder: Folder, source: str) -> list[WarcFile]:
    """Every WARC file of a folder (a crawl version's `warc/`), its documents recording
    `source/<name>` as their source_warc: the same bytes whatever the storage root."""
    return [WarcFile(folder, name, f"{source}/{name}") for name in _warc_names(folder, folder)]


class _GzipError(Exception):
    """A gzip member that does not inflate, or a file that ends inside one: (what, detail)."""


class _HeaderTooLong(ValueError):
    """A record's header lines, or a line between records, exceed MAX_HEADER_BYTES."""


class _StrictReader(DecompressingBufferedReader):
    """warcio's record reader, raising where warcio would only print or guess.

    On a zlib error warcio prints it and returns no data (the record comes out short), or, in a
    member's first block, decides the rest of the file is not compressed; and it never checks
    that the last member is complete. Here the file's type is known from its magic bytes, so
    every error is one. Checking in warcio's own inflate pass is free; a separate verifying
    pass cost half of the WARC reading time (bench/extract.py).
    """

    def _decompress(self, data: bytes) -> bytes:
        if self.decompressor is None or not data:
            return data
        try:
            return self.decompressor.decompress(data)
        except zlib.error as exc:
            raise _GzipError("corrupt gzip member", str(exc)) from None

    # Bytes of header lines the record being parsed may still read (None: not parsing one).
    header_budget: int | None = None

    def readline(self, length: int | None = None) -> bytes:
        """warcio reads headers, and the blank lines between records, with unbounded readline():
        a gigabyte without a newline would be one line. Here no line, and no record's headers
        all together, read more than MAX_HEADER_BYTES."""
        budget = MAX_HEADER_BYTES if self.header_budget is None else self.header_budget
        line = super().readline(budget + 1 if length is None else min(length, budget + 1))
        if len(line) > budget:
            raise _HeaderTooLong(f"header lines longer than {MAX_HEADER_BYTES} bytes")
        if self.header_budget is not None:
            self.header_budget -= len(line)
        return line

    def close_decompressor(self) -> None:  # called once the last record has been read
        decompressor = self.decompressor
        if decompressor is not None and self.num_block_read > 0 and not decompressor.eof:
            raise _GzipError("truncated gzip member", "file ends mid-record")
        super().close_decompressor()


class _QuietIterator(ArchiveIterator):
    # warcio writes this warning to stderr and counts it in err_count; we raise on the count.
    INC_RECORD = ""

    def __init__(self, fh: BinaryIO, gzipped: bool):
        super().__init__(fh, arc2warc=True)
        self.reader = _StrictReader(self.fh, decomp_type="gzip" if gzipped else None)

    def _next_record(self, next_line: bytes | None) -> Any:
        self.reader.header_budget = MAX_HEADER_BYTES  # warcio parses WARC + HTTP headers here
        try:
            return super()._next_record(next_line)
        finally:
            self.reader.header_budget = None


def _content_length(record: Any) -> int:
    """The declared record length; warcio silently treats a bad one as 0."""
    value = record.rec_headers.get_header("Content-Length")
    try:
        length = int(value)
    except (TypeError, ValueError):
        length = -1
    if length < 0:
        raise ValueError(f"invalid Content-Length {value!r}")
    return length


def _warc_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        date = datetime.fromisoformat(value)
    except ValueError:
        return None
    date = date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)
    return date.replace(microsecond=0)  # the schema stores whole seconds


def iter_responses(
    warc: WarcInput, stats: Counter[str], max_body_bytes: int | None = None
) -> Iterator[Response]:
    """Yield the response records of a WARC/ARC file; count every record type in `stats`.

    A decoded body longer than `max_body_bytes` is read only that far, cut there and marked
    `truncated`; the rest of its record is skipped, never held.
    """
    warc = WarcFile.of(warc)
    path = warc.url  # named in errors
    try:
        fh: Any = warc.folder.open(warc.name, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        gzipped = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        records = _QuietIterator(fh, gzipped)
        offset = 0  # blamed in errors: the record being read, else the next one to parse
        try:
            for record in records:
                offset = records.offset  # this record's start
                _content_length(record)
                stats["records"] += 1
                stats[f"records_{record.rec_type}"] += 1
                body = None
                if record.rec_type == "response":
                    body = read_capped(_decoded_blocks(record), max_body_bytes)
                records.get_record_offset()  # reads to the record's end, checking what follows
                if records.err_count:
                    raise ValueError("record length does not match its Content-Length")
                if isinstance(record.raw_stream, LimitReader) and record.raw_stream.limit > 0:
                    raise ValueError("record cut short: file truncated")
                start, offset = offset, records.offset
                if body is not None:
                    yield _response(path, record, start, *body)
        except _GzipError as exc:
            what, detail = exc.args
            raise DataError(f"{path}: {what}{_at(offset)} ({detail})") from None
        except (ArchiveLoadFailed, StatusAndHeadersParserException, ValueError, EOFError) as exc:
            raise DataError(f"{path}: corrupt WARC{_near(offset)}: {_one_line(exc)}") from None
        except zlib.error as exc:
            raise DataError(f"{path}: corrupt gzip data{_near(offset)} ({exc})") from None
    finally:
        fh.close()


def _at(offset: int) -> str:
    return f" at offset {offset}" if offset >= 0 else ""


def _near(offset: int) -> str:
    # warcio's offsets go negative in a single-stream gzip, where they mean nothing.
    return f" near offset {offset}" if offset >= 0 else ""


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if "non-chunked gzip" in text:  # warcio's 10-line explanation, in short
        return "one gzip stream for many records, not one member each (fix: warcio recompress)"
    return text[:200] or type(exc).__name__


def read_capped(blocks: Iterable[bytes], limit: int | None) -> tuple[bytes, bool]:
    """(the first `limit` bytes of the joined blocks, whether there were more). Stops pulling
    blocks as soon as it knows: the blocks can be an endless inflating stream."""
    parts, size = [], 0
    for block in blocks:
        parts.append(block)
        size += len(block)
        if limit is not None and size > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


def _decoded_blocks(record: Any) -> Iterator[bytes]:
    """A response record's payload, de-chunked and inflated as its HTTP headers say, in blocks
    of at most _BLOCK bytes. Lenient like warcio's `content_stream()`, which it replaces because
    that one reads a whole chunk at once (up to 2 GiB) and inflates without an output bound."""
    raw = record.raw_stream  # after the HTTP headers; a .warc.gz member already inflated
    headers = record.http_headers
    if headers is None:
        return _plain(raw)
    blocks: Iterator[bytes] = _plain(raw)
    if (headers.get_header("Transfer-Encoding") or "").strip().lower() == "chunked":
        blocks = _dechunked(raw)
    encoding = (headers.get_header("Content-Encoding") or "").strip().lower()
    if encoding in _WBITS:
        blocks = inflate(blocks, encoding)
    return blocks


def _plain(stream: Any) -> Iterator[bytes]:
    while block := stream.read(_BLOCK):
        yield block


def _dechunked(stream: Any) -> Iterator[bytes]:
    """HTTP/1.1 chunked transfer coding undone. Where it does not parse (servers do send plain
    bodies labelled chunked) the rest passes through as it is; a cut-off chunk ends the body."""
    while True:
        line = stream.readline(64)  # hex size, maybe ;extensions, CRLF (warcio's bound too)
        try:
            if not line.endswith(b"\r\n"):
                raise ValueError(line)
            size = int(line[:-2].split(b";")[0], 16)
        except ValueError:
            yield line
            yield from _plain(stream)
            return
        if size == 0:
            return
        while size > 0:
            block = stream.read(min(size, _BLOCK))
            if not block:
                return
            size -= len(block)
            yield block
        end = stream.read(2)
        if end != b"\r\n":  # not chunked after all: the rest as it is
            yield end
            yield from _plain(stream)
            return


def inflate(blocks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Undo a gzip/deflate Content-Encoding, yielding at most _BLOCK bytes per step, so the
    consumer can stop a bomb after any step. As warcio does: data that fails to inflate before
    any output passes through as sent (a server that says gzip and is not), "deflate" may be raw
    deflate without the zlib wrapper, a stream that breaks later ends there, and what follows
    the end of the compressed stream is ignored."""
    retries = [-zlib.MAX_WBITS] if encoding == "deflate" else []
    inflater = zlib.decompressobj(_WBITS[encoding])
    held: bytearray | None = bytearray()  # input so far, until the first output
    blocks = iter(blocks)
    for block in blocks:
        if held is not None:
            held += block
            if len(held) > _MAX_HELD:  # no output yet from 1 MiB: no passing through either
                held = None
        data = block
        while data:
            try:
                out = inflater.decompress(data, _BLOCK)
            except zlib.error:
                if held is None:
                    return
                if retries:  # raw deflate: again from the start
                    inflater, data = zlib.decompressobj(retries.pop()), bytes(held)
                    continue
                yield from _split(bytes(held))
                yield from blocks
                return
            if out:
                held = None
                yield out
            if inflater.eof:
                return
            data = inflater.unconsumed_tail
    # zlib may hold the rest of a match once the input is all taken but the output was full.
    while held is None and not inflater.eof and (out := inflater.decompress(b"", _BLOCK)):
        yield out


def _split(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _BLOCK):
        yield data[start : start + _BLOCK]


def _response(path: str, record: Any, offset: int, body: bytes, truncated: bool) -> Response:
    headers = record.rec_headers
    url = headers.get_header("WARC-Target-URI")
    if not url:
        raise DataError(f"{path}: response record at offset {offset} has no WARC-Target-URI")
    status, content_type = None, None
    if record.http_headers is not None:
        content_type = record.http_headers.get_header("Content-Type")
        try:
            status = int(record.http_headers.get_statuscode())
        except (TypeError, ValueError):
            status = None
    return Response(
        url=url,
        fetched_at=_warc_date(headers.get_header("WARC-Date")),
        offset=offset,
        status=status,
        content_type=content_type,
        body=body,
        truncated=truncated,
    )


def _mime_and_charset(content_type: str | None) -> tuple[str | None, str | None]:
    if not content_type:
        return None, None
    mime, _, params = content_type.partition(";")
    match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", params, re.IGNORECASE)
    return mime.strip().lower() or None, match.group(1) if match else None


_HTML_START = re.compile(rb"<(!doctype\s+html|html|head|body|title|meta)\b", re.IGNORECASE)


def is_html(content_type: str | None, body: bytes) -> bool:
    """HTML by its declared type; when none is declared, by a tag near the start of the body."""
    mime, _ = _mime_and_charset(content_type)
    if mime is not None:
        return mime in HTML_TYPES
    return _HTML_START.search(body[:1024]) is not None


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
# WHATWG Encoding Standard: browsers decode these labels as windows-1252.
_AS_CP1252 = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii", "ascii"}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _codec(label: str | bytes | None) -> str | None:
    if not label:
        return None
    name = (label.decode("ascii", "ignore") if isinstance(label, bytes) else label).lower()
    name = "cp1252" if name in _AS_CP1252 else name
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(body: bytes, content_type: str | None) -> str:
    """Bytes to text, the way browsers pick the encoding, minus statistical guessing.

    BOM, then the HTTP charset, then `<meta charset>` in the first 1024 bytes (the HTML
    standard's prescan window), else UTF-8; undecodable bytes become U+FFFD.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body.decode(name, errors="replace").lstrip("\ufeff")
    meta = _META_CHARSET.search(body[:1024])
    encoding = (
        _codec(_mime_and_charset(content_type)[1])
        or _codec(meta.group(1) if meta else None)
        or "utf-8"
    )
    return body.decode(encoding, errors="replace")
