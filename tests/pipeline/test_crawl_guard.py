"""What the crawler may connect to (`pipeline/crawl/guard.py`): public addresses only, checked
after resolution and on every hop, connected to as checked; ports; pools; TLS to the pinned
address. Servers are `fault_server.Site` on 127.0.0.1; test names resolve through a hook."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pipeline.crawl.crawler import crawl
from pipeline.errors import EmptyStageError
from tests.pipeline.fault_server import config, local, page, rows, serve_sites

serve = pytest.fixture(serve_sites, name="serve")


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
    from pipeline.crawl.guard import is_blocked, parse_ip

    assert is_blocked(parse_ip(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    from pipeline.crawl.guard import is_blocked

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
    from pipeline.crawl import guard as crawl_guard

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

    from pipeline.crawl.guard import GuardedTransport

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

    from pipeline.crawl.guard import GuardedTransport

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


def test_the_transport_itself_refuses(serve) -> None:
    """Defence in depth: a request that skips the crawler's own check (a robots.txt redirect,
    a future caller) is refused by the transport, and the fetch records why."""
    import asyncio

    import httpx

    from pipeline.crawl.fetch import Fetcher
    from pipeline.crawl.guard import BlockedAddress, GuardedTransport

    site = serve({"/": page()})

    async def main() -> None:
        transport = GuardedTransport()
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            with pytest.raises(BlockedAddress, match="127.0.0.1"):
                await client.get(site.url("/"))
            fetched = await Fetcher(config(site.url()), client, set()).fetch(site.url("/"))
            assert fetched.error == "blocked_address" and fetched.status is None

    asyncio.run(main())
    assert site.requests == []
