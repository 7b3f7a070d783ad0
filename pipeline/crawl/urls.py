"""URL helpers for the crawler: normalize, check scheme and domain, pull links out of HTML.

Normalizing is what makes the frontier's dedup work: `HTTP://Example.com:80/a/../b#top` and
`http://example.com/b` are one page, so they must be one string.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import lxml.etree
import lxml.html

HTTP_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when re-quoting a path or query (RFC 3986 unreserved, reserved
# and '%', so existing escapes survive); everything else (spaces, non-ASCII) gets %-encoded.
_SAFE = "/%:@!$&'()*+,;=-._~?"
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


def is_http(url: str) -> bool:
    """An absolute http(s) URL with a host: the only kind the crawler fetches."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in HTTP_SCHEMES and bool(parts.hostname)


def normalize_url(url: str) -> str | None:
    """Canonical form of an http(s) URL, or None if it is not one (or is malformed).

    Lower-case scheme and host, default port and fragment dropped, dot segments resolved,
    empty path as "/", unsafe characters %-encoded, user:password@ removed.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in HTTP_SCHEMES or not host:
        return None
    if ":" in host:  # IPv6 literal: urlsplit strips the brackets
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = "/" + parts.path.lstrip("/")  # "//x" must not turn into a host below
    path = urlsplit(urljoin("http://h/", path)).path  # resolves "." and ".." segments
    return urlunsplit((scheme, netloc, quote(path, safe=_SAFE), quote(parts.query, safe=_SAFE), ""))


def host_key(url: str) -> str:
    """scheme://host[:port] of a normalized URL: the unit of robots.txt and politeness."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def domain_allowed(url: str, allowed: list[str]) -> bool:
    """Whether a normalized URL's host is an allowed domain or a subdomain of one.

    An entry with a port (`127.0.0.1:8000`) matches that host and port only.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for domain in allowed:
        if ":" in domain and not domain.startswith("["):
            if parts.netloc == domain:
                return True
        elif host == domain or host.endswith("." + domain):
            return True
    return False


def port_allowed(url: str, ports: set[int]) -> bool:
    """Whether a normalized URL's port is its scheme's default or one of `ports`: links to
    odd ports of a site are how a crawler gets pointed at services that are not web sites."""
    try:
        port = urlsplit(url).port
    except ValueError:
        return False
    return port is None or port == DEFAULT_PORTS.get(urlsplit(url).scheme) or port in ports


def charset_of(content_type: str | None) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1) if match else None


def extract_links(html: bytes, base_url: str, encoding: str | None = None) -> list[str]:
    """Absolute URLs of `<a href>` and `<area href>` in page order, fragments dropped.

    Honours `<base href>`. Non-http links (mailto:, javascript:) are returned too, so the
    caller can count them; unparsable pages give no links rather than an error.
    """
    if not html.strip():
        return []
    try:
        parser = lxml.html.HTMLParser(encoding=encoding) if encoding else None
        root = lxml.html.fromstring(html, parser=parser)
    except (lxml.etree.ParserError, ValueError, LookupError):
        return []
    base = base_url
    for href in root.xpath("//base/@href")[:1]:
        base = urljoin(base_url, str(href).strip())
    links = []
    for href in root.xpath("//a/@href | //area/@href"):
        href = str(href).strip()
        if not href or href.startswith("#"):
            continue
        try:
            absolute = urljoin(base, href)
        except ValueError:
            continue
        links.append(absolute.split("#", 1)[0])
    return links
