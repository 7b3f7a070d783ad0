"""One polite HTTP fetch: per-host pacing, retries with backoff, a byte cap, robots.txt.

`Fetcher.fetch(url)` makes at most `1 + max_retries` requests and always returns a `Fetched`
(failures are data, not exceptions). It never follows redirects itself: the crawler does, so
each target is checked against the allowed domains, ports, addresses and robots.txt and
recorded. The byte cap counts decoded bytes as they arrive (`crawl_decode.py`); robots.txt is
parsed by protego (RFC 9309: wildcards, `$`, longest match, Crawl-delay).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx
from protego import Protego

from pipeline.crawl.decode import BodyDecoder, DecodeError, decode_head
from pipeline.crawl.guard import BlockedAddress
from pipeline.crawl.urls import host_key, port_allowed

if TYPE_CHECKING:
    from pipeline.crawl.crawler import CrawlConfig

HTML_TYPES = ("text/html", "application/xhtml+xml")
RETRYABLE_ERRORS = ("timeout", "connect_error", "network_error")
# RFC 9309 §2.5: crawlers must parse at least the first 500 KiB of a robots.txt.
ROBOTS_MAX_BYTES = 500 * 1024
# RFC 9309 §2.3.1.2: follow at least five consecutive redirects for robots.txt.
ROBOTS_MAX_REDIRECTS = 5


@dataclass
class Fetched:
    """What one URL gave after retries: a page, a redirect, or an error code."""

    url: str
    fetched_at: datetime
    elapsed_ms: int = 0
    status: int | None = None
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    body: bytes | None = None  # as sent on the wire (still gzip if Content-Encoding says so)
    nbytes: int = 0  # body bytes received
    decoded_bytes: int = 0  # body bytes after undoing Content-Encoding (counted, not kept)
    ip: str | None = None
    location: str | None = None  # Location header of a 3xx
    error: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def decoded_body(self, limit: int) -> bytes:
        """The body with Content-Encoding (gzip, deflate) undone, at most `limit` bytes."""
        return decode_head(self.body or b"", self.header("content-encoding"), limit)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or HTTP-date, RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(base: float, attempt: int, key: str) -> float:
    """Exponential backoff with "equal jitter" (AWS Architecture Blog, "Exponential Backoff
    and Jitter", 2015), seeded by URL and attempt so a re-run waits the same."""
    delay = base * 2**attempt
    return delay / 2 + random.Random(f"{key}#{attempt}").uniform(0, delay / 2)


class HostGate:
    """Politeness for one host: at most `concurrency` requests in flight, starts spaced by
    `delay` seconds, and a pause when the host asks for one (Retry-After). A request waiting
    for its host's clock holds none of the crawl's shared connection slots, so one host's
    wait never delays another host."""

    def __init__(self, concurrency: int, delay: float):
        self.semaphore = asyncio.Semaphore(concurrency)
        self.delay = delay
        self.next_start = 0.0

    def pause(self, seconds: float) -> None:
        self.next_start = max(self.next_start, time.monotonic() + seconds)

    @asynccontextmanager
    async def slot(self, shared: asyncio.Semaphore) -> AsyncIterator[None]:
        async with self.semaphore:
            while True:
                while (wait := self.next_start - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await shared.acquire()
                if self.next_start <= time.monotonic():
                    break
                shared.release()  # the clock moved while we queued for a slot: wait again
            self.next_start = time.monotonic() + self.delay
            try:
                yield
            finally:
                shared.release()


@dataclass
class Robots:
    """A host's robots.txt: parsed rules, or (`rules` None) everything allowed or not."""

    rules: Protego | None = None
    allow_all: bool = True

    def can_fetch(self, url: str, agent: str) -> bool:
        return self.allow_all if self.rules is None else self.rules.can_fetch(url, agent)


def product_token(user_agent: str) -> str:
    """RFC 9309 §2.2.1: robots.txt groups name a crawler by its product token, the leading
    letters, "_" and "-" of its user agent ("llmforge-crawler" of "llmforge-crawler/0.1")."""
    match = re.match(r"[A-Za-z_-]+", user_agent)
    return match.group(0) if match else user_agent


class Fetcher:
    def __init__(self, config: CrawlConfig, client: httpx.AsyncClient, ports: set[int]):
        self.config = config
        self.client = client
        self.ports = ports  # besides the default ones: for robots.txt redirects
        self.agent = product_token(config.user_agent)
        self.shared = asyncio.Semaphore(config.concurrency)  # requests in flight, all hosts
        self.gates: dict[str, HostGate] = {}
        self._robots: dict[str, asyncio.Task[Robots]] = {}
        self.counts: Counter[str] = Counter()  # requests, retries, robots outcomes

    def gate(self, url: str) -> HostGate:
        key = host_key(url)
        if key not in self.gates:
            cfg = self.config
            self.gates[key] = HostGate(cfg.per_host_concurrency, cfg.delay_seconds)
        return self.gates[key]

    async def fetch(self, url: str, html_only: bool = True, truncate: bool = False) -> Fetched:
        """GET `url` with retries on timeouts, connection errors, 429 and 5xx."""
        cfg = self.config
        gate = self.gate(url)
        attempt = 0
        while True:
            async with gate.slot(self.shared):
                result = await self._attempt(url, html_only, truncate)
            self.counts["requests"] += 1
            status = result.status or 0
            retryable = result.error in RETRYABLE_ERRORS or status == 429 or status >= 500
            if not retryable or attempt >= cfg.max_retries:
                return result
            wait = retry_after_seconds(result.header("retry-after"), datetime.now(UTC))
            if status in (429, 503) and wait is not None:
                gate.pause(min(wait, cfg.max_retry_after_seconds))  # the whole host waits
            else:
                await asyncio.sleep(backoff_delay(cfg.backoff_seconds, attempt, url))
            attempt += 1
            self.counts["retries"] += 1

    async def _attempt(self, url: str, html_only: bool, truncate: bool) -> Fetched:
        cfg = self.config
        cap = ROBOTS_MAX_BYTES if truncate else cfg.max_response_bytes
        result = Fetched(url=url, fetched_at=datetime.now(UTC).replace(microsecond=0))
        started = time.monotonic()
        try:
            # A deadline on the whole attempt: httpx's timeout is per read, which a server
            # trickling one byte a second would never trip.
            async with (
                asyncio.timeout(cfg.timeout_seconds),
                self.client.stream("GET", url) as response,
            ):
                _read_head(result, response)
                if 300 <= response.status_code < 400 and result.location:
                    result.error = "redirect"
                elif not 200 <= response.status_code < 300:
                    result.error = f"http_{response.status_code}"
                elif html_only and result.content_type not in HTML_TYPES:
                    result.error = "not_html"
                else:
                    await _read_body(result, response, cap, truncate)
        except BlockedAddress:
            result.error = "blocked_address"
        except (TimeoutError, httpx.TimeoutException):
            result.error = "timeout"
        except httpx.ConnectError:
            result.error = "connect_error"
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            result.error = "invalid_url"
        except httpx.TransportError:  # reset, protocol error, ...
            result.error = "network_error"
        result.elapsed_ms = round((time.monotonic() - started) * 1000)
        return result

    async def allowed(self, url: str) -> bool:
        """robots.txt says `url` may be fetched (fetched once per host, then cached)."""
        if not self.config.obey_robots:
            return True
        key = host_key(url)
        if key not in self._robots:
            self._robots[key] = asyncio.create_task(self._load_robots(key))
        robots = await self._robots[key]
        return robots.can_fetch(url, self.agent)

    async def _load_robots(self, origin: str) -> Robots:
        url = origin + "/robots.txt"
        for _ in range(ROBOTS_MAX_REDIRECTS + 1):
            fetched = await self.fetch(url, html_only=False, truncate=True)
            if not (fetched.error == "redirect" and fetched.location):
                break
            url = str(httpx.URL(url).join(fetched.location))
            if not port_allowed(url, self.ports):  # unreachable for us: disallow, below
                fetched.error = "blocked_port"
                break
        status = fetched.status or 0
        if fetched.error is None:
            text = fetched.decoded_body(ROBOTS_MAX_BYTES).decode("utf-8", errors="replace")
            robots = Robots(Protego.parse(text))
            outcome = "ok"
            delay = robots.rules.crawl_delay(self.agent) if robots.rules else None
            if delay:  # honour Crawl-delay, capped like any other server-asked wait
                gate = self.gate(origin)
                cap = self.config.max_retry_after_seconds
                gate.delay = max(gate.delay, min(float(delay), cap))
        elif 400 <= status < 500 and status != 429:
            # RFC 9309 §2.3.1.3: "unavailable" (4xx) means no restrictions.
            robots, outcome = Robots(allow_all=True), "unavailable"
        elif fetched.error == "redirect":
            # §2.3.1.2: more than five redirects → unavailable
            robots, outcome = Robots(allow_all=True), "unavailable"
        else:
            # §2.3.1.4: "unreachable" (5xx, network errors) means disallow everything. 429 is
            # treated like 5xx, as Google's crawler does; so is a redirect to an address or
            # port we refuse, or a body that cannot be decoded.
            robots, outcome = Robots(allow_all=False), "unreachable"
        self.counts[f"robots_{outcome}"] += 1
        return robots


def _read_head(result: Fetched, response: httpx.Response) -> None:
    result.status = response.status_code
    result.reason = response.reason_phrase
    result.http_version = response.http_version
    result.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    result.request_headers = [
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.request.headers.raw
    ]
    content_type = response.headers.get("content-type")
    if content_type:
        result.content_type = content_type.split(";", 1)[0].strip().lower()
    result.location = response.headers.get("location")
    stream = response.extensions.get("network_stream")
    if stream is not None:
        address = stream.get_extra_info("server_addr")
        result.ip = address[0] if address else None


async def _read_body(result: Fetched, response: httpx.Response, cap: int, truncate: bool) -> None:
    """Stream the raw body; past `cap` bytes, received or decoded, stop (error too_large, or
    keep the head if `truncate`). Raw, not decoded, so the WARC record holds what the server
    sent; decoded only to count, a slice at a time, so a compression bomb never inflates."""
    length = response.headers.get("content-length", "")
    if not truncate and length.isdigit() and int(length) > cap:
        result.error = "too_large"
        return
    try:
        decoder = BodyDecoder(response.headers.get("content-encoding"))
        chunks: list[bytes] = []
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            result.nbytes += len(chunk)
            for piece in decoder.feed(chunk):
                result.decoded_bytes += len(piece)
                if result.decoded_bytes > cap:
                    break
            if result.nbytes > cap or result.decoded_bytes > cap:
                if not truncate:
                    result.error = "too_large"
                    return
                break
    except DecodeError:
        result.error = "bad_encoding"
        return
    result.body = b"".join(chunks)[:cap]
    result.nbytes = len(result.body)
