"""PII redaction: e-mail addresses and public IPv4 addresses in kept documents are replaced.

FineWeb anonymised both with datatrove's `PIIFormatter` (Penedo et al. 2024). This step never
drops a document: it measures how many addresses a document holds (its signals, stored as
attributes) and rewrites only documents that every filter kept, on their way out (`finish`),
so it runs after all quality decisions and never changes one. Only addresses that can point
at a person are replaced: IPs that `ipaddress` calls global (not 10.x, 192.168.x, 127.x or
other reserved ranges), e-mails outside the domains reserved for examples (RFC 2606). Both
replacements are themselves reserved, so redacting twice changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar

from pipeline.filters.base import Document, DocumentFilter, Signals, StepConfig, text_of

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,})(?![\w-]|\.\w)",
    re.IGNORECASE,
)
# RFC 2606: example.com/.net/.org and the .example/.test/.invalid/.localhost TLDs.
_RESERVED_EMAIL_DOMAIN = re.compile(
    r"(?:^|\.)(?:example\.(?:com|net|org)|example|test|invalid|localhost)$", re.IGNORECASE
)
# Four dotted numbers, not part of a longer dotted run (1.2.3.4.5) or a word (v1.2.3.4).
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# A dotted quad right after one of these is a version number, not an address.
_VERSION_BEFORE = re.compile(
    r"(?:\bv|version|ver\.?|release|build|firmware|update)\s*[:#]?\s*$", re.IGNORECASE
)


class PIIConfig(StepConfig):
    signal_fields: ClassVar[tuple[str, ...]] = ("redact_emails", "redact_ips")

    redact_emails: bool = True  # datatrove PIIFormatter: remove_emails=True
    redact_ips: bool = True  # datatrove PIIFormatter: remove_ips=True, public ones only
    # datatrove's default: example.com is reserved (RFC 2606), so it is nobody's address.
    email_replacement: str = "email@example.com"
    # RFC 5737 TEST-NET-1, reserved for documentation. datatrove cycles six random public IPs
    # instead; one reserved address is deterministic and reaches no one.
    ip_replacement: str = "192.0.2.1"


def is_public_ip(match: re.Match[str]) -> bool:
    """A global IPv4 address that is not written as a version number."""
    try:
        if not ipaddress.ip_address(match.group()).is_global:  # leading zeros: ValueError
            return False
    except ValueError:
        return False
    return not _VERSION_BEFORE.search(match.string, max(0, match.start() - 12), match.start())


def is_personal_email(match: re.Match[str]) -> bool:
    return not _RESERVED_EMAIL_DOMAIN.search(match.group(1))


def _replace(pattern: re.Pattern[str], text: str, keep, replacement: str) -> tuple[str, int]:
    count = 0

    def one(match: re.Match[str]) -> str:
        nonlocal count
        if not keep(match):
            return match.group()
        count += 1
        return replacement

    return pattern.sub(one, text), count


def redact(text: str, config: PIIConfig) -> tuple[str, int, int]:
    """`text` with personal e-mails and public IPs replaced, and how many of each it had."""
    emails = ips = 0
    if config.redact_emails and "@" in text:
        text, emails = _replace(_EMAIL, text, is_personal_email, config.email_replacement)
    if config.redact_ips:
        text, ips = _replace(_IPV4, text, is_public_ip, config.ip_replacement)
    return text, emails, ips


class PIIFilter(DocumentFilter):
    """Redacts kept documents; never drops one. Counts go to `pii_emails` / `pii_ips`."""

    name = "pii"
    signal_names = ("emails", "ips")
    counted = ("emails", "ips")  # summed over kept documents: the redactions written
    can_drop = False

    def signals(self, doc: Document) -> Signals:
        _, emails, ips = redact(text_of(doc), self.config)
        return {"emails": float(emails), "ips": float(ips)}

    def finish(self, doc: Document) -> Document:
        text, emails, ips = redact(text_of(doc), self.config)
        return {**doc, "text": text} if emails or ips else doc

    def decide(self, signals: Signals) -> str | None:
        return None
