"""HTML, robots.txt and PDF for the sample website: realistic boilerplate around each body.

Every page carries what extractors must drop (cookie banner, header, nav menu, related links,
newsletter box, reader comments, footer, inline CSS/JS) around the one `<article>` body they
must keep, so extraction quality is measurable against the ground truth.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any

PAPERS = ["Gazette", "Courier", "Chronicle", "Herald", "Ledger"]
PARTNERS = ["Valley Post", "Coast Review", "Northern Wire", "Weekend Digest"]
SPECIAL_LINKS = {  # links from the home page to the planted HTTP behaviours
    "redirect": "Our 2019 coverage",
    "server_error": "Live election results",
    "not_found": "Summer photo gallery",
}
COOKIE_TEXT = (
    "We use cookies to personalise content and analyse our traffic. By clicking Accept you "
    "agree to our cookie policy."
)
NEWSLETTER_TEXT = "Our best stories in your inbox every Friday morning."
_STYLE = "body { font-family: Georgia, serif; margin: 0 auto; max-width: 70rem; }"
_SCRIPT = "window.dataLayer = window.dataLayer || []; window.dataLayer.push({event: 'view'});"


@dataclass
class SiteChrome:
    """What every page shares: the site name, pagination and footer links."""

    name: str
    listing_paths: list[str] = field(default_factory=lambda: ["/"])
    footer_links: list[tuple[str, str]] = field(default_factory=list)


def date(rng: random.Random) -> str:
    """An ISO date in 2022-2024."""
    return (dt.date(2022, 1, 1) + dt.timedelta(days=rng.randrange(3 * 365))).isoformat()


def _human_date(iso: str) -> str:
    day = dt.date.fromisoformat(iso)
    return f"{day.day} {day.strftime('%B %Y')}"


def footer_links(private: list[str]) -> list[tuple[str, str]]:
    links = [("/files/annual-report.pdf", "Annual report (PDF)")]
    return links + ([(private[0], "Members area")] if private else [])


def _links(links: list[tuple[str, str]]) -> str:
    return "".join(f'<li><a href="{escape(h)}">{escape(t)}</a></li>' for h, t in links)


def _page(site: SiteChrome, title: str, main: str, related: str, lang: str = "en") -> str:
    pages = site.listing_paths
    nav = [("/", "Home"), (pages[min(1, len(pages) - 1)], "Latest"), (pages[-1], "Archive")]
    nav.append(("/#newsletter", "Newsletter"))
    year = "2024"
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} | {escape(site.name)}</title>
<style>{_STYLE}</style>
</head>
<body>
<div id="cookie-banner" class="cookie-banner" role="dialog" aria-label="Cookie consent">
<p>{COOKIE_TEXT}</p>
<button type="button">Accept all</button> <button type="button">Manage settings</button>
</div>
<header class="site-header">
<a class="logo" href="/">{escape(site.name)}</a>
<p class="tagline">Independent news from towns, trails and workshops since 1998</p>
</header>
<nav class="main-nav" aria-label="Main"><ul>{_links(nav)}</ul></nav>
<div class="layout">
<main id="main">
{main}
</main>
<aside class="sidebar">
{related}
<section id="newsletter" class="newsletter"><h3>Newsletter</h3><p>{NEWSLETTER_TEXT}</p>
<form action="/"><input type="email" name="email" placeholder="Email address">
<button type="submit">Sign up</button></form></section>
</aside>
</div>
<footer class="site-footer">
<ul class="footer-links">{_links(site.footer_links)}</ul>
<p>© {year} {escape(site.name)}. All rights reserved.</p>
</footer>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _is_heading(line: str) -> bool:
    return not re.search(r"[.!?\"»“]$", line) and len(line.split()) <= 10


def _body(lines: list[str]) -> str:
    return "\n".join(
        f"<h2>{escape(line)}</h2>" if _is_heading(line) else f"<p>{escape(line)}</p>"
        for line in lines
    )


def _comments(comments: list[str], rng: random.Random) -> str:
    from pipeline.sample_site.prose import person_name  # local: keeps this module template-only

    items = "".join(
        f'<li class="comment"><p class="comment-meta"><strong>{escape(person_name(rng))}</strong>'
        f' · <time>{_human_date(date(rng))}</time></p><p class="comment-text">{escape(text)}</p>'
        "</li>\n"
        for text in comments
    )
    return (
        f'<section id="comments" class="comments"><h2>{len(comments)} comments</h2>\n'
        f'<ol class="comment-list">\n{items}</ol>\n'
        '<p class="comment-policy">Comments are moderated. Be kind.</p></section>'
    )


def post(site: SiteChrome, page: dict[str, Any], related: list[dict], more: list[str]) -> str:
    """One post page: the body inside <article>, chrome and comments around it."""
    rng = random.Random(page["path"])  # chrome varies by page, deterministically
    lines = page["body_text"].split("\n")
    if page["kind"] == "link_farm":
        hrefs = [f"https://{re.sub(r'[^a-z0-9]+', '-', text.lower())}.example/" for text in lines]
        body = f'<ul class="link-list">{_links(list(zip(hrefs, lines, strict=True)))}</ul>'
    else:
        body = _body(lines)
    header = f"<h1>{escape(page['title'])}</h1>"
    if page.get("byline"):
        author, iso = page["byline"]
        header = (
            f'<p class="kicker">{escape(page["topic"])}</p>\n{header}\n<p class="byline">By '
            f'<span class="author">{escape(author)}</span> · <time datetime="{iso}">'
            f"{_human_date(iso)}</time></p>"
        )
    main = (
        f'<article class="post">\n<header class="post-header">\n{header}\n</header>\n'
        f'<div class="post-body">\n{body}\n</div>\n</article>'
    )
    if page.get("comments"):
        main += "\n" + _comments(page["comments"], rng)
    if more:
        main += '\n<section class="members-more"><h2>More briefings</h2><ul>'
        main += _links([(p, p.rsplit("/", 1)[1]) for p in more]) + "</ul></section>"
    links = [(p["path"], p["title"]) for p in related]
    aside = f'<section class="related"><h3>Related stories</h3><ul>{_links(links)}</ul></section>'
    return _page(site, page["title"], main, aside, page.get("language") or "en")


def listing(
    site: SiteChrome, title: str, posts: list[dict], n: int, extra: list[tuple[str, str]]
) -> str:
    """A page of teasers with numbered pagination, plus `extra` (href, text) links if any."""
    items = []
    for p in posts:
        lines = p["body_text"].split("\n")
        first = next((ln for ln in lines if not _is_heading(ln)), lines[0])
        teaser = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
        items.append(
            f'<li class="teaser"><h2><a href="{p["path"]}">{escape(p["title"])}</a></h2>'
            f"<p>{escape(teaser)}</p></li>"
        )
    main = f'<h1>{escape(title)}</h1>\n<ul class="post-list">\n' + "\n".join(items) + "\n</ul>"
    if extra:
        main += f'\n<section class="more"><h2>Also here</h2><ul>{_links(extra)}</ul></section>'
    pager = [(path, str(i + 1)) for i, path in enumerate(site.listing_paths) if i != n]
    main += f'\n<nav class="pagination" aria-label="Pages"><ul>{_links(pager)}</ul></nav>'
    return _page(site, title, main, "")


def robots_txt(disallowed_prefix: str) -> str:
    return (
        "# robots.txt for the sample site\n"
        f"User-agent: *\nDisallow: {disallowed_prefix}\n\n"
        "User-agent: BadBot\nDisallow: /\n"
    )


def pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing `text` (a non-HTML file for the crawler to skip)."""
    safe = re.sub(r"[()\\]", "", text)
    content = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def internal_links(page_html: str) -> list[str]:
    """Site-internal paths of a page's <a href>s, without fragments or queries, in order."""
    found: dict[str, None] = {}
    for href in re.findall(r'<a\s[^>]*href="([^"]*)"', page_html):
        path = re.split(r"[#?]", href, maxsplit=1)[0]
        if path.startswith("/") and not path.startswith("//"):
            found.setdefault(path)
    return list(found)
