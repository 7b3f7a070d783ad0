"""What the crawler may connect to: public addresses only, resolved once, connected to as checked.

A crawler that follows links is an open proxy into the network it runs in: a page (or a
redirect) pointing at `http://169.254.169.254/` or `http://localhost:8080/admin` would make it
fetch a cloud metadata service or an internal admin page and store the answer. So every host
name is resolved here, every address is checked, and the connection goes to the checked
address (with the name in the Host header and TLS SNI), never to a second resolution that a
DNS-rebinding server could answer differently.

    transport = GuardedTransport(allow_private=False)
    httpx.AsyncClient(transport=transport)   # raises BlockedAddress for a refused address
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host name, port -> addresses (IP strings) in connection order; tests map names here.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Ranges refused even where Python's `is_global` says otherwise (it varies across Python
# versions): RFC 6598 shared address space (carrier-grade NAT), RFC 6890 special purpose.
_BLOCKED_V4 = [
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT, RFC 6598
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast, RFC 7526
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix, IPv4 in low bits
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated RFC 4291 §2.5.5.1 form


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_blocked(address: IPAddress) -> bool:
    """True for any address that is not plainly public unicast: loopback, private, link-local,
    CGNAT, unique-local, multicast, reserved, unspecified, documentation, and IPv6 forms
    that carry one of those IPv4 addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return True  # fe80::1%eth0: a scoped address is local by definition
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is that IPv4 address
            return is_blocked(address.ipv4_mapped)
        if address in _NAT64:  # so is 64:ff9b::a.b.c.d, through a NAT64 gateway
            return is_blocked(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(is_blocked(v4) for v4 in embedded_ipv4(address)):
            return True
        if address.is_site_local:  # fec0::/10, deprecated but still local
            return True
    elif any(address in net for net in _BLOCKED_V4):
        return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def parse_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


async def system_resolve(host: str, port: int) -> list[str]:
    """Addresses for `host` from the system resolver, in its order, duplicates dropped."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class BlockedAddress(Exception):
    """The host resolved to an address the guard refuses."""

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to {address}, a non-public address")
        self.host = host
        self.address = address


class _Pool:
    """One host's connection pool and how many of its responses are still open."""

    def __init__(self, limits: httpx.Limits, verify: ssl.SSLContext | bool):
        self.transport = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
        self.open = 0


class _Body(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, pool: _Pool):
        self.stream = stream
        self.pool: _Pool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            if self.pool is not None:
                self.pool.open -= 1
                self.pool = None


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that resolves each host once, refuses non-public addresses (unless
    `allow_private`), and connects to the checked address itself.

    One inner transport (connection pool) per host name, so a TLS connection opened with one
    name's SNI is never reused for another name on the same address; the pools of hosts
    not used lately are closed once idle, so a crawl of many hosts keeps few sockets open.
    """

    max_pools = 64  # hosts with kept-alive connections; a crawl's busy hosts fit easily

    def __init__(
        self,
        allow_private: bool = False,
        resolve: Resolver | None = None,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,  # certificates checked against the host name
    ):
        self.allow_private = allow_private
        self.resolve = resolve or system_resolve
        self.limits = limits or httpx.Limits()
        self.verify = verify
        self._addresses: dict[str, asyncio.Task[list[str]]] = {}
        self._pools: dict[str, _Pool] = {}  # least recently used first

    async def addresses(self, host: str, port: int) -> list[str]:
        """The host's checked addresses (resolved once per crawl; failures are retried).

        Raises BlockedAddress if any address is refused (a name that also points inside
        the network is not trusted for its public addresses either), httpx.ConnectError if
        the name does not resolve.
        """
        if host not in self._addresses:
            task = asyncio.ensure_future(self._resolve(host, port))
            # Read a failure even if every waiter was cancelled (a fetch timed out).
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._addresses[host] = task
        try:
            addresses = await asyncio.shield(self._addresses[host])
        except httpx.ConnectError:
            self._addresses.pop(host, None)  # a DNS failure may be transient: ask again later
            raise
        if not self.allow_private:
            for address in addresses:
                if is_blocked(parse_ip(address)):
                    raise BlockedAddress(host, address)
        return addresses

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            addresses = await self.resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        valid = []
        for address in addresses:
            try:
                valid.append(str(parse_ip(address)))
            except ValueError:
                continue
        if not valid:
            raise httpx.ConnectError(f"cannot resolve {host}: no addresses")
        return valid

    async def check(self, url: str) -> str | None:
        """The refused address `url`'s host resolves to, or None (also if it does not resolve:
        the fetch then records the connection error)."""
        parsed = httpx.URL(url)
        try:
            await self.addresses(parsed.raw_host.decode("ascii"), parsed.port or _port(parsed))
        except BlockedAddress as exc:
            return exc.address
        except httpx.ConnectError:
            return None
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        addresses = await self.addresses(host, url.port or _port(url))
        pool = await self._pool(host)
        error: httpx.ConnectError | None = None
        for address in addresses:  # the next address only if this one refused the connection
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,  # keeps Host: the name, not the address
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            pool.open += 1
            try:
                response = await pool.transport.handle_async_request(pinned)
            except httpx.ConnectError as exc:
                pool.open -= 1
                error = exc
                continue
            except BaseException:
                pool.open -= 1
                raise
            assert isinstance(response.stream, httpx.AsyncByteStream)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_Body(response.stream, pool),
                extensions=response.extensions,
            )
        assert error is not None
        raise error

    async def _pool(self, host: str) -> _Pool:
        pool = self._pools.pop(host, None) or _Pool(self.limits, self.verify)
        self._pools[host] = pool  # now the most recently used
        for other, old in list(self._pools.items()):
            if len(self._pools) <= self.max_pools:
                break
            if old.open == 0 and other != host:
                del self._pools[other]
                await old.transport.aclose()
        return pool

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.transport.aclose()
        self._pools.clear()


def _port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
