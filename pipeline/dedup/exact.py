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
def _punctuation_table() -> dict[int, str]:
    """Every Unicode punctuation code point (categories P*) mapped to a space.

    Built once per process (~0.1 s): 819 code points, far more than `string.punctuation`
    (guillemets, CJK and Arabic marks, dashes, ...). Symbols (S*: $, +, emoji) are kept: they
    are rarer and more often content than formatting.
    """
    return {
        cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")
    }


def normalize_text(text: str | None) -> str:
    """NFKC, lowercase, punctuation to spaces, whitespace collapsed to single spaces.

    NFKC first so compatibility forms (full-width letters, ligatures, non-breaking spaces)
    become their plain equivalents before the other steps look at them. Punctuation turns into
    a space rather than vanishing so "end.Start" does not glue two words into one.
    """
    text = unicodedata.normalize("NFKC", text or "").lower()
    return " ".join(text.translate(_punctuation_table()).split())


def exact_hash(normalized: str) -> str:
    """128-bit BLAKE2b of the normalized text, as hex.

    128 bits keep accidental collisions negligible at any crawl size (~n^2 / 2^129), where 64
    bits would reach a few percent chance of one false merge around a billion documents.
    """
    return hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).hexdigest()
