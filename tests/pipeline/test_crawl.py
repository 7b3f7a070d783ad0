"""Crawl stage against tiny local HTTP servers that record every request they get
(`fault_server.py`; the crawler's fault cases are in test_crawl_faults.py)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.crawl.crawler import CrawlConfig, crawl, load_seeds
from pipeline.crawl.fetch import retry_after_seconds
from pipeline.crawl.urls import domain_allowed, extract_links, normalize_url
from pipeline.errors import DataError, EmptyStageError
from tests.pipeline.fault_server import NO_LENGTH, Response, Site, page, serve_sites

serve = pytest.fixture(serve_sites, name="serve")


def config(site: Site, **overrides: object) -> CrawlConfig:
    fast = {"delay_seconds": 0, "backoff_seconds": 0.01, "timeout_seconds": 5, "max_retries": 1}
    fast["allow_private_addresses"] = True  # the test servers listen on 127.0.0.1
    return CrawlConfig(seeds=[site.url()], **{**fast, **overrides})


def index(out: Path) -> list[dict]:
    return pq.read_table(out / "index" / "part-00000.parquet").to_pylist()


def outcome(out: Path) -> dict[str, str | None]:
    """url path → error (None for a stored page), from the index."""
    return {row["url"].split(":", 2)[2].split("/", 1)[1]: row["error"] for row in index(out)}


def stored(out: Path) -> set[str]:
    return {path for path, error in outcome(out).items() if error is None}


def sleeping(seconds: float, first_only: bool = False) -> Callable[[int], Response]:
    def route(call: int) -> Response:
        if call == 1 or not first_only:
            time.sleep(seconds)
        return 200, {"Content-Type": "text/html"}, page().encode()

    return route


# --- seeds and URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed", ["ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)", "example.com/a"]
)
def test_non_http_seed_is_refused_with_one_line(seed: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        crawl(CrawlConfig(seeds=[seed]), tmp_path)
    message = str(info.value)
    assert seed in message and "\n" not in message
    assert not (tmp_path / "index").exists()


def test_seed_file(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# my seeds\n\nHTTP://Example.COM:80/a/../b#x\n  https://example.org  \n")
    cfg = CrawlConfig(seeds=["http://example.com/b"], seed_file=str(seeds))
    assert load_seeds(cfg) == ["http://example.com/b", "https://example.org/"]

    seeds.write_text("https://ok.example/\nftp://bad.example/\n")
    with pytest.raises(DataError, match=r"seeds.txt:2: seed 'ftp://bad.example/'"):
        load_seeds(CrawlConfig(seed_file=str(seeds)))
    with pytest.raises(DataError, match="missing.txt: cannot read seed file"):
        load_seeds(CrawlConfig(seed_file=str(tmp_path / "missing.txt")))
    with pytest.raises(DataError, match="no seeds"):
        load_seeds(CrawlConfig())


def test_normalize_url_and_domains() -> None:
    assert normalize_url("HTTPS://Ex.com:443/a/./b/../c?q=1 2#frag") == "https://ex.com/a/c?q=1%202"
    assert normalize_url("http://ex.com") == "http://ex.com/"
    assert normalize_url("http://ex.com:8080//x") == "http://ex.com:8080/x"
    assert normalize_url("http://user:pw@ex.com/") == "http://ex.com/"
    assert normalize_url("mailto:a@ex.com") is None
    assert normalize_url("http://ex.com:99999/") is None
    assert domain_allowed("http://blog.ex.com/", ["ex.com"])
    assert not domain_allowed("http://notex.com/", ["ex.com"])
    assert domain_allowed("http://127.0.0.1:81/", ["127.0.0.1:81"])
    assert not domain_allowed("http://127.0.0.1:82/", ["127.0.0.1:81"])


def test_extract_links() -> None:
    html = b"""<html><head><base href="/docs/"></head><body>
        <a href="intro.html#part">a</a> <a href="#top">b</a> <a href="mailto:x@y.z">c</a>
        <a href="https://other.org/p">d</a> <map><area href="/area"></map></body></html>"""
    assert extract_links(html, "http://ex.com/index.html") == [
        "http://ex.com/docs/intro.html",
        "mailto:x@y.z",
        "https://other.org/p",
        "http://ex.com/area",
    ]
    assert extract_links(b"", "http://ex.com/") == []
    assert extract_links(b"\x00\xff garbage", "http://ex.com/") == []


def test_retry_after_parsing() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


# --- crawling -------------------------------------------------------------------------------


def test_bfs_within_domain_and_depth(serve, tmp_path: Path) -> None:
    site = serve({})
    site.routes.update(
        {
            "/": page(
                "/a",
                "/b",
                "/a#frag",
                site.url("/ext", "localhost"),
                "mailto:x@y.z",
                "javascript:void(0)",
                "ftp://127.0.0.1/f",
            ),  # fmt: skip
            "/a": page("/a1", "/a2", "/"),
            "/b": page("/b1"),
            "/a1": page("/deep"),
            "/a2": page(),
            "/b1": page(),
        }
    )
    progress: list[tuple[int, int]] = []
    result = crawl(config(site, max_depth=2), tmp_path, on_progress=lambda *a: progress.append(a))

    assert stored(tmp_path) == {"", "a", "b", "a1", "a2", "b1"}
    assert "/deep" not in site.paths() and "/ext" not in site.paths()
    assert sorted(site.paths()) == sorted(["/robots.txt", "/", "/a", "/b", "/a1", "/a2", "/b1"])
    rows = index(tmp_path)
    assert [row["depth"] for row in rows] == [0, 1, 1, 2, 2, 2]  # sorted by crawl order
    assert result.docs_out == 6 and result.docs_in == 6 and result.drops == {}
    assert result.extra["links_non_http"] == 3 and result.extra["links_off_domain"] == 1
    assert result.extra["seeds"] == [site.url()] and result.extra["bytes"] > 0
    assert progress[-1] == (6, 6)


def test_max_pages_keeps_the_first_pages_in_crawl_order(serve, tmp_path: Path) -> None:
    site = serve(
        {"/": page("/a", "/b"), "/a": page("/a1", "/a2"), "/b": page("/b1"), "/a1": page()}
    )
    for concurrency in (1, 8):
        out = tmp_path / str(concurrency)
        result = crawl(config(site, max_pages=4, concurrency=concurrency), out)
        assert result.docs_out == 4
        assert stored(out) == {"", "a", "b", "a1"}
    assert "/a2" not in site.paths() and "/b1" not in site.paths()


def test_robots_disallow_is_obeyed(serve, tmp_path: Path) -> None:
    site = serve(
        {
            "/robots.txt": (
                200,
                {"Content-Type": "text/plain"},
                b"User-agent: *\nDisallow: /private\n",
            ),  # fmt: skip
            "/": page("/private/x", "/private", "/public", "/go"),
            "/public": page(),
            "/go": (302, {"Location": "/private/y"}, b""),
        }
    )
    result = crawl(config(site), tmp_path)
    assert not [p for p in site.paths() if p.startswith("/private")]
    assert site.paths().count("/robots.txt") == 1
    assert outcome(tmp_path) == {
        "": None,
        "private/x": "robots_disallowed",
        "private": "robots_disallowed",
        "public": None,
        "go": "redirect",
        "private/y": "robots_disallowed",
    }
    assert result.drops == {"crawl_redirect": 1, "crawl_robots_disallowed": 3}


def test_robots_agent_group_and_5xx(serve, tmp_path: Path) -> None:
    rules = b"User-agent: llmforge-crawler\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    site = serve({"/robots.txt": (200, {}, rules), "/": page()})
    with pytest.raises(EmptyStageError, match="crawl_robots_disallowed=1"):
        crawl(config(site), tmp_path / "agent")
    assert site.paths() == ["/robots.txt"]
    assert crawl(config(site, obey_robots=False), tmp_path / "ignore").docs_out == 1

    # RFC 9309: a robots.txt that errors (5xx) means the whole site is off limits.
    site = serve({"/robots.txt": (500, {}, b"oops"), "/": page()})
    with pytest.raises(EmptyStageError):
        crawl(config(site, max_retries=1), tmp_path / "5xx")
    assert site.paths() == ["/robots.txt", "/robots.txt"]  # retried, then gave up
    assert outcome(tmp_path / "5xx") == {"": "robots_disallowed"}


def test_429_retry_after_is_honoured(serve, tmp_path: Path) -> None:
    def limited(call: int) -> Response:
        if call == 1:
            return 429, {"Retry-After": "1"}, b"slow down"
        return 200, {"Content-Type": "text/html"}, page().encode()

    site = serve({"/": limited})
    result = crawl(config(site, max_retries=2, max_retry_after_seconds=5), tmp_path)
    assert result.docs_out == 1 and outcome(tmp_path) == {"": None}
    times = [t for path, t in site.requests if path == "/"]
    assert len(times) == 2 and times[1] - times[0] >= 0.9


def test_5xx_retried_then_recorded(serve, tmp_path: Path) -> None:
    site = serve({"/": page("/e500", "/e503"), "/e500": (500, {}, b"x"), "/e503": (503, {}, b"x")})
    result = crawl(config(site, max_retries=2), tmp_path)
    assert site.calls["/e500"] == 3 and site.calls["/e503"] == 3
    assert outcome(tmp_path) == {"": None, "e500": "http_500", "e503": "http_503"}
    assert result.drops == {"crawl_http_500": 1, "crawl_http_503": 1}
    assert result.extra["retries"] == 4
    assert {row["status"] for row in index(tmp_path)} == {200, 500, 503}


def test_timeouts_are_retried(serve, tmp_path: Path) -> None:
    site = serve(
        {
            "/": page("/slow-once", "/slow"),
            "/slow-once": sleeping(1.0, first_only=True),
            "/slow": sleeping(1.0),
        }
    )
    crawl(config(site, timeout_seconds=0.3, max_retries=1), tmp_path)
    assert site.calls["/slow-once"] == 2 and site.calls["/slow"] == 2
    assert outcome(tmp_path) == {"": None, "slow-once": None, "slow": "timeout"}


def test_byte_cap_and_non_html(serve, tmp_path: Path) -> None:
    html = {"Content-Type": "text/html"}
    site = serve(
        {
            "/": page("/big", "/big-stream", "/data.json", "/img.png", "/no-type", "/x.xhtml"),
            "/big": (200, html, b"<p>" + b"x" * 5000),
            "/big-stream": (200, {**html, NO_LENGTH: "1"}, b"<p>" + b"x" * 5000),
            "/data.json": (200, {"Content-Type": "application/json"}, b"{}"),
            "/img.png": (200, {"Content-Type": "image/png"}, b"\x89PNG"),
            "/no-type": (200, {}, b"<p>hi</p>"),
            "/x.xhtml": (200, {"Content-Type": "application/xhtml+xml"}, b"<html/>"),
        }
    )
    result = crawl(config(site, max_response_bytes=1000), tmp_path)
    assert outcome(tmp_path) == {
        "": None,
        "big": "too_large",
        "big-stream": "too_large",
        "data.json": "not_html",
        "img.png": "not_html",
        "no-type": "not_html",
        "x.xhtml": None,
    }
    assert result.drops == {"crawl_not_html": 3, "crawl_too_large": 2}
    uris = {r.rec_headers["WARC-Target-URI"] for r in _records(tmp_path, "response")}
    assert uris == {site.url("/"), site.url("/x.xhtml")}


def test_redirects_followed_and_checked(serve, tmp_path: Path) -> None:
    chain = {f"/r{i}": (302, {"Location": f"/r{i + 1}"}, b"") for i in range(8)}
    site = serve({"/": page("/old", "/away", "/r0"), "/new": page(), **chain})
    site.routes["/old"] = (301, {"Location": site.url("/new")}, b"")
    site.routes["/away"] = (302, {"Location": site.url("/x", "localhost")}, b"")
    crawl(config(site), tmp_path)
    rows = {row["url"]: row for row in index(tmp_path)}
    assert rows[site.url("/old")]["status"] == 301 and rows[site.url("/old")]["error"] == "redirect"
    assert rows[site.url("/new")]["error"] is None and rows[site.url("/new")]["depth"] == 1
    assert rows[site.url("/x", "localhost")]["error"] == "off_domain"
    assert rows[site.url("/r6")]["error"] == "too_many_redirects"
    assert "/r6" not in site.paths() and "/r5" in site.paths()  # five hops followed
    assert stored(tmp_path) == {"", "new"}


def test_per_host_concurrency_and_delay(serve, tmp_path: Path) -> None:
    paths = [f"/p{i}" for i in range(8)]
    site = serve({"/": page(*paths), **{p: sleeping(0.1) for p in paths}})
    cfg = config(site, per_host_concurrency=2, concurrency=8)
    assert crawl(cfg, tmp_path / "a").docs_out == 9
    assert site.max_active == 2  # the limit was reached, never exceeded

    site = serve({"/": page(*paths), **{p: page() for p in paths}})
    crawl(config(site, per_host_concurrency=4, delay_seconds=0.05), tmp_path / "b")
    starts = sorted(t for _, t in site.requests)
    # 10 starts (robots.txt included) at least 0.05 s apart; arrival jitter allowed for.
    assert len(starts) == 10 and starts[-1] - starts[0] >= 0.4


def test_warc_output_and_index_offsets(serve, tmp_path: Path) -> None:
    zipped = gzip.compress(page("/from-gzip").encode())
    site = serve(
        {
            "/": page("/p1", "/p2", "/p3", "/zipped"),
            "/zipped": (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, zipped),
            **{p: page() for p in ("/p1", "/p2", "/p3", "/from-gzip")},
        }
    )
    result = crawl(config(site, records_per_warc=2), tmp_path)
    assert result.docs_out == 6  # the link inside the gzipped page was followed too
    files = ["warc/crawl-00000.warc.gz", "warc/crawl-00001.warc.gz", "warc/crawl-00002.warc.gz"]
    assert result.extra["warc_files"] == files
    assert sorted(p.name for p in (tmp_path / "warc").iterdir()) == [Path(f).name for f in files]

    for name in files:
        with open(tmp_path / name, "rb") as f:
            types = [r.rec_type for r in ArchiveIterator(f)]
        assert types[0] == "warcinfo" and types[1:] == ["request", "response"] * (len(types) // 2)

    for row in index(tmp_path):
        with open(tmp_path / row["warc_file"], "rb") as f:
            f.seek(row["offset"])
            record = next(iter(ArchiveIterator(f)))
            assert record.rec_type == "response"
            assert record.rec_headers["WARC-Target-URI"] == row["url"]
            assert record.rec_headers["WARC-IP-Address"] == "127.0.0.1"
            assert record.http_headers.get_statuscode() == "200"
            assert b"Some text." in record.content_stream().read()  # gzip undone by warcio
        assert row["fetched_at"].tzinfo is not None and row["elapsed_ms"] >= 0


def _records(out: Path, rec_type: str) -> list:
    records = []
    for path in sorted((out / "warc").glob("*.warc.gz")):
        with open(path, "rb") as f:
            records += [r for r in ArchiveIterator(f) if r.rec_type == rec_type]
    return records
