"""MinHash signatures of documents (datasketch) and the LSH arithmetic behind band settings.

A document is the set of its word n-grams ("shingles") over the normalized text; two
documents' MinHash signatures agree in each position with probability equal to the Jaccard
similarity of those sets (Broder 1997). Signatures are stored per shard so the global step, and
later incremental runs, never need the text again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
from datasketch import MinHash

# datasketch >= 2.0's default scheme: input hashes pre-mixed, then a*h+b mod 2^32 with odd a,
# a bijection, so permuting adds no collisions (the "legacy" scheme inflated Jaccard estimates
# on large sets, ekzhu/datasketch#212). Values are uint32, half the size of legacy uint64.
SCHEME = "affine32"
PARAMS_KEY = b"llmforge.dedup"  # Parquet schema metadata: what the signatures were made with


def word_shingles(normalized: str, n: int) -> set[bytes]:
    """The distinct word n-grams of a normalized text; a text under n words is one shingle.

    Without the short-text rule a 3-word page would have no shingles, an all-max signature,
    and collide with every other short page.
    """
    words = normalized.split()
    if not words:
        return set()
    if len(words) < n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


class Signer:
    """MinHash signatures sharing one set of permutations.

    Making the permutations costs more than hashing a short page, so they are drawn once and
    each document works on a copy (what `datasketch.MinHash.bulk` does internally).
    """

    def __init__(self, num_perm: int, seed: int):
        self._template = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)

    def sign(self, shingles: Iterable[bytes]) -> np.ndarray:
        minhash = self._template.copy()
        minhash.update_batch(shingles)
        return minhash.hashvalues  # (num_perm,) uint32


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


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of agreeing signature positions: an unbiased Jaccard estimate, sd ~ 1/sqrt(k)."""
    return float(np.count_nonzero(a == b)) / len(a)


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P(two documents share at least one LSH bucket) = 1 - (1 - s^r)^b (MMDS ch. 3.4)."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """The S-curve's steepest point, ~(1/b)^(1/r): where candidate probability is ~1 - 1/e."""
    return (1.0 / bands) ** (1.0 / rows)
