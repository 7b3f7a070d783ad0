"""URL filter: drop pages from blocked domains, or whose URL contains a blocked word.

It runs first and reads only the URL, as datatrove's `URLFilter` does at the head of FineWeb's
pipeline (Penedo et al. 2024, "base filtering": a blocklist against adult content). A domain entry
blocks itself and every subdomain (`casino.example` blocks `www.casino.example`, not
`notcasino.example`); a word entry blocks a URL having it as a whole token of its host, path or
query (`/free-porn-videos` is blocked by `porn`; `/essex-news` is not blocked by `sex`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from pipeline.filters.base import Document, DocumentFilter, Signals, StepConfig
from pipeline.filters.lists import builtin_list, digest, read_list

DEFAULT_BLOCKLIST = "url_blocklist.txt"
_TOKEN = re.compile(r"[a-z0-9]+")


class UrlConfig(StepConfig):
    # The project's own short list (data/url_blocklist.txt): adult, gambling and malware words
    # and TLDs. FineWeb used datatrove's much larger downloaded lists; pass one as a file.
    use_default_blocklist: bool = True
    blocked_domains: list[str] = Field(default_factory=list)  # each blocks its subdomains too
    blocked_words: list[str] = Field(default_factory=list)  # whole tokens of host/path/query
    blocklist_file: str | None = None  # one entry per line: with a "." a domain, else a word

    def blocklist(self) -> tuple[frozenset[str], frozenset[str]]:
        """(domains, words): the built-in list, the config's entries and the file's, merged."""
        entries = builtin_list(DEFAULT_BLOCKLIST) if self.use_default_blocklist else []
        if self.blocklist_file:
            entries += read_list(self.blocklist_file)
        domains = {e for e in entries if "." in e}
        domains.update(d.lower() for d in self.blocked_domains)
        words = {e for e in entries if "." not in e}
        words.update(w.lower() for w in self.blocked_words)
        return frozenset(d.strip(".") for d in domains), frozenset(words)

    def signals_key(self) -> dict[str, Any]:
        # The lists' content, not the file path: an edited file is a different configuration.
        domains, words = self.blocklist()
        return {"domains": digest(domains), "words": digest(words)}


def url_parts(doc: Document) -> tuple[str, str]:
    """(host, rest of the URL) lower-cased; the `domain` column stands in for a bad URL."""
    url = doc.get("url") or ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        rest = f"{parts.path} {parts.query}"
    except ValueError:  # e.g. an unbalanced "[" in the host
        host, rest = "", url
    return (host or doc.get("domain") or "").lower().strip("."), rest.lower()


class UrlFilter(DocumentFilter):
    """Reasons: `url_blocked_domain`, `url_blocked_word`."""

    name = "url"
    signal_names = ("blocked_domain", "blocked_words")

    def __init__(self, config: UrlConfig):
        super().__init__(config)
        self.domains, self.words = config.blocklist()

    def signals(self, doc: Document) -> Signals:
        host, rest = url_parts(doc)
        labels = host.split(".")
        # Every suffix of the host: a.b.example.com, b.example.com, example.com, com.
        blocked = any(".".join(labels[i:]) in self.domains for i in range(len(labels)))
        tokens = _TOKEN.findall(f"{host} {rest}")
        return {
            "blocked_domain": float(blocked),
            "blocked_words": float(sum(token in self.words for token in tokens)),
        }

    def decide(self, signals: Signals) -> str | None:
        if signals["blocked_domain"]:
            return "url_blocked_domain"
        if signals["blocked_words"]:
            return "url_blocked_word"
        return None
