"""MinHash signatures for a batch of documents at once, vectorized with numpy.

A document is the set of its word n-grams ("shingles") over the normalized text; two
documents' MinHash values agree in each position with probability equal to the Jaccard
similarity of those sets (Broder 1997). datasketch hashes one shingle at a time in Python
(SHA-1, then its permutations), ~1,000 docs/s for 1k-word pages; here every step is a numpy
pass over all words of a batch:

1. word hash: a position-weighted byte sum over the UTF-8 text (`_K`), MurmurHash3-finalized;
2. shingle hash: an n-gram of word hashes weighted by position (`_C`), finalized, top 32 bits;
3. datasketch's "affine32" scheme on those 32-bit values (pre-mix, then a*h+b mod 2^32 with
   datasketch's own permutations for `seed`), minimum per document.

Step 3 is datasketch's, so `MinHash(num_perm, seed, scheme="affine32", hashfunc=shingle_hash)`
fed `word_shingles(text, n)` gives the same signature (tested); only the per-shingle hash
differs from datasketch's SHA-1 default. Signatures are stored per shard (`signature_schema`)
so the LSH step, and later incremental runs, never need the text again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from datasketch import MinHash

# datasketch >= 2.0's default scheme: bijective a*h+b mod 2^32 after a MurmurHash3 pre-mix (the
# "legacy" scheme inflated Jaccard estimates on large sets, ekzhu/datasketch#212); uint32 values.
SCHEME = "affine32"
# Bump when word/shingle hashing changes: signatures made another way are not comparable.
SHINGLE_HASH = "bytepos-ngram-fmix64/1"
MAX_NGRAM = 64
PARAMS_KEY = b"llmforge.dedup"  # Parquet schema metadata: what the signatures were made with
_TEXT_BYTES = 1 << 20  # text per vectorized pass: ~33 bytes of temporaries per byte of text
_CHUNK = 16384  # shingles per permutation block: (num_perm, 16384) uint32 = 7 MiB at 112


def odd_constants(count: int, seed: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers; RandomState's stream is frozen by numpy's policy (NEP 19)."""
    draws = np.random.RandomState(seed).randint(0, 1 << 63, count, dtype=np.uint64)
    return draws * np.uint64(2) + np.uint64(1)


_K = odd_constants(256, 0x5EED)  # weight of a byte by its position in the word (mod 256)
_C = odd_constants(MAX_NGRAM, 0xC0DE)  # weight of a word by its position in the shingle


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: an avalanching bijection (uint64 arrays wrap mod 2^64)."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, datasketch's pre-mix for the affine32 scheme."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def word_shingles(normalized: str, n: int) -> set[bytes]:
    """The distinct word n-grams of a normalized text; a text under n words is one shingle.

    Without the short-text rule a 3-word page would have no shingles, an all-max signature,
    and collide with every other short page. The reference for `Signer` (tests, datasketch).
    """
    words = normalized.split(" ") if normalized else []
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def shingle_hash(shingle: bytes) -> int:
    """The 32-bit hash `Signer` gives one shingle (b"w1 w2 ..."): a datasketch `hashfunc`."""
    total = 0
    for k, word in enumerate(shingle.split(b" ")):
        data = np.frombuffer(word + b" ", dtype=np.uint8).astype(np.uint64)
        weighted = np.sum(data * _K[np.arange(len(data)) & 255], dtype=np.uint64, keepdims=True)
        total += int(fmix64(weighted)[0]) * int(_C[k])
    return int(fmix64(np.array([total % (1 << 64)], np.uint64))[0]) >> 32


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word of every text, words per text); words are split on single spaces."""
    nonempty = np.array([bool(t) for t in texts], dtype=bool)
    counts = np.zeros(len(texts), np.int64)
    if not nonempty.any():
        return np.empty(0, np.uint64), counts
    # Texts end in a newline (normalized text has none), words in a space or that newline.
    data = np.frombuffer(
        bytearray("\n".join(t for t in texts if t).encode("utf-8") + b"\n"), np.uint8
    )
    text_end = np.flatnonzero(data == 10)
    if len(text_end) != nonempty.sum():
        raise ValueError("Signer.sign needs normalized texts (exact.normalize_text): no newlines")
    data[text_end] = 32  # every word closes with one space, weighing its length in
    space = data == 32
    word_end = np.cumsum(space)
    counts[nonempty] = np.diff(word_end[text_end], prepend=0)
    starts = np.flatnonzero(space)
    starts[1:] = starts[:-1] + 1
    starts[0] = 0
    position = np.arange(len(data)) - starts[word_end - space]  # byte's place in its word
    position &= 255
    weighted = data.astype(np.uint64)
    weighted *= _K[position]
    return fmix64(np.add.reduceat(weighted, starts)), counts


def _shingle_hashes(words: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit hash of every shingle, shingles per text), in text order."""
    per_text = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    word_start = np.cumsum(counts) - counts
    out_start = np.cumsum(per_text) - per_text
    total = len(words)
    sums = words * _C[0]
    for k in range(1, min(n, total)):  # sums[i] = sum_k words[i + k] * C[k], mod 2^64
        sums[: total - k] += words[k:] * _C[k]
    index = np.arange(per_text.sum()) + np.repeat(word_start - out_start, per_text)
    shingles = sums[index]
    short = np.flatnonzero((counts > 0) & (counts < n))  # one shingle of all their words
    if len(short):
        short_sums = np.zeros(len(short), np.uint64)
        for k in range(n - 1):
            has = counts[short] > k
            short_sums[has] += words[word_start[short[has]] + k] * _C[k]
        shingles[out_start[short]] = short_sums
    return (fmix64(shingles) >> np.uint64(32)).astype(np.uint32), per_text


