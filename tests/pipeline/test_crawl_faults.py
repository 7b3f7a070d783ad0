"""The crawler against a hostile web: addresses it must refuse, compression bombs, RFC 9309
robots.txt, a rate-limiting host among polite ones, redirect loops, and servers that stall,
trickle or lie. Every server is `fault_server.Site` on 127.0.0.1."""

from __future__ import annotations

import gzip
import ipaddress
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.crawl import CrawlConfig, crawl
from pipeline.stage import EmptyStageError
from tests.pipeline.fault_server import (
    HTML,
    NO_LENGTH,
    Response,
    Site,
    gzip_bomb,
    page,
    serve_sites,
    trickle,
)

serve = pytest.fixture(serve_sites, name="serve")
FAST = {"delay_seconds": 0, "backoff_seconds": 0.01, "timeout_seconds": 5, "max_retries": 1}
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


# --- addresses and ports --------------------------------------------------------------------

BLOCKED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6 (unique-local)
    "ff02::1",
    "fec0::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2001:db8::1",  # documentation
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_blocked(address: str) -> None:
    from pipeline.crawl_guard import is_blocked, parse_ip

    assert is_blocked(parse_ip(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    from pipeline.crawl_guard import is_blocked

    assert not is_blocked(ipaddress.ip_address(address))


def test_a_name_resolving_to_loopback_is_refused_by_default(serve, tmp_path: Path) -> None:
    site = serve({"/": page("/a"), "/a": page()})
    seed = site.url("/", "localhost")  # /etc/hosts: localhost is 127.0.0.1
    with pytest.raises(EmptyStageError, match="crawl_blocked_address=1"):
        crawl(config(seed), tmp_path / "default")
    assert site.requests == []  # not even robots.txt
    assert rows(tmp_path / "default")[0]["url"] == seed
    assert rows(tmp_path / "default")[0]["error"] == "blocked_address"

    result = crawl(config(seed, allow_private_addresses=True), tmp_path / "opt-in")
    assert result.docs_out == 2 and "/a" in site.paths()


def test_every_hop_is_checked_and_the_checked_address_is_the_one_used(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver hook maps test names; 127.0.0.1 plays a public address here. Redirects and
    links to metadata, private and loopback addresses are refused. The name `www.site.test`
    resolves to 127.0.0.1 once and to 127.0.0.2 (nobody listens there) afterwards, as a DNS
    rebinding server would answer: every request still goes to the address that was checked."""
    from pipeline import crawl_guard

    real = crawl_guard.is_blocked
    monkeypatch.setattr(
        crawl_guard,
        "is_blocked",
        lambda address: str(address) != "127.0.0.1" and real(address),
    )
    site = serve({})
    port = site.port
    site.routes.update(
        {
            "/": page("/meta", "/private", f"http://10.0.0.1:{port}/x", "/a", "/b"),
            "/meta": (302, {"Location": f"http://metadata.site.test:{port}/latest/"}, b""),
            "/private": (302, {"Location": f"http://127.0.0.2:{port}/"}, b""),
            "/a": page(f"http://mapped.site.test:{port}/y"),
            "/b": page(),
        }
    )
    answers = {
        "metadata.site.test": ["169.254.169.254"],
        "mapped.site.test": ["::ffff:169.254.169.254"],  # IPv4-mapped IPv6
    }
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host == "www.site.test":
            return ["127.0.0.1"] if calls.count(host) == 1 else ["127.0.0.2"]
        return answers.get(host, [host])  # IP literals resolve to themselves

    cfg = config(
        f"http://www.site.test:{port}/",
        allowed_domains=["site.test", "10.0.0.1", "127.0.0.2"],
    )
    result = crawl(cfg, tmp_path, resolve=resolve)
    base = f"http://www.site.test:{port}"
    assert {row["url"]: row["error"] for row in rows(tmp_path)} == {
        f"{base}/": None,
        f"{base}/meta": "redirect",
        f"http://metadata.site.test:{port}/latest/": "blocked_address",
        f"{base}/private": "redirect",
        f"http://127.0.0.2:{port}/": "blocked_address",
        f"http://10.0.0.1:{port}/x": "blocked_address",
        f"{base}/a": None,
        f"{base}/b": None,
        f"http://mapped.site.test:{port}/y": "blocked_address",
    }
    assert result.drops["crawl_blocked_address"] == 4
    assert calls.count("www.site.test") == 1  # resolved once, connected to that address
    assert sorted(site.paths()) == ["/", "/a", "/b", "/meta", "/private", "/robots.txt"]


def test_only_default_and_seed_ports_unless_allowed(serve, tmp_path: Path) -> None:
    other = serve({"/": page()})
    site = serve({"/": page(other.url("/"))})
    cfg = local(site, allowed_domains=["127.0.0.1"])  # both ports are on an allowed host
    result = crawl(cfg, tmp_path / "default")
    assert [(r["url"], r["error"]) for r in rows(tmp_path / "default")] == [
        (site.url("/"), None),
        (other.url("/"), "blocked_port"),
    ]
    assert result.drops == {"crawl_blocked_port": 1} and other.requests == []

    cfg = local(site, allowed_domains=["127.0.0.1"], allowed_ports=[other.port])
    assert crawl(cfg, tmp_path / "allowed").docs_out == 2
    assert other.paths() == ["/robots.txt", "/"]


def test_connection_pools_stay_bounded(serve) -> None:
    """One pool per host name (TLS SNI), but a crawl of many hosts keeps only the recent
    ones; a pool whose response is still being read is never closed under it."""
    import asyncio

    import httpx

    from pipeline.crawl_guard import GuardedTransport

    site = serve({"/": page()})

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> None:
        transport = GuardedTransport(allow_private=True, resolve=resolve)
        transport.max_pools = 3
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            async with client.stream("GET", f"http://busy.test:{site.port}/") as held:
                for number in range(8):
                    response = await client.get(f"http://h{number}.test:{site.port}/")
                    assert response.status_code == 200
                    assert len(transport._pools) <= 3
                assert list(transport._pools) == ["busy.test", "h6.test", "h7.test"]
                assert b"Some text." in await held.aread()
            assert all(pool.open == 0 for pool in transport._pools.values())

    asyncio.run(main())


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (cryptography comes with prefect)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_to_the_checked_address_still_verifies_the_name(serve, tmp_path: Path) -> None:
    """Connecting to the pinned address keeps TLS right: SNI and the certificate check use
    the host name, so the right name passes and another name on that address fails."""
    import asyncio
    import ssl

    import httpx

    from pipeline.crawl_guard import GuardedTransport

    site = serve({"/": page()})
    cert, key = _certificate(tmp_path, "site.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    site.server.socket = server_context.wrap_socket(site.server.socket, server_side=True)

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def main() -> None:
        transport = GuardedTransport(
            allow_private=True, resolve=resolve, verify=ssl.create_default_context(cafile=cert)
        )
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            response = await client.get(f"https://site.test:{site.port}/")
            assert response.status_code == 200 and b"Some text." in response.content
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://other.test:{site.port}/")

    asyncio.run(main())
    assert site.paths() == ["/"]


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
    from pipeline.crawl_decode import SLICE, BodyDecoder, DecodeError

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


# --- robots.txt, RFC 9309 -----------------------------------------------------------------

# RFC 9309 §5.1 "Simple Example", verbatim, and what it says each crawler may fetch.
RFC_5_1 = """\
User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""
RFC_5_1_CASES = [
    # foobot: only the two allowed pages
    ("foobot/1.0", "/example/page.html", True),
    ("foobot/1.0", "/example/allowed.gif", True),
    ("foobot/1.0", "/example/other.html", False),
    ("foobot/1.0", "/", False),
    ("FooBot/2", "/example/page.html", True),  # §2.2.1: case-insensitive product token
    # barbot and bazbot: everything but /example/page.html
    ("barbot/1.0", "/example/page.html", False),
    ("barbot/1.0", "/example/other.html", True),
    ("bazbot", "/example/page.html", False),
    ("bazbot", "/image.gif", True),
    # quxbot: an empty group, everything allowed
    ("quxbot", "/example/page.html", True),
    ("quxbot", "/image.gif", True),
    # any other crawler: the "*" group
    ("otherbot", "/image.gif", False),
    ("otherbot", "/image.gif?v=1", True),  # "$" anchors at the end of the path and query
    ("otherbot", "/example/page.html", False),
    ("otherbot", "/publications/x.html", True),
    ("otherbot", "/index.html", True),
    ("otherbot", "/robots.txt", True),  # §2.2.2: /robots.txt is implicitly allowed
]
# RFC 9309 §5.2 "Longest Match", and §2.2.2's combining of groups for one agent.
LONGEST = "User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n"
COMBINED = (
    "user-agent: googlebot-news\ndisallow: /fish\n\n"
    "user-agent: *\ndisallow: /carrots\n\n"
    "user-agent: googlebot-news\ndisallow: /shrimp\n"
)
# (rules for "*", path, fetchable): RFC 9309 §2.2.2 (percent-encoding, ties), §2.2.3
# (special characters), and the path examples of Google's robots.txt documentation
# ("How Google interprets the robots.txt specification"), which follows the RFC.
MATCHING = [
    ("Disallow: /foo/bar?baz=quz", "/foo/bar?baz=quz", False),
    ("Disallow: /foo/bar/ツ", "/foo/bar/%E3%83%84", False),
    ("Disallow: /foo/bar/%E3%83%84", "/foo/bar/%E3%83%84", False),
    ("Disallow: /foo/bar/%62%61%7A", "/foo/bar/baz", False),
    ("Disallow: /path/file-with-a-%2A.html", "/path/file-with-a-*.html", False),
    ("Disallow: /path/foo-%24", "/path/foo-$", False),
    ("Disallow: /this/path/exactly$", "/this/path/exactly", False),
    ("Disallow: /this/path/exactly$", "/this/path/exactly/more", True),
    ("Disallow: /this/*/exactly", "/this/a/b/exactly", False),
    ("Disallow: /this/*/exactly", "/this/exactly", True),
    ("Disallow: / # comment in line", "/anything", False),
    ("# Disallow: /\nAllow: /", "/anything", True),
    ("Disallow: /fish", "/fish.html", False),
    ("Disallow: /fish", "/catfish", True),
    ("Disallow: /fish", "/Fish.asp", True),  # paths are case-sensitive
    ("Disallow: /fish*", "/fishheads/yummy.html", False),
    ("Disallow: /fish*", "/?id=fish", True),
    ("Disallow: /fish/", "/fish", True),
    ("Disallow: /fish/", "/fish/salmon.htm", False),
    ("Disallow: /*.php", "/folder/any.php.file.html", False),
    ("Disallow: /*.php", "/windows.PHP", True),
    ("Disallow: /*.php$", "/folder/filename.php", False),
    ("Disallow: /*.php$", "/filename.php?parameters", True),
    ("Disallow: /*.php$", "/filename.php/", True),
    ("Disallow: /*.php$", "/filename.php5", True),
    ("Disallow: /fish*.php", "/fishheads/catfish.php?parameters", False),
    ("Disallow: /a/*/b", "/a/x/b", False),
    ("Disallow: /a/*/b", "/a/x/y/bc", False),
    ("Disallow: /a/*/b", "/a/b", True),
    ("Allow: /p\nDisallow: /", "/page", True),  # longest match wins
    ("Allow: /folder\nDisallow: /folder", "/folder/page", True),  # a tie goes to Allow
    ("Allow: /page\nDisallow: /*.htm", "/page.htm", False),  # "/*.htm" is longer
    ("Allow: /$\nDisallow: /", "/", True),
    ("Allow: /$\nDisallow: /", "/page.htm", False),
]


def _allows(text: str, path: str, agent: str) -> bool:
    from protego import Protego

    from pipeline.crawl_fetch import Robots, product_token

    robots = Robots(Protego.parse(text))
    return robots.can_fetch("https://www.example.com" + path, product_token(agent))


@pytest.mark.parametrize(("agent", "path", "allowed"), RFC_5_1_CASES)
def test_rfc9309_simple_example(agent: str, path: str, allowed: bool) -> None:
    assert _allows(RFC_5_1, path, agent) is allowed


def test_rfc9309_longest_match_and_combined_groups() -> None:
    assert _allows(LONGEST, "/example/page/", "foobot")
    assert not _allows(LONGEST, "/example/page/disallowed.gif", "foobot")
    assert not _allows(COMBINED, "/fish", "googlebot-news")
    assert not _allows(COMBINED, "/shrimp", "googlebot-news")
    assert _allows(COMBINED, "/carrots", "googlebot-news")
    assert not _allows(COMBINED, "/carrots", "otherbot") and _allows(COMBINED, "/fish", "otherbot")


@pytest.mark.parametrize(("rules", "path", "allowed"), MATCHING)
def test_rfc9309_path_matching(rules: str, path: str, allowed: bool) -> None:
    assert _allows("User-agent: *\n" + rules + "\n", path, "llmforge-crawler/0.1") is allowed


def test_robots_wildcards_are_obeyed_in_a_crawl(serve, tmp_path: Path) -> None:
    rules = b"User-agent: *\nDisallow: /*.php$\nDisallow: /a/*/b\nAllow: /a/ok/b$\n"
    paths = ["/index.php", "/index.php?x=1", "/a/x/b", "/a/x/y/b", "/a/ok/b", "/a/b", "/page"]
    site = serve(
        {
            "/robots.txt": (200, TEXT, rules),
            "/": page(*paths),
            **{p: page() for p in paths},
        }
    )
    result = crawl(local(site), tmp_path)
    assert outcome(tmp_path) == {
        "/": None,
        "/index.php": "robots_disallowed",
        "/index.php?x=1": None,
        "/a/x/b": "robots_disallowed",
        "/a/x/y/b": "robots_disallowed",
        "/a/ok/b": None,
        "/a/b": None,
        "/page": None,
    }
    assert "/index.php" not in site.paths() and "/a/x/b" not in site.paths()
    assert result.drops == {"crawl_robots_disallowed": 3}


def test_robots_fetch_outcomes(serve, tmp_path: Path) -> None:
    """RFC 9309 §2.3.1: 4xx → no restrictions; 5xx or unreachable → disallow all; redirects
    followed (five at least; more → unavailable); §2.5: at least 500 KiB parsed."""
    home = {"/": page("/early", "/late"), "/early": page(), "/late": page()}
    big = b"User-agent: *\nDisallow: /early\n" + b"#" * (550 * 1024) + b"\nDisallow: /late\n"
    chain = {f"/r{i}": (301, {"Location": f"/r{i + 1}"}, b"") for i in range(6)}
    elsewhere = serve({"/robots.txt": (200, TEXT, b"User-agent: *\nAllow: /\n")})
    cases = {
        "404": ({"/robots.txt": (404, TEXT, b"")}, {"/early": None, "/late": None}),
        "403": ({"/robots.txt": (403, TEXT, b"")}, {"/early": None, "/late": None}),
        "503": ({"/robots.txt": (503, TEXT, b"")}, None),
        "stall": ({"/robots.txt": (200, TEXT, [5.0, b"User-agent: *\n"])}, None),
        "redirect": (
            {
                "/robots.txt": (302, {"Location": "/r.txt"}, b""),
                "/r.txt": (200, TEXT, b"User-agent: *\nDisallow: /late\n"),
            },
            {"/early": None, "/late": "robots_disallowed"},
        ),
        "redirect-to-odd-port": (
            {"/robots.txt": (302, {"Location": elsewhere.url("/robots.txt")}, b"")},
            None,  # a port not allowed: never fetched, so unreachable
        ),
        "six-redirects": (
            {"/robots.txt": (301, {"Location": "/r0"}, b""), **chain},
            {"/early": None, "/late": None},
        ),
        "huge": (
            {"/robots.txt": (200, TEXT, big)},
            {"/early": "robots_disallowed", "/late": None},
        ),
    }
    for name, (routes, expected) in cases.items():
        site = serve({**home, **routes})
        out = tmp_path / name
        cfg = local(site, timeout_seconds=0.5, max_retries=0)
        if expected is None:  # the whole site is off limits
            with pytest.raises(EmptyStageError):
                crawl(cfg, out)
            assert outcome(out) == {"/": "robots_disallowed"}, name
            assert [p for p in site.paths() if not p.startswith("/robots")] == [], name
        else:
            crawl(cfg, out)
            assert outcome(out) == {"/": None, **expected}, name
    assert len([p for p in site.paths() if p == "/robots.txt"]) == 1
    assert elsewhere.requests == []


def test_crawl_delay_spaces_requests(serve, tmp_path: Path) -> None:
    rules = b"User-agent: *\nCrawl-delay: 0.3\n"
    routes = {"/robots.txt": (200, TEXT, rules), "/": page("/a", "/b"), "/a": page(), "/b": page()}
    site = serve(routes)
    crawl(local(site, per_host_concurrency=4), tmp_path)
    starts = site.times()
    assert len(starts) == 4  # robots.txt, /, /a, /b
    assert all(b - a >= 0.2 for a, b in zip(starts[1:], starts[2:], strict=False)), starts


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
