"""Banded LSH as a partitioned sort on disk: candidate pairs without an in-memory index.

Each document's signature is cut into `bands` bands of `rows` values; two documents are
candidates when any band is equal (P = 1 - (1 - s^r)^b at Jaccard s, MMDS ch. 3.4). Signing
writes one hash per band per document to disk (`band_hashes`); then each (band, split) unit
reads that band's hashes of every shard, keeps those with `hash % splits == split`, sorts
them by (band hash, document index) and links only neighbours in that order (datatrove's
pattern: a bucket of k documents costs k - 1 edges, not k^2, and any chain through a bucket
yields the same connected components). Units run through `pmap` and hold ~24 bytes per
document of their partition, so memory is bounded by partition size, not corpus size.

Documents are numbered by their place in the concatenated band files: new documents first,
then documents of earlier versions (`new_docs` and up), which are never linked to each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.dedup.signatures import fmix64, odd_constants
from pipeline.documents import Source, locate
from pipeline.stage import ShardResult

_ROW_WEIGHTS = odd_constants(64, 0xBA4D)  # weight of a value by its place in the band


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P(two documents share at least one LSH bucket) = 1 - (1 - s^r)^b (MMDS ch. 3.4)."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


def lsh_threshold(bands: int, rows: int) -> float:
    """The S-curve's steepest point, ~(1/b)^(1/r): where candidate probability is ~1 - 1/e."""
    return (1.0 / bands) ** (1.0 / rows)


def save_array(array: np.ndarray, path: Source) -> None:
    """A scratch .npy for a later phase (a local path or URL), in C order for `load_rows`."""
    folder, name = locate(path)
    with folder.output(name) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))


