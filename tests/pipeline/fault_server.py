"""A fault-injecting HTTP server for crawler tests: 127.0.0.1 only, bounded in time and requests.

Routes map a path to an HTML string, a full response `(status, headers, body)`, or a function
of the call number (1, 2, ...) giving one, so a path can fail first and recover later. A body
is bytes, or an iterable of bytes and floats (seconds to sleep between writes): a server that
stalls or trickles. Headers go out as given, so a test can lie: a Content-Length longer than
the body, a Content-Type or Content-Encoding that does not match it. `NO_LENGTH` sends no
Content-Length (the body ends when the connection closes).

Bounds, so a crawler bug cannot hang a test: after `max_requests` requests every answer is a
503 (and `over_limit` counts them); a streamed body stops after `max_seconds`.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.crawl.crawler import CrawlConfig

Body = bytes | Iterable[bytes | float]
Response = tuple[int, dict[str, str], Body]
# A route: an HTML string, a full response, or a function of the call number (1, 2, ...).
Route = str | Response | Callable[[int], Response]
NO_LENGTH = "X-Test-No-Length"  # handler sends no Content-Length, body ends at close
HTML = {"Content-Type": "text/html; charset=utf-8"}


def page(*links: str) -> str:
    anchors = "".join(f'<a href="{link}">link</a>' for link in links)
    return f"<html><head><title>t</title></head><body><p>Some text.</p>{anchors}</body></html>"


def trickle(data: bytes, every: float) -> Iterator[bytes | float]:
    """One byte every `every` seconds."""
    for byte in data:
        yield bytes([byte])
        yield every


def gzip_bomb(prefix: bytes, zeros: int) -> bytes:
    """A valid one-member gzip stream of `prefix` + `zeros` zero bytes, ~1000x smaller.

    Built from one compressed MiB of zeros, ended by a full flush (byte-aligned, no
    back-references), repeated: 1 GiB of zeros costs ~1 MB and well under a second."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    segment = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc = zlib.crc32(prefix)
    zero_block = bytes(block)
    for _ in range(zeros // block):
        crc = zlib.crc32(zero_block, crc)
    size = (len(prefix) + zeros // block * block) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # RFC 1952: deflate, no name, unix
    return header + head + segment * (zeros // block) + end + struct.pack("<II", crc, size)


class Site:
    """A threaded HTTP server on 127.0.0.1 serving `routes`; unknown paths are 404."""

    def __init__(self, routes: dict[str, Route], max_requests: int = 500, max_seconds: float = 10):
        self.routes = routes
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.requests: list[tuple[str, float]] = []  # (path, arrival time)
        self.calls: Counter[str] = Counter()
        self.over_limit = 0
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def times(self, path: str | None = None) -> list[float]:
        return [t for p, t in self.requests if path is None or p == path]

    def respond(self, path: str) -> Response:
        with self.lock:
            if len(self.requests) > self.max_requests:
                self.over_limit += 1
                return 503, {"Content-Type": "text/plain"}, b"request limit"
            self.calls[path] += 1
            call = self.calls[path]
        route = self.routes.get(path)
        if route is None:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        if isinstance(route, str):
            return 200, dict(HTML), route.encode()
        return route(call) if callable(route) else route

    def _write(self, handler: BaseHTTPRequestHandler, body: Body) -> None:
        if isinstance(body, bytes):
            handler.wfile.write(body)
            return
        deadline = time.monotonic() + self.max_seconds
        for part in body:
            if time.monotonic() > deadline:
                return
            if isinstance(part, bytes):
                handler.wfile.write(part)
                handler.wfile.flush()
            else:
                time.sleep(min(part, max(0.0, deadline - time.monotonic())))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with site.lock:
                    site.requests.append((self.path, time.monotonic()))
                    site.active += 1
                    site.max_active = max(site.max_active, site.active)
                try:
                    status, headers, body = site.respond(self.path)
                    self.send_response(status)
                    headers = dict(headers)
                    if not headers.pop(NO_LENGTH, None) and isinstance(body, bytes):
                        headers.setdefault("Content-Length", str(len(body)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    site._write(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up on this response (timeout, byte cap)
                finally:
                    with site.lock:
                        site.active -= 1

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_sites() -> Iterator[Callable[..., Site]]:
    """For a fixture: `serve(routes)` starts a Site; all are closed after the test.
    A test module takes it with `serve = pytest.fixture(serve_sites, name="serve")`."""
    sites: list[Site] = []

    def start(routes: dict[str, Route], **bounds: float) -> Site:
        sites.append(Site(routes, **bounds))  # type: ignore[arg-type]
        return sites[-1]

    yield start
    for site in sites:
        site.close()


# --- crawling test sites and reading the outcome ----------------------------------------

FAST = {
    "delay_seconds": 0,
    "backoff_seconds": 0.01,
    "timeout_seconds": 5,
    "max_retries": 1,
}
TEXT = {"Content-Type": "text/plain"}


def config(*seeds: str, **overrides: object) -> CrawlConfig:
    return CrawlConfig(seeds=list(seeds), **{**FAST, **overrides})


def local(site: Site, **overrides: object) -> CrawlConfig:
    """A crawl of one test site, with the opt-in its 127.0.0.1 address needs."""
    return config(site.url(), allow_private_addresses=True, **overrides)


def rows(out: Path) -> list[dict]:
    return pq.read_table(out / "index" / "part-00000.parquet").to_pylist()


def outcome(out: Path) -> dict[str, str | None]:
    """URL (host-less for 127.0.0.1 pages) → error, None for a stored page."""
    found = {}
    for row in rows(out):
        url = row["url"]
        key = "/" + url.split(":", 2)[2].split("/", 1)[1] if "//127.0.0.1:" in url else url
        found[key] = row["error"]
    return found
