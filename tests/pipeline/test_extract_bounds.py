"""Extract's reads are bounded: gzip bombs (in the HTTP body and in the .warc.gz itself), huge
chunks and endless header lines are dropped or refused without taking the memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.errors import DataError
from pipeline.extract.warc import MAX_HEADER_BYTES, _decoded_blocks, iter_responses, read_capped
from tests.pipeline.test_extract import ARTICLE, page

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
BOMB_BYTES = 1100 * MiB  # inflated size of each bomb: more than 1 GiB
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, max compression


def gzip_bomb(prefix: bytes, zeros: int, suffix: bytes = b"") -> Iterator[bytes]:
    """A gzip member of `prefix` + `zeros` zero bytes + `suffix`, made in well under a second.

    After a full flush deflate starts afresh, so every MiB of zeros compresses to the same
    ~1 KiB: compress one, repeat its bytes. Compressed size ~ zeros / 1000.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = bytes(MiB)
    yield GZIP_HEADER + deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    one = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert one == again  # the trick holds
    crc = zlib.crc32(prefix)
    for _ in range(zeros // MiB):
        yield one
        crc = zlib.crc32(block, crc)
    size = len(prefix) + zeros + len(suffix)
    crc = zlib.crc32(suffix, crc)
    yield deflate.compress(suffix) + deflate.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def test_gzip_bomb_helper_inflates_as_claimed():
    data = b"".join(gzip_bomb(b"<html>", 3 * MiB, b"</html>"))
    assert gzip.decompress(data) == b"<html>" + bytes(3 * MiB) + b"</html>" and len(data) < 5000


def http(status: str, headers: list[tuple[str, str]]) -> StatusAndHeaders:
    return StatusAndHeaders(status, headers, protocol="HTTP/1.1")


def response(writer: WARCWriter, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
    record = writer.create_warc_record(
        url, "response", payload=io.BytesIO(body), http_headers=http("200 OK", headers)
    )
    writer.write_record(record)


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def warc_level_bomb(url: str, zeros: int) -> Iterator[bytes]:
    """One .warc.gz member whose record (a text/html response) inflates to > `zeros` bytes."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>"
    warc = (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Target-URI: {url}\r\nWARC-Date: 2024-05-01T12:00:00Z\r\n"
        "WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
        "Content-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(head) + zeros}\r\n\r\n"
    ).encode()
    yield from gzip_bomb(warc + head, zeros, b"\r\n\r\n")


def write_bomb_warc(path: Path) -> Path:
    """Bombs of every kind, each followed by a normal page that must still come out."""
    bomb = b"".join(gzip_bomb(b"<html><body>", BOMB_BYTES))
    good = page("Clocks", ARTICLE).encode()
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        html = ("Content-Type", "text/html")
        response(writer, "http://bomb.test/gzip", [html, ("Content-Encoding", "gzip")], bomb)
        response(writer, "http://ok.test/1", [html], good)
        response(
            writer,
            "http://bomb.test/chunked",
            [html, ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
            chunked(bomb, len(bomb)),  # one chunk: warcio reads a whole chunk at once
        )
        response(writer, "http://ok.test/2", [html], good)
        for member in warc_level_bomb("http://bomb.test/warc", BOMB_BYTES):
            fh.write(member)
        response(writer, "http://ok.test/3", [html], good)
    return path


# Runs in a fresh interpreter (2 GiB address-space limit: the old code died, not the machine) and
# reports its peak memory and the sandbox child's.
PROBE = """
import json, resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import pyarrow.parquet as pq
from pipeline.extract.extractor import ExtractConfig, ExtractTask, extract_shard
from pipeline.store.fs import Folder

def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

warc, out = Path(sys.argv[1]), Path(sys.argv[2])
before = hwm()
task = ExtractTask(warc, Folder(out), "d.parquet", ExtractConfig())
result = extract_shard(task)
print(json.dumps({
    "before": before,
    "after": hwm(),
    "child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "docs": pq.read_table(out / task.data).column("url").to_pylist(),
    "removed": {r["url"]: r["reason"] for r in pq.read_table(out / task.removed).to_pylist()},
}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_bombs_are_dropped_as_too_large_without_taking_memory(tmp_path):
    warc = write_bomb_warc(tmp_path / "bombs.warc.gz")
    assert warc.stat().st_size < 8 * MiB  # 3.3 GiB of HTML inside
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(warc), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["docs"] == ["http://ok.test/1", "http://ok.test/2", "http://ok.test/3"]
    assert out["removed"] == {
        "http://bomb.test/gzip": "extract_too_large",
        "http://bomb.test/chunked": "extract_too_large",
        "http://bomb.test/warc": "extract_too_large",
    }
    # Reading stops at 5 MiB of HTML; warcio inflates the .warc.gz 16 KiB at a time (~16 MiB).
    grown = out["after"] - out["before"]
    assert grown < 200 * MiB, f"peak memory grew {grown / MiB:.0f} MiB"
    assert out["child"] < out["before"] + 200 * MiB  # the sandbox child got no bomb either


def records(body_parts: list[tuple[list[tuple[str, str]], bytes]]) -> list:
    """Parsed response records of a small WARC, each read by warcio's content_stream and ours."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=False)
    for headers, body in body_parts:
        response(writer, "http://a.test/", headers, body)
    out = []
    for get in ("warcio", "ours"):
        buffer.seek(0)
        for record in ArchiveIterator(buffer):
            if get == "warcio":
                out.append(record.content_stream().read())
            else:
                out.append(b"".join(_decoded_blocks(record)))
    half = len(out) // 2
    return list(zip(out[:half], out[half:], strict=True))


HTML = b"<html><body>" + b"<p>clocks and more clocks</p>" * 3000 + b"</body></html>"
GZ, DEFLATE = ("Content-Encoding", "gzip"), ("Content-Encoding", "deflate")
CHUNKED = ("Transfer-Encoding", "chunked")


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    "headers, body",
    [
        ([], HTML),
        ([GZ], gzip.compress(HTML)),
        ([GZ], gzip.compress(HTML) + b"trailing junk"),
        ([GZ], HTML),  # says gzip, is not: passed through
        ([("Content-Encoding", "br")], HTML),  # not decoded (warcio without brotli)
        ([DEFLATE], zlib.compress(HTML)),
        ([DEFLATE], raw_deflate(HTML)),  # deflate without the zlib wrapper
        ([CHUNKED], chunked(HTML, 1000)),
        ([CHUNKED, GZ], chunked(gzip.compress(HTML), 777)),
        ([CHUNKED], HTML),  # says chunked, is not
        ([CHUNKED], b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"),
    ],
)
def test_body_decoding_matches_warcio_on_ordinary_records(headers, body):
    [(warcio, ours)] = records([(headers, body)])
    assert ours == warcio and len(ours) > 0


def test_read_capped_stops_pulling_blocks():
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield b"x" * 1000

    assert read_capped(endless(), 2500) == (b"x" * 2500, True)
    assert len(pulled) == 3
    assert read_capped([b"ab", b"cd"], 4) == (b"abcd", False)
    assert read_capped([b"ab", b"cd"], None) == (b"abcd", False)


def test_truncated_flag_and_body_at_the_cap(tmp_path):
    path = tmp_path / "a.warc.gz"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        response(writer, "http://a.test/", [GZ], gzip.compress(HTML))
    [whole] = iter_responses(path, Counter())
    assert (whole.body, whole.truncated) == (HTML, False)
    [cut] = iter_responses(path, Counter(), max_body_bytes=100)
    assert (cut.body, cut.truncated) == (HTML[:100], True)
    [exact] = iter_responses(path, Counter(), max_body_bytes=len(HTML))
    assert exact.truncated is False


@pytest.mark.parametrize("where", ["warc", "http"])
def test_endless_header_line_is_refused_in_one_line(where, tmp_path):
    long = "x" * (MAX_HEADER_BYTES + 10)
    warc_headers = {"X-Long": long} if where == "warc" else {}
    http_headers = [("X-Long", long)] if where == "http" else []
    path = tmp_path / f"{where}.warc.gz"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        record = writer.create_warc_record(
            "http://a.test/",
            "response",
            payload=io.BytesIO(HTML),
            http_headers=http("200 OK", http_headers),
            warc_headers_dict=warc_headers,
        )
        writer.write_record(record)
    with pytest.raises(DataError, match=r"header lines longer than 1048576 bytes") as exc:
        list(iter_responses(path, Counter()))
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
