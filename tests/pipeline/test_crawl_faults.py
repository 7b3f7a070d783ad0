"""The crawler against a hostile or unlucky web: compression bombs and undecodable bodies, a
rate-limiting host among polite ones, timing that must not change the crawl, redirect loops,
and servers that stall, trickle or lie. Every server is `fault_server.Site` on 127.0.0.1.
Addresses are in test_crawl_guard.py, robots.txt in test_crawl_robots.py."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.crawl.crawler import crawl
from tests.pipeline.fault_server import (
    HTML,
    NO_LENGTH,
    TEXT,
    Response,
    config,
    gzip_bomb,
    local,
    outcome,
    page,
    rows,
    serve_sites,
    trickle,
)

serve = pytest.fixture(serve_sites, name="serve")


# --- decoded bytes against the cap ---------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """~1 MB of gzip that inflates to 1 GiB (+ a small HTML head)."""
    return gzip_bomb(b"<html><body><p>" + b"x" * 1000, 1 << 30)


def test_compression_bomb_stops_at_the_decoded_cap(serve, tmp_path: Path, bomb: bytes) -> None:
    cap = 2_000_000  # more than the bomb's 1 MB on the wire, far less than its 1 GiB inflated
    robots = gzip_bomb(b"User-agent: *\nDisallow: /private\n#", 1 << 30)
    zipped = {**HTML, "Content-Encoding": "gzip"}
    deflated = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, as some send
    site = serve(
        {
            "/robots.txt": (200, {**TEXT, "Content-Encoding": "gzip"}, robots),
            "/": page("/bomb", "/bomb-stream", "/deflate-bomb", "/small", "/private"),
            "/bomb": (200, zipped, bomb),
            "/bomb-stream": (200, {**zipped, NO_LENGTH: "1"}, [bomb]),
            "/deflate-bomb": (
                200,
                {**HTML, "Content-Encoding": "deflate"},
                deflated.compress(bytes(50_000_000)) + deflated.flush(),
            ),
            "/small": (200, zipped, gzip.compress(page().encode())),
            "/private": page(),
        }
    )
    tracemalloc.start()
    try:
        result = crawl(local(site, max_response_bytes=cap), tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome(tmp_path) == {
        "/": None,
        "/bomb": "too_large",
        "/bomb-stream": "too_large",
        "/deflate-bomb": "too_large",
        "/small": None,
        "/private": "robots_disallowed",  # robots.txt's head was read despite its bomb
    }
    assert result.drops == {"crawl_robots_disallowed": 1, "crawl_too_large": 3}
    # The bombs (1 GiB, 50 MB inflated) never sat in memory: a few MB of wire bytes at most.
    assert peak < 8_000_000, peak  # measured: ~1.4 MB


def test_undecodable_bodies_are_not_stored(serve, tmp_path: Path) -> None:
    body = page().encode()
    site = serve(
        {
            "/": page("/not-gzip", "/brotli", "/twice", "/identity", "/garbage-after"),
            "/not-gzip": (200, {**HTML, "Content-Encoding": "gzip"}, body),  # a lie
            "/brotli": (200, {**HTML, "Content-Encoding": "br"}, b"\x1b\x00"),  # not asked for
            "/twice": (
                200,
                {**HTML, "Content-Encoding": "gzip, gzip"},  # warcio would undo one only
                gzip.compress(gzip.compress(body)),
            ),
            "/identity": (200, {**HTML, "Content-Encoding": "identity"}, body),
            "/garbage-after": (
                200,
                {**HTML, "Content-Encoding": "gzip"},
                gzip.compress(body) + b"\x00\x00junk",
            ),
        }
    )
    crawl(local(site), tmp_path)
    assert outcome(tmp_path) == {
        "/": None,
        "/not-gzip": "bad_encoding",
        "/brotli": "bad_encoding",
        "/twice": "bad_encoding",
        "/identity": None,
        "/garbage-after": None,  # as browsers do: what follows a complete gzip member is ignored
    }


def test_body_decoder_in_any_slices() -> None:
    from pipeline.crawl.decode import SLICE, BodyDecoder, DecodeError

    text = bytes(range(256)) * 2000 + bytes(3 * SLICE)
    zlib_wrapped = zlib.compress(text)
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = raw.compress(text) + raw.flush()
    cases = {
        "gzip": gzip.compress(text),
        "x-gzip": gzip.compress(text[:1000]) + gzip.compress(text[1000:]),  # two members
        "deflate": zlib_wrapped,
        "Deflate ": raw_deflate,
        "identity": text,
        "": text,
    }
    for coding, body in cases.items():
        for size in (1, 7, 4096, len(body)):
            decoder = BodyDecoder(coding)
            chunks = [body[i : i + size] for i in range(0, len(body), size)]
            pieces = [piece for chunk in chunks for piece in decoder.feed(chunk)]
            assert b"".join(pieces) == text, (coding, size)
            plain = coding.strip() in ("", "identity")
            assert max(map(len, pieces)) <= (size if plain else SLICE)
    for coding in ("br", "zstd", "compress", "gzip, gzip"):
        with pytest.raises(DecodeError):
            BodyDecoder(coding)
    with pytest.raises(DecodeError):
        list(BodyDecoder("gzip").feed(b"definitely not gzip"))


# --- scheduling per host, redirect loops ---------------------------------------------------


def test_a_rate_limited_host_does_not_hold_up_another(serve, tmp_path: Path) -> None:
    """Host A answers every page with 429 + Retry-After: 3 at first; host B's three levels of
    pages all finish long before A may ask again."""

    def limited(call: int) -> Response:
        if call == 1:
            return 429, {"Retry-After": "3"}, b"slow down"
        return 200, dict(HTML), page().encode()

    slow = serve({"/": limited})
    fast = serve(
        {
            "/": page("/b1", "/b2"),
            "/b1": page("/c1", "/c2"),
            "/b2": page("/c3"),
            **{f"/c{i}": page() for i in (1, 2, 3)},
        }
    )
    cfg = config(slow.url(), fast.url(), allow_private_addresses=True, max_retries=2)
    started = time.monotonic()
    result = crawl(cfg, tmp_path)
    assert result.docs_out == 7 and time.monotonic() - started < 10
    first_429 = slow.times("/")[0]
    assert max(fast.times()) - first_429 < 1.5  # B did not wait for A's 3 s
    assert slow.times("/")[1] - first_429 >= 2.9  # and A's wait was honoured
    depths = [row["depth"] for row in rows(tmp_path)]
    assert depths == sorted(depths)  # the index stays in crawl order


def delayed(seconds: float, html: str) -> Callable[[int], Response]:
    def route(call: int) -> Response:
        time.sleep(seconds)
        return 200, dict(HTML), html.encode()

    return route


def test_crawl_order_does_not_depend_on_timing(serve, tmp_path: Path) -> None:
    """Pages answer after uneven delays; one page at a time or four, the index is the same
    and the pages kept under max_pages are the first in breadth-first order."""
    routes: dict = {"/": page(*(f"/p{i}" for i in range(8)))}
    for i in range(8):
        routes[f"/p{i}"] = delayed(0.02 * (i * 7 % 5), page(f"/p{i}x", f"/p{i}y"))
        routes[f"/p{i}x"] = routes[f"/p{i}y"] = delayed(0.02 * (i * 3 % 4), page())
    site = serve(routes)
    orders = []
    for concurrency in (1, 4):
        out = tmp_path / str(concurrency)
        crawl(local(site, per_host_concurrency=concurrency, max_pages=15), out)
        orders.append([(row["url"], row["depth"], row["error"]) for row in rows(out)])
    assert orders[0] == orders[1]
    assert [url.rsplit("/", 1)[1] for url, _, _ in orders[0]] == [
        "",
        *(f"p{i}" for i in range(8)),
        *(f"p{i}{s}" for i in range(3) for s in "xy"),
    ]


def test_redirect_loop_is_recorded(serve, tmp_path: Path) -> None:
    site = serve(
        {
            "/": page("/loop-a", "/self", "/ok"),
            "/loop-a": (302, {"Location": "/loop-b"}, b""),
            "/loop-b": (301, {"Location": "/loop-a"}, b""),
            "/self": (307, {"Location": "/self"}, b""),
            "/ok": page(),
        }
    )
    result = crawl(local(site), tmp_path)
    assert outcome(tmp_path) == {
        "/": None,
        "/loop-a": "redirect",
        "/loop-b": "redirect_loop",
        "/self": "redirect_loop",
        "/ok": None,
    }
    assert result.drops == {"crawl_redirect": 1, "crawl_redirect_loop": 2}
    assert site.paths().count("/loop-a") == 1 and site.paths().count("/self") == 1


# --- servers that stall, trickle or lie (these held before; they must keep holding) --------


def test_stalling_trickling_and_lying_servers(serve, tmp_path: Path) -> None:
    body = page().encode()
    site = serve(
        {
            "/": page("/trickle", "/stall-body", "/short", "/type-lie", "/binary", "/cap-lie"),
            "/trickle": (200, dict(HTML), trickle(body, 0.05)),  # ~5 s in all
            "/stall-body": (200, {**HTML, "Content-Length": str(len(body))}, [body[:20], 5.0]),
            "/short": (200, {**HTML, "Content-Length": str(len(body) + 100)}, [body]),
            "/type-lie": (200, {"Content-Type": "image/png"}, body),
            "/binary": (200, dict(HTML), bytes(range(256)) * 8),
            "/cap-lie": (200, {**HTML, "Content-Length": "999999999"}, body),
        },
        max_seconds=6,
    )
    started = time.monotonic()
    crawl(local(site, timeout_seconds=0.6, max_retries=1, max_response_bytes=100_000), tmp_path)
    assert time.monotonic() - started < 8
    assert outcome(tmp_path) == {
        "/": None,
        "/trickle": "timeout",  # a deadline on the whole response, not per read
        "/stall-body": "timeout",
        "/short": "network_error",  # the body ended before its Content-Length
        "/type-lie": "not_html",
        "/binary": None,  # stored as sent; extract decides what it is
        "/cap-lie": "too_large",  # the header is believed when it says too much
    }
    assert site.calls["/trickle"] == 2 and site.calls["/short"] == 2  # retried once


def test_fault_server_is_bounded(serve) -> None:
    import httpx

    forever = (200, dict(HTML), iter(lambda: 1.0, None))  # sleeps for ever, unless bounded
    site = serve({"/": page(), "/forever": forever}, max_seconds=1)
    started = time.monotonic()
    with httpx.Client(trust_env=False) as client:
        client.get(site.url("/forever"), timeout=5)
        for _ in range(3):
            client.get(site.url("/"))
    assert time.monotonic() - started < 3
    small = serve({"/": page()}, max_requests=2)
    with httpx.Client(trust_env=False) as client:
        statuses = [client.get(small.url("/")).status_code for _ in range(4)]
    assert statuses == [200, 200, 503, 503] and small.over_limit == 2
