"""Crawl stage: breadth-first from seed URLs, within allowed domains, into WARC files.

    from pipeline.crawl.crawler import CrawlConfig, crawl
    crawl(CrawlConfig(seeds=["https://example.com/"], max_pages=50), Path("out"))

`out` is a local folder or a URL (`store.fs.Folder`); the crawl runs where it is called. Writes
`out/warc/crawl-NNNNN.warc.gz` (request + response per stored HTML page) and
`out/index/part-00000.parquet` (one row per URL tried, with its outcome, in crawl order).
Each host has its own queue, walked one depth level at a time, and its own politeness clock,
so a slow or rate-limited host never holds up the others, and one site gives the same pages
whatever the timing. Only public addresses are fetched (`guard.py`). Fetching details live
in `fetch.py`, URL handling in `urls.py`, output in `warc_writer.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from pipeline.crawl.fetch import Fetched, Fetcher
from pipeline.crawl.guard import GuardedTransport, Resolver
from pipeline.crawl.urls import (
    charset_of,
    domain_allowed,
    extract_links,
    host_key,
    is_http,
    normalize_url,
    port_allowed,
)
from pipeline.crawl.warc_writer import WarcSink, index_row, write_index
from pipeline.errors import DataError, EmptyStageError
from pipeline.stage import StageResult
from pipeline.store.fs import Folder, as_folder

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
    # Body bytes, counted both as received and as decoded (gzip undone), so a compression
    # bomb stops here. Googlebot reads the first 15 MB (uncompressed) of an HTML file and
    # the median HTML file is ~30 kB (Google Search Central blog, 2022-06-28); pages past
    # 5 MB are rarely prose. Longer ones are recorded as too_large, not stored.
    max_response_bytes: int = Field(default=5_000_000, ge=1)
    user_agent: str = "llmforge-crawler/0.1"
    obey_robots: bool = True
    # Off by default: loopback, private, link-local (cloud metadata), CGNAT, unique-local,
    # multicast and reserved addresses are refused (crawl_blocked_address). Set it only to
    # crawl a server of your own on such an address (the demo's sample site on 127.0.0.1).
    allow_private_addresses: bool = False
    # Ports fetched besides each scheme's default (80, 443) and the seeds' own ports; links
    # to any other port are recorded as crawl_blocked_port.
    allowed_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
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


@dataclass(order=True)
class Item:
    """A URL to visit. Items sort in crawl order: depth, then the link positions that led
    from a seed to it, which is breadth-first order whatever the timing."""

    depth: int
    order: tuple[int, ...]
    url: str = field(compare=False)


class HostQueue:
    """One host's frontier, walked a level at a time: the links of a level's pages wait until
    the host's level is over, so the next level's order never depends on which page
    finished first. Hosts move through their levels independently."""

    def __init__(self) -> None:
        self.pending: list[Item] = []  # a heap, in crawl order
        self.level = 0
        self.in_flight = 0
        self.done: list[tuple[Item, list[str]]] = []  # this level's pages and their links

    def _ready(self) -> bool:
        return bool(self.pending) and self.pending[0].depth <= self.level

    def pop_ready(self) -> Item | None:
        return heapq.heappop(self.pending) if self._ready() else None

    def level_over(self) -> bool:
        return self.in_flight == 0 and not self._ready()


class Crawler:
    """One crawl's state; `run()` does the whole walk."""

    def __init__(
        self,
        config: CrawlConfig,
        out: Folder,
        on_progress: ProgressFn | None,
        resolve: Resolver | None = None,
    ):
        self.config = config
        self.out = out
        self.seeds = load_seeds(config)
        self.domains = allowed_domains(config, self.seeds)
        # Ports allowed besides each scheme's default: the seeds' own, and those configured.
        self.ports = {p for s in self.seeds if (p := urlsplit(s).port)} | set(config.allowed_ports)
        self.on_progress = on_progress
        self.resolve = resolve
        self.seen: set[str] = set(self.seeds)
        self.queues: dict[str, HostQueue] = {}  # host_key → queue, in order of first sight
        self.rows: list[tuple[int, tuple[int, ...], int, dict[str, Any]]] = []
        self.link_counts: Counter[str] = Counter()
        self.stored = 0
        self.stored_bytes = 0
        self._last_progress = 0.0
        # Need the running loop: made in run().
        self.fetcher: Fetcher
        self.guard: GuardedTransport
        info = {
            "software": config.user_agent,
            "format": "WARC File Format 1.1",
            "robots": "obey" if config.obey_robots else "ignore",
        }
        self.sink = WarcSink(out, config.records_per_warc, info)

    async def run(self) -> None:
        cfg = self.config
        headers = {
            "User-Agent": cfg.user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
            "Accept-Encoding": "gzip, deflate",  # what crawl_decode and warcio can decode
        }
        self.guard = GuardedTransport(
            allow_private=cfg.allow_private_addresses,
            resolve=self.resolve,
            limits=httpx.Limits(max_connections=cfg.concurrency),
        )
        # trust_env=False: no proxies or .netrc picked up from the environment, so a crawl
        # behaves the same on every machine (and a proxy cannot bypass the address guard).
        async with httpx.AsyncClient(
            headers=headers, transport=self.guard, timeout=cfg.timeout_seconds, trust_env=False
        ) as client:
            self.fetcher = Fetcher(cfg, client, self.ports)
            for number, seed in enumerate(self.seeds):
                self._enqueue(Item(0, (number,), seed))
            await self._schedule()

    def _enqueue(self, item: Item) -> None:
        queue = self.queues.setdefault(host_key(item.url), HostQueue())
        heapq.heappush(queue.pending, item)

    async def _schedule(self) -> None:
        """Start every visit a host may start, until no host has anything left to do."""
        tasks: dict[asyncio.Task[None], HostQueue] = {}
        while True:
            self._start_ready(tasks)
            if not tasks:
                return
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                tasks.pop(task).in_flight -= 1
                task.result()  # a bug in a visit surfaces here; fetch failures are rows
            self._progress()

    def _start_ready(self, tasks: dict[asyncio.Task[None], HostQueue]) -> None:
        """Close finished levels and start ready items, host by host. Never more visits in
        flight than could still be stored, so the pages kept are the first `max_pages` in
        crawl order (for one host, whatever the timing)."""
        cfg = self.config
        changed = True
        while changed:
            changed = False
            for queue in list(self.queues.values()):
                if queue.level_over():
                    if queue.done:
                        self._end_level(queue)  # may queue links on any host
                        changed = True
                    if queue.pending and queue.pending[0].depth > queue.level:
                        queue.level = queue.pending[0].depth
                        changed = True
                while (
                    queue.in_flight < cfg.per_host_concurrency
                    and self.stored + len(tasks) < cfg.max_pages
                    and (item := queue.pop_ready()) is not None
                ):
                    tasks[asyncio.create_task(self._visit(item))] = queue
                    queue.in_flight += 1

    def _end_level(self, queue: HostQueue) -> None:
        for parent, links in sorted(queue.done, key=lambda done: done[0]):
            for position, link in enumerate(links):
                if link not in self.seen:
                    self.seen.add(link)
                    self._enqueue(Item(parent.depth + 1, (*parent.order, position), link))
        queue.done = []

    async def _refusal(self, url: str) -> str | None:
        """Why `url` must not be fetched, checked before any request to its host."""
        if not domain_allowed(url, self.domains):
            return "off_domain"
        if not port_allowed(url, self.ports):
            return "blocked_port"
        if await self.guard.check(url) is not None:
            return "blocked_address"
        if not await self.fetcher.allowed(url):
            return "robots_disallowed"
        return None

    async def _visit(self, item: Item) -> None:
        """Fetch one URL, following redirects ourselves so each hop is checked and recorded."""
        url = item.url
        chain = [url]
        for hop in range(MAX_REDIRECTS + 2):
            if hop > MAX_REDIRECTS:
                self._row(item, hop, url, "too_many_redirects")
                return
            refusal = await self._refusal(url)
            if refusal is not None:
                self._row(item, hop, url, refusal)
                return
            fetched = await self.fetcher.fetch(url)
            if fetched.error != "redirect":
                break
            target = normalize_url(urljoin(url, fetched.location or ""))
            if target in chain:  # back to a URL of this chain: it would never end
                fetched.error = "redirect_loop"
            self.rows.append((item.depth, item.order, hop, index_row(fetched, item.depth)))
            if target is None:
                self._row(item, hop + 1, fetched.location or "", "bad_redirect")
                return
            if target in chain or target in self.seen:  # seen: queued or fetched elsewhere
                return
            self.seen.add(target)
            chain.append(target)
            url = target
        depth = item.depth
        if fetched.error is not None or self.stored >= self.config.max_pages:
            self.rows.append((depth, item.order, hop, index_row(fetched, depth)))
            return
        warc = self.sink.write(fetched)
        self.stored += 1
        self.stored_bytes += fetched.nbytes
        self.rows.append((depth, item.order, hop, index_row(fetched, depth, warc)))
        if depth < self.config.max_depth:
            html = fetched.decoded_body(self.config.max_response_bytes)
            links = extract_links(html, url, charset_of(fetched.header("content-type")))
            self.queues[host_key(item.url)].done.append((item, self._keep_links(links)))

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

    def _row(self, item: Item, hop: int, url: str, error: str) -> None:
        """An outcome with no request made (robots, off-domain, blocked, redirect limit)."""
        now = datetime.now(UTC).replace(microsecond=0)
        fetched = Fetched(url=url, fetched_at=now, error=error)
        self.rows.append((item.depth, item.order, hop, index_row(fetched, item.depth)))

    def _progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress and (final or now - self._last_progress >= PROGRESS_EVERY_SECONDS):
            self._last_progress = now
            self.on_progress(self.stored, len(self.seen))

    def finish(self) -> StageResult:
        warc_files = self.sink.close()
        rows = [row for *_, row in sorted(self.rows, key=lambda r: r[:3])]
        write_index(rows, self.out)
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


def crawl(
    config: CrawlConfig,
    out: Folder | Path | str,
    on_progress: ProgressFn | None = None,
    resolve: Resolver | None = None,
) -> StageResult:
    """Crawl into `out` (a folder or URL); `on_progress(pages_stored, urls_seen)` is called now
    and then; `resolve(host, port)` replaces the system resolver (tests map names with it).

    Raises DataError for bad seeds and EmptyStageError (after writing the index, which says
    why) when no page was stored.
    """
    crawler = Crawler(config, as_folder(out), on_progress, resolve)
    try:
        _run_sync(crawler.run())
    except BaseException as exc:
        crawler.sink.abort(exc)  # the WARC file being written is not published
        raise
    result = crawler.finish()
    if result.docs_out == 0:
        raise EmptyStageError("crawl", result.drops)
    return result


def _run_sync(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, or in a fresh thread when this one already runs a loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()
