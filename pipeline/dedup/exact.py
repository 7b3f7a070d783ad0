"""Text normalization and the exact-duplicate hash.

Two pages count as exact duplicates when their *normalized* text is identical: extraction
leaves differences that carry no content (letter case, runs of whitespace and line breaks,
curly versus straight quotes, full-width or ligature forms, a trailing full stop), and
normalizing folds them so one copy is kept. The same normalized text feeds the MinHash
shingles, so exact duplicates also get identical signatures.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata

# Bump when normalize_text changes: signatures written under another version are not comparable.
NORMALIZATION = "nfkc-lower-nopunct-ws/1"


@functools.cache
def _separators() -> frozenset[str]:
    """Every Unicode punctuation (categories P*) and whitespace character: each becomes a space.

    Built once per process (~0.2 s): 819 punctuation code points, far more than
    `string.punctuation` (guillemets, CJK and Arabic marks, dashes, ...). Symbols (S*: $, +,
    emoji) are kept: they are rarer and more often content than formatting. Whitespace is what
    str.split() splits on.
    """
    chars = (chr(cp) for cp in range(sys.maxunicode + 1))
    return frozenset(c for c in chars if c.isspace() or unicodedata.category(c).startswith("P"))


@functools.cache
def _non_ascii_separators() -> frozenset[str]:
    return frozenset(c for c in _separators() if not c.isascii())


@functools.cache
def _ascii_table() -> bytes:
    """A bytes.translate table: ASCII separators to a space, A-Z to a-z, other bytes kept."""
    separators = _separators()
    ascii_part = (" " if chr(b) in separators else chr(b).lower() for b in range(128))
    return "".join(ascii_part).encode() + bytes(range(128, 256))


def _single_spaces(text: bytes) -> bytes:
    """Runs of spaces to one, none at either end: b" ".join(text.split()) without a list of
    words (each pass halves every run; several times faster on web text)."""
    while b"  " in text:
        text = text.replace(b"  ", b" ")
    return text.strip(b" ")


def normalize_text(text: str | None) -> str:
    """NFKC, lowercase, punctuation to spaces, whitespace collapsed to single spaces.

    NFKC first so compatibility forms (full-width letters, ligatures, non-breaking spaces)
    become their plain equivalents before the other steps look at them. Punctuation turns into
    a space rather than vanishing so "end.Start" does not glue two words into one. Fast path:
    only the few distinct non-ASCII separators a text holds are replaced one by one (ASCII
    text, which NFKC leaves as is, has none); the ASCII ones go in one bytes.translate.
    """
    text = text or ""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).lower()
        for char in _non_ascii_separators().intersection(text):
            text = text.replace(char, " ")
    return _single_spaces(text.encode("utf-8").translate(_ascii_table())).decode("utf-8")


def exact_hash(normalized: str) -> str:
    """128-bit BLAKE2b of the normalized text, as hex.

    128 bits keep accidental collisions negligible at any crawl size (~n^2 / 2^129), where 64
    bits would reach a few percent chance of one false merge around a billion documents.
    """
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()