class Signer:
    """MinHash signatures with one set of datasketch permutations (drawn once: they cost more
    than hashing a short page)."""

    def __init__(self, num_perm: int, seed: int, ngram: int):
        if not 1 <= ngram <= MAX_NGRAM:
            raise ValueError(f"ngram must be 1..{MAX_NGRAM}, got {ngram}")
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._a = np.ascontiguousarray(a, dtype=np.uint32)[:, None]
        self._b = np.ascontiguousarray(b, dtype=np.uint32)[:, None]
        self.num_perm, self.ngram = num_perm, ngram

    def sign(self, normalized: Sequence[str]) -> np.ndarray:
        """(len(normalized), num_perm) uint32; an empty text gets all 2^32-1, as in datasketch."""
        out = np.empty((len(normalized), self.num_perm), np.uint32)
        begin, size = 0, 0
        for i, text in enumerate(normalized):  # passes of ~_TEXT_BYTES to bound temporaries
            size += len(text) + 1
            if size >= _TEXT_BYTES or i == len(normalized) - 1:
                out[begin : i + 1] = self._sign_batch(normalized[begin : i + 1])
                begin, size = i + 1, 0
        return out

    def _sign_batch(self, texts: Sequence[str]) -> np.ndarray:
        words, counts = _word_hashes(texts)
        hashes, per_text = _shingle_hashes(words, counts, self.ngram)
        hashes = fmix32(hashes)
        out = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        nonempty = np.flatnonzero(per_text)
        starts = (np.cumsum(per_text) - per_text)[nonempty]
        block = np.empty((self.num_perm, _CHUNK), np.uint32)
        for lo in range(0, len(hashes), _CHUNK):
            hi = min(lo + _CHUNK, len(hashes))
            first = np.searchsorted(starts, lo, side="right") - 1  # text holding shingle lo
            last = np.searchsorted(starts, hi, side="left")
            segments = np.maximum(starts[first:last], lo) - lo
            view = block[:, : hi - lo]
            np.multiply(self._a, hashes[lo:hi], out=view)  # uint32: wraps mod 2^32
            view += self._b
            minima = np.minimum.reduceat(view, segments, axis=1).T
            rows = nonempty[first:last]
            out[rows] = np.minimum(out[rows], minima)
        return out


def signature_schema(num_perm: int, params: dict[str, Any]) -> pa.Schema:
    """One row per input document, in input order (row i of the signature shard = row i)."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("length", pa.int64()),  # characters of the raw text: survivor choice
            pa.field("exact_hash", pa.string()),  # exact.exact_hash of the normalized text
            pa.field("hashvalues", pa.list_(pa.uint32(), num_perm)),
        ],
        metadata={PARAMS_KEY: json.dumps(params, sort_keys=True).encode()},
    )


def written_params(schema: pa.Schema) -> dict[str, Any] | None:
    """The parameters a signature shard was written with (None if it carries none)."""
    raw = (schema.metadata or {}).get(PARAMS_KEY)
    return json.loads(raw) if raw else None


def hashvalues_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """A fixed-size-list column as an (n, num_perm) uint32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_perm)