def _npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a C-order .npy file (numpy's format module)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return shape, dtype, handle.tell()


def load_rows(path: Source, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) of a .npy written by `save_array`, reading only those: memory-mapped
    when local, one ranged read of a remote file (a band of every shard, not all bands)."""
    folder, name = locate(path)
    if folder.is_local:
        return np.load(folder.local_path(name), mmap_mode="r")[start:stop]
    with folder.open(name, "rb") as handle:
        shape, dtype, offset = _npy_header(handle)
        count = max((shape[0] if stop is None else min(stop, shape[0])) - start, 0)
        row = dtype.itemsize * math.prod(shape[1:])
        handle.seek(offset + start * row)
        data = handle.read(count * row)
    return np.frombuffer(data, dtype).reshape(count, *shape[1:])


def array_shape(path: Source) -> tuple[int, ...]:
    """The shape of a .npy written by `save_array`, from its header alone."""
    folder, name = locate(path)
    if folder.is_local:
        return np.load(folder.local_path(name), mmap_mode="r").shape
    with folder.open(name, "rb") as handle:
        return _npy_header(handle)[0]


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64: a 64-bit hash of each band of each (n, num_perm) signature row.

    Equal bands give equal hashes; unequal ones collide with probability ~2^-64 (a weighted
    sum of the values, MurmurHash3-finalized), negligible against the LSH's own collisions.
    """
    n = len(signatures)
    values = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    values *= _ROW_WEIGHTS[:rows]
    return np.ascontiguousarray(fmix64(values.sum(axis=2, dtype=np.uint64)).T)


@dataclass(frozen=True)
class BandTask:
    """One LSH partition: band `band`, band hashes with `hash % splits == split`."""

    band: int
    split: int
    splits: int
    band_files: tuple[Source, ...]  # (bands, rows) uint64 .npy per shard, in document order
    new_docs: int  # documents numbered >= new_docs belong to earlier versions
    out: Source  # edges, (2, m) int64 .npy
    # With verification: (rows, num_perm) uint32 .npy per shard, aligned with band_files.
    signature_files: tuple[Source, ...] = ()
    verify_threshold: float | None = None


def link_band(task: BandTask) -> ShardResult:
    """Sort one partition, write the edges between equal neighbours; counts in `extra`.

    candidate_pairs: neighbour pairs with equal band hash (k - 1 per bucket of k, pairs of two
    earlier documents excluded). verified_away_pairs: with `verify_threshold`, how many of those
    links the check removed (a bucket split into c verified groups loses c - 1 links).
    """
    hashes, index = _read_partition(task)
    order = np.argsort(hashes, kind="stable")  # stable: index ascending within a bucket
    hashes, index = hashes[order], index[order]
    same = np.flatnonzero(hashes[1:] == hashes[:-1])
    same = same[index[same] < task.new_docs]  # index sorted: pair of earlier docs iff left one is
    edges = np.stack([index[same], index[same + 1]])
    away = 0
    if task.verify_threshold is not None and len(same):
        edges, away = _verify(task, hashes, index)
    save_array(edges, task.out)
    extra = {"candidate_pairs": len(same), "verified_away_pairs": away}
    name = f"band-{task.band:03d}-{task.split:03d}"
    return ShardResult(shard=name, docs_in=len(hashes), docs_out=len(hashes), extra=extra)


def _read_partition(task: BandTask) -> tuple[np.ndarray, np.ndarray]:
    """This unit's (band hash, document index) pairs; one shard's band in memory at a time."""
    hashes, index, offset = [], [], 0
    for path in task.band_files:
        band = load_rows(path, task.band, task.band + 1)[0]
        keep = np.flatnonzero(band % np.uint64(task.splits) == task.split)
        hashes.append(np.asarray(band[keep]))
        index.append(keep + offset)
        offset += len(band)
    if not hashes:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    return np.concatenate(hashes), np.concatenate(index).astype(np.int64)


def _verify(task: BandTask, hashes: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, int]:
    """Per bucket, link only groups whose signatures agree on >= verify_threshold positions.

    Within a bucket, documents join when any pair between them passes (components of the
    verified-pair graph), so a false positive between two true duplicates cannot cut a chain,
    and the result does not depend on the documents' order. Buckets of two (most of them) are
    checked all at once; in bigger ones identical signatures are compared once, the rest
    costs k^2 comparisons for k distinct signatures.
    """
    threshold = task.verify_threshold
    same = np.flatnonzero(hashes[1:] == hashes[:-1])
    starts = np.flatnonzero(np.r_[True, np.diff(same) != 1])
    first, size = same[starts], np.diff(np.r_[starts, len(same)]) + 1  # bucket positions
    keep = index[first] < task.new_docs  # buckets of earlier documents only: nothing to do
    first, size = first[keep], size[keep]
    pairs, big = (
        first[size == 2],
        [np.arange(f, f + k) for f, k in zip(first, size, strict=True) if k > 2],
    )
    positions = np.unique(np.concatenate([pairs, pairs + 1, *big]))
    signatures = _gather_signatures(task, index[positions])

    def rows(at: np.ndarray) -> np.ndarray:
        return signatures[np.searchsorted(positions, at)]

    agree = (rows(pairs) == rows(pairs + 1)).mean(axis=1) >= threshold
    edges = [np.stack([index[pairs[agree]], index[pairs[agree] + 1]])]
    away = int((~agree).sum())
    for bucket in big:
        docs = index[bucket]  # ascending: new documents first
        unique, inverse = np.unique(rows(bucket), axis=0, return_inverse=True)
        agree = np.stack([(unique == row).mean(axis=1) for row in unique]) >= threshold
        groups, label = connected_components(coo_matrix(np.triu(agree, 1)), directed=False)
        label = label[inverse.ravel()]
        away += groups - 1
        # Link each group to its first (smallest) document; groups of earlier docs only: none.
        head = np.full(groups, np.iinfo(np.int64).max)
        np.minimum.at(head, label, docs)
        link = (head[label] != docs) & (head[label] < task.new_docs)
        edges.append(np.stack([head[label][link], docs[link]]))
    return np.concatenate(edges, axis=1).astype(np.int64), away


def _gather_signatures(task: BandTask, docs: np.ndarray) -> np.ndarray:
    """Signature rows of `docs` (document indices) from the memory-mapped per-shard files."""
    shapes = [array_shape(p) for p in task.signature_files]
    offsets = np.cumsum([0, *(shape[0] for shape in shapes)])
    shard = np.searchsorted(offsets, docs, side="right") - 1
    out = np.empty((len(docs), shapes[0][1]), np.uint32)
    for s in np.unique(shard):
        mask = shard == s
        rows = docs[mask] - offsets[s]
        first = int(rows.min())  # read the span the rows cover, no more
        out[mask] = load_rows(task.signature_files[s], first, int(rows.max()) + 1)[rows - first]
    return out
