"""From signatures to duplicate clusters and one deterministic survivor per cluster.

Exact groups (same normalized-text hash) are joined first; one member of each group goes into
a `datasketch.MinHashLSH` index, and documents sharing a bucket in any band are joined with a
union-find. Within a bucket only neighbours in sorted order are joined (datatrove's trick:
O(bucket size) edges, not O(size^2)), since any spanning chain gives the same clusters; with
`verify_threshold`, pairs must also pass a signature check (`_link_verified`).

Determinism: documents are first put in a canonical order (by id, then exact hash, length),
every index below is a position in that order, and the survivor of a cluster is its longest
text, ties going to the smallest id (the same rule picks which member of an exact group the
index sees, so a survivor is always its group's). So the same documents give the same clusters and
survivors whatever the shard layout, shard order or worker count.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from pipeline.dedup.minhash import SCHEME, estimated_jaccard


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of a and b; False if they were already one."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return False
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        return True


@dataclass
class Clustering:
    """Per document (in the caller's order): the document kept in its place and which pass
    removed it; plus counts for the manifest."""

    survivor: np.ndarray  # int64 index; survivor[i] == i for kept documents
    # bool; True where the exact pass removed it (its normalized text repeats its group's
    # representative, which is the survivor or was itself removed by the near pass)
    exact: np.ndarray
    clusters: int  # clusters of 2+ documents
    largest_cluster: int  # documents in the biggest cluster (1 when nothing is duplicated)
    candidate_pairs: int  # LSH bucket pairs examined between documents not yet in one cluster
    verified_away_pairs: int  # of those, pairs rejected by verify_threshold


def cluster_documents(
    ids: Sequence[str],
    lengths: Sequence[int],
    hashes: Sequence[str],
    hashvalues: np.ndarray | None,
    *,
    exact: bool,
    bands: int,
    rows: int,
    seed: int,
    verify_threshold: float | None = None,
) -> Clustering:
    """Cluster documents; `hashvalues` (n, num_perm) None skips the near-duplicate pass."""
    n = len(ids)
    order = sorted(range(n), key=lambda i: (ids[i], hashes[i], lengths[i]))
    ids = [ids[i] for i in order]
    hashes = [hashes[i] for i in order]
    lengths = [int(lengths[i]) for i in order]
    uf = UnionFind(n)

    # Exact pass: each group of equal normalized text keeps its longest (then first) member,
    # the only one the LSH index sees. Signatures are of the normalized text, so equal too.
    representative = list(range(n))
    if exact:
        group_rep: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h not in group_rep or lengths[i] > lengths[group_rep[h]]:
                group_rep[h] = i
        representative = [group_rep[h] for h in hashes]
        for i, r in enumerate(representative):
            uf.union(r, i)
    representatives = sorted(set(representative))

    pairs = away = 0
    if hashvalues is not None and representatives:
        signatures = _Reordered(hashvalues, order)
        pairs, away = _link_near(
            uf, representatives, signatures, bands, rows, seed, verify_threshold
        )

    # In canonical order, a strict '>' keeps the earlier (smaller id) document on equal length:
    # the same rule as for group representatives, so a survivor is its group's representative.
    best: dict[int, int] = {}
    for i in range(n):
        root = uf.find(i)
        if root not in best or lengths[i] > lengths[best[root]]:
            best[root] = i
    sizes = Counter(uf.find(i) for i in range(n))

    survivor = np.empty(n, dtype=np.int64)
    is_exact = np.zeros(n, dtype=bool)
    for i in range(n):
        s = best[uf.find(i)]
        survivor[order[i]] = order[s]
        is_exact[order[i]] = representative[i] != i
    return Clustering(
        survivor=survivor,
        exact=is_exact,
        clusters=sum(1 for size in sizes.values() if size > 1),
        largest_cluster=max(sizes.values(), default=0),
        candidate_pairs=pairs,
        verified_away_pairs=away,
    )


class _Reordered:
    """Signature rows by canonical index, without copying the (n, num_perm) matrix."""

    def __init__(self, hashvalues: np.ndarray, order: list[int]):
        self.hashvalues, self.order = hashvalues, order
        self.num_perm = hashvalues.shape[1]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.hashvalues[self.order[i]]


def _link_near(
    uf: UnionFind,
    keys: list[int],
    signatures: _Reordered,
    bands: int,
    rows: int,
    seed: int,
    verify_threshold: float | None,
) -> tuple[int, int]:
    """Index `keys` in a MinHashLSH and union bucket mates; returns (pairs, verified away)."""
    lsh = MinHashLSH(num_perm=signatures.num_perm, params=(bands, rows))
    for key in keys:
        minhash = LeanMinHash(seed=seed, hashvalues=signatures[key], scheme=SCHEME)
        lsh.insert(key, minhash, check_duplication=False)
    pairs = away = 0
    for table in lsh.hashtables:  # one band at a time
        for bucket, count in table.itemcounts().items():
            if count < 2:
                continue
            members = table.get(bucket)
            if verify_threshold is None:
                for a, b in itertools.pairwise(sorted(members)):
                    pairs += uf.union(a, b)
            else:
                p, w = _link_verified(uf, sorted(members), signatures, verify_threshold)
                pairs, away = pairs + p, away + w
    return pairs, away


def _link_verified(
    uf: UnionFind, members: list[int], signatures: _Reordered, threshold: float
) -> tuple[int, int]:
    """Union bucket mates whose estimated Jaccard reaches `threshold`.

    Neighbour links no longer suffice (a false positive between two true duplicates would cut
    the chain), so each member is checked against the earlier ones, a group at a time: one
    verified pair joins a whole group, and groups already in its cluster need no check. A
    bucket of k true duplicates costs k - 1 comparisons; only rejected pairs cost more.
    """
    pairs = away = 0
    groups: list[list[int]] = []  # members seen so far; each group lies in one cluster
    for m in members:
        merged, apart = [m], []
        for group in groups:
            linked = uf.find(group[0]) == uf.find(m)
            if not linked:
                for other in group:
                    pairs += 1
                    if estimated_jaccard(signatures[m], signatures[other]) >= threshold:
                        linked = uf.union(m, other)
                        break
                    away += 1
            if linked:
                merged.extend(group)
            else:
                apart.append(group)
        groups = [merged, *apart]
    return pairs, away
