"""robots.txt as RFC 9309 reads it (protego through `crawl.fetch.Robots`): the RFC's examples as
data, wildcards and `$` in a crawl, what a 4xx, 5xx, unreachable, redirected or huge
robots.txt means, and Crawl-delay."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.crawl.crawler import crawl
from pipeline.errors import EmptyStageError
from tests.pipeline.fault_server import TEXT, local, outcome, page, serve_sites

serve = pytest.fixture(serve_sites, name="serve")


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

    from pipeline.crawl.fetch import Robots, product_token

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
