"""Crawl stage: breadth-first from seed URLs, within allowed domains, into WARC files.

    from pipeline.crawl import CrawlConfig, crawl
    crawl(CrawlConfig(seeds=["https://example.com/"], max_pages=50), Path("out"))

Writes `out/warc/crawl-NNNNN.warc.gz` (request + response per stored HTML page) and
`out/index/part-00000.parquet` (one row per URL tried, with its outcome). The crawl goes one
depth level at a time and orders each level by discovery, interleaving hosts, so the same site
gives the same pages whatever the timing. Fetching details live in `crawl_fetch.py`, URL
handling in `crawl_urls.py`, output in `crawl_warc.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from pipeline.crawl_fetch import Fetched, Fetcher
from pipeline.crawl_urls import charset_of, domain_allowed, extract_links, is_http, normalize_url
from pipeline.crawl_warc import WarcSink, index_row, write_index
from pipeline.documents import DataError
from pipeline.stage import EmptyStageError, ParallelMap, StageResult, serial_map

# RFC 9110 §15.4 sets no number; RFC 2068 §10.3 recommended at most 5 and RFC 9309 asks for
# 5 on robots.txt. Googlebot follows up to 10; 5 keeps redirect chains short and cheap.
MAX_REDIRECTS = 5
PROGRESS_EVERY_SECONDS = 1.0  # on_progress may publish to a server: don't call it per page

ProgressFn = Callable[[int, int], None]


class CrawlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seeds: list[str] = []
    seed_file: str | None = None  # one URL per line, "#" starts a comment line
    allowed_domains: list[str] = []  # empty: the seeds' hosts; subdomains included
    # HTML pages stored: ~30 MB of HTML at the ~30 kB median page, ~17 min on one host at the
    # 1 s delay below. A first crawl to look at, not a corpus; raise it per run.
    max_pages: int = Field(default=1000, ge=1)
    # Link hops from the seeds (depth 0). Scrapy's DEPTH_LIMIT defaults to unlimited; 3 keeps
    # a crawl near its seeds' topics while reaching most pages of a typical small site.
    max_depth: int = Field(default=3, ge=0)
    # One request a second is light load for any site. Unattended crawlers are slower still
    # (Nutch fetcher.server.delay=5 s; Heritrix >= 3 s, 5x fetch time); robots.txt
    # Crawl-delay raises it per host.
    delay_seconds: float = Field(default=1.0, ge=0)  # min interval between starts, per host
    per_host_concurrency: int = Field(default=2, ge=1)  # RFC 2616 §8.1.4's historic limit
    concurrency: int = Field(default=16, ge=1)  # Scrapy's CONCURRENT_REQUESTS default
    timeout_seconds: float = Field(default=10, gt=0)  # whole attempt, connect to last byte
    max_retries: int = Field(default=3, ge=0)  # retries after the first attempt
    backoff_seconds: float = Field(default=0.5, ge=0)  # first retry waits ~0.5 s, then x2
    # Cap on any wait a server asks for (Retry-After, robots.txt Crawl-delay).
    max_retry_after_seconds: float = Field(default=60, ge=0)
    # Bytes on the wire. Googlebot reads the first 15 MB (uncompressed) of an HTML file and
    # the median HTML file is ~30 kB (Google Search Central blog, 2022-06-28); pages past
    # 5 MB are rarely prose. Longer ones are recorded as too_large, not stored.
    max_response_bytes: int = Field(default=5_000_000, ge=1)
    user_agent: str = "llmforge-crawler/0.1"
    obey_robots: bool = True
    # Pages per WARC file: ~1000 pages is tens of MB gzipped, one extract shard each; the
    # WARC 1.1 spec (Annex C) recommends files under 1 GB.
    records_per_warc: int = Field(default=1000, ge=1)


def load_seeds(config: CrawlConfig) -> list[str]:
    """Seeds from `seeds` and `seed_file`, validated and normalized, duplicates dropped."""
    found: list[tuple[str, str]] = [(url, f"seed {url!r}") for url in config.seeds]
    if config.seed_file:
        try:
            lines = Path(config.seed_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise DataError(f"{config.seed_file}: cannot read seed file ({reason})") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                found.append((line, f"{config.seed_file}:{number}: seed {line!r}"))
    seeds: list[str] = []
    for url, where in found:
        normalized = normalize_url(url) if is_http(url) else None
        if normalized is None:
            raise DataError(f"{where} is not an http(s) URL")
        if normalized not in seeds:
            seeds.append(normalized)
    if not seeds:
        raise DataError("crawl: no seeds (set crawl.seeds or crawl.seed_file)")
    return seeds


def allowed_domains(config: CrawlConfig, seeds: list[str]) -> list[str]:
    domains = config.allowed_domains or [urlsplit(url).hostname or "" for url in seeds]
    return sorted({d.strip().lower().lstrip(".").removeprefix("*.") for d in domains} - {""})


def interleave_hosts(urls: list[str]) -> list[str]:
    """Round-robin over hosts (in order of first appearance), keeping each host's order, so
    one big host does not hold every concurrency slot while the others idle."""
    by_host: dict[str, list[str]] = {}
    for url in urls:
        by_host.setdefault(urlsplit(url).netloc, []).append(url)
    queues = list(by_host.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


class Crawler:
    """One crawl's state; `run()` does the whole breadth-first walk."""

    def __init__(self, config: CrawlConfig, out_dir: Path, on_progress: ProgressFn | None):
        self.config = config
        self.out_dir = out_dir
        self.seeds = load_seeds(config)
        self.domains = allowed_domains(config, self.seeds)
        self.on_progress = on_progress
        self.seen: set[str] = set(self.seeds)
        self.rows: list[tuple[int, int, int, dict[str, Any]]] = []  # (depth, pos, hop, row)
        self.links: dict[int, list[str]] = {}  # level position → links of that page
        self.link_counts: Counter[str] = Counter()
        self.stored = 0
        self.stored_bytes = 0
        self._last_progress = 0.0
        self.fetcher: Fetcher  # needs the running loop's HTTP client: made in run()
        info = {
            "software": config.user_agent,
            "format": "WARC File Format 1.1",
            "robots": "obey" if config.obey_robots else "ignore",
        }
        self.sink = WarcSink(out_dir, config.records_per_warc, info)

    async def run(self) -> None:
        cfg = self.config
        limits = httpx.Limits(max_connections=cfg.concurrency)
        headers = {
            "User-Agent": cfg.user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            "Accept-Encoding": "gzip, deflate",  # what warcio can decode when reading back
        }
        # trust_env=False: no proxies or .netrc picked up from the environment, so a crawl
        # behaves the same on every machine.
        async with httpx.AsyncClient(
            headers=headers, limits=limits, timeout=cfg.timeout_seconds, trust_env=False
        ) as client:
            self.fetcher = Fetcher(cfg, client)
            level = interleave_hosts(self.seeds)
            for depth in range(cfg.max_depth + 1):
                if not level or self.stored >= cfg.max_pages:
                    break
                self.links = {}
                await self._crawl_level(level, depth)
                found = []
                for pos in range(len(level)):
                    for link in self.links.get(pos, []):
                        if link not in self.seen:
                            self.seen.add(link)
                            found.append(link)
                level = interleave_hosts(found)

    async def _crawl_level(self, level: list[str], depth: int) -> None:
        """Visit a level in order; never more tasks in flight than could still be stored, so
        the pages kept are the first `max_pages` in crawl order whatever the timing."""
        cfg = self.config
        pending: set[asyncio.Task[None]] = set()
        next_pos = 0
        while True:
            while (
                next_pos < len(level)
                and len(pending) < cfg.concurrency
                and self.stored + len(pending) < cfg.max_pages
            ):
                task = asyncio.create_task(self._visit(level[next_pos], depth, next_pos))
                pending.add(task)
                next_pos += 1
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a bug in a visit surfaces here; fetch failures are rows
            self._progress()

    async def _visit(self, url: str, depth: int, pos: int) -> None:
        """Fetch one URL, following redirects ourselves so each hop is checked and recorded."""
        fetcher = self.fetcher
        for hop in range(MAX_REDIRECTS + 2):
            if hop > MAX_REDIRECTS:
                self._row(depth, pos, hop, url, "too_many_redirects")
                return
            if not domain_allowed(url, self.domains):
                self._row(depth, pos, hop, url, "off_domain")
                return
            if not await fetcher.allowed(url):
                self._row(depth, pos, hop, url, "robots_disallowed")
                return
            fetched = await fetcher.fetch(url)
            if fetched.error != "redirect":
                break
            self.rows.append((depth, pos, hop, index_row(fetched, depth)))
            target = normalize_url(urljoin(url, fetched.location or ""))
            if target is None:
                self._row(depth, pos, hop + 1, fetched.location or "", "bad_redirect")
                return
            if target in self.seen:  # queued or fetched elsewhere: one copy is enough
                return
            self.seen.add(target)
            url = target
        if fetched.error is not None or self.stored >= self.config.max_pages:
            self.rows.append((depth, pos, hop, index_row(fetched, depth)))
            return
        warc = self.sink.write(fetched)
        self.stored += 1
        self.stored_bytes += fetched.nbytes
        self.rows.append((depth, pos, hop, index_row(fetched, depth, warc)))
        if depth < self.config.max_depth:
            html = fetched.decoded_body(self.config.max_response_bytes)
            self.links[pos] = self._keep_links(
                extract_links(html, url, charset_of(fetched.header("content-type")))
            )

    def _keep_links(self, links: list[str]) -> list[str]:
        kept = []
        for link in links:
            normalized = normalize_url(link) if is_http(link) else None
            if normalized is None:
                self.link_counts["links_non_http"] += 1
            elif not domain_allowed(normalized, self.domains):
                self.link_counts["links_off_domain"] += 1
            else:
                self.link_counts["links_followable"] += 1
                kept.append(normalized)
        return kept

    def _row(self, depth: int, pos: int, hop: int, url: str, error: str) -> None:
        """An outcome with no request made (robots, off-domain, redirect limit)."""
        now = datetime.now(UTC).replace(microsecond=0)
        fetched = Fetched(url=url, fetched_at=now, error=error)
        self.rows.append((depth, pos, hop, index_row(fetched, depth)))

    def _progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress and (final or now - self._last_progress >= PROGRESS_EVERY_SECONDS):
            self._last_progress = now
            self.on_progress(self.stored, len(self.seen))

    def finish(self) -> StageResult:
        warc_files = self.sink.close()
        rows = [row for *_, row in sorted(self.rows, key=lambda r: r[:3])]
        write_index(rows, self.out_dir)
        self._progress(final=True)
        drops = Counter(f"crawl_{row['error']}" for row in rows if row["error"])
        extra = {
            "warc_files": warc_files,
            "bytes": self.stored_bytes,
            "seeds": self.seeds,
            "allowed_domains": self.domains,
            **dict(sorted((self.fetcher.counts + self.link_counts).items())),
        }
        return StageResult(
            docs_in=len(rows), docs_out=self.stored, drops=dict(sorted(drops.items())), extra=extra
        )


def crawl(config: CrawlConfig, out_dir: Path, on_progress: ProgressFn | None = None) -> StageResult:
    """Crawl into `out_dir`; `on_progress(pages_stored, urls_seen)` is called now and then.

    Raises DataError for bad seeds and EmptyStageError (after writing the index, which says
    why) when no page was stored.
    """
    crawler = Crawler(config, Path(out_dir), on_progress)
    _run_sync(crawler.run())
    result = crawler.finish()
    if result.docs_out == 0:
        raise EmptyStageError("crawl", result.drops)
    return result


def run(
    config: CrawlConfig, out_dir: Path, pmap: ParallelMap = serial_map, **kwargs: Any
) -> StageResult:
    """The uniform stage entry point; a crawl is one asyncio loop, so `pmap` is unused."""
    return crawl(config, out_dir, **kwargs)


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, or in a fresh thread when this one already runs a loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()
