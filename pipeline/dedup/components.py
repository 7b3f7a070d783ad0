"""From edges to duplicate clusters and one deterministic survivor per cluster, vectorized.

Documents are nodes 0..n-1 (this run's, "new") and n.. (earlier versions'); edges come from
the LSH partitions and from exact groups (same normalized-text hash). Clusters are the
connected components (scipy's csgraph: a vectorized union-find over all edges at once).

- A cluster with an earlier document: every new document in it is removed (the content was
  already published); it points at the earlier document with the same normalized text if
  there is one (an exact previous duplicate), else at the cluster's first earlier document.
- Otherwise the survivor is the longest text, ties going to the smallest id; the others are
  removed, as exact duplicates when their normalized text repeats a longer (or equal-length,
  smaller-id) text's, else as near duplicates.

Nothing depends on shard layout, shard order or worker count: the same documents give the
same clusters and survivors (earlier documents are numbered by `against` order, then shard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Clustering:
    """Per new document: the document kept in its place and why; counts for the manifest."""

    duplicate_of: np.ndarray  # int64 node; == own index when kept, >= new_docs: earlier doc
    exact: np.ndarray  # bool; removed as a copy of the same normalized text
    clusters: int  # clusters of 2+ new documents (without earlier documents)
    largest_cluster: int  # new documents in the biggest such cluster (1 if none repeats)

    @property
    def removed(self) -> np.ndarray:
        return np.flatnonzero(self.duplicate_of != np.arange(len(self.duplicate_of)))


def preference(ids: pa.Array | pa.ChunkedArray, lengths: np.ndarray) -> np.ndarray:
    """Rank of each document as a survivor (0 = best): longest text, then smallest id."""
    by_id = pc.sort_indices(ids).to_numpy()
    id_rank = np.empty(len(by_id), np.int64)
    id_rank[by_id] = np.arange(len(by_id))
    order = np.lexsort((id_rank, -np.asarray(lengths, np.int64)))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def best_in_group(groups: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each element, the element of its group with the lowest rank."""
    if not len(groups):
        return np.empty(0, np.int64)
    order = np.lexsort((rank, groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    best = np.empty(int(groups.max()) + 1, np.int64)
    best[sorted_groups[starts]] = order[starts]
    return best[groups]


def first_in_group(groups: np.ndarray, offset: int, size: int) -> np.ndarray:
    """Per group id (0..size-1): offset + first position holding it, or -1."""
    first = np.full(size, -1, np.int64)
    present, position = np.unique(groups, return_index=True)
    first[present] = offset + position
    return first


def cluster_documents(
    rank: np.ndarray, exact_groups: np.ndarray, edges: np.ndarray, *, exact: bool
) -> Clustering:
    """Cluster new documents (ranked by `preference`) with earlier ones.

    `exact_groups`: one int per node, new then earlier, equal for equal normalized text;
    `edges`: (2, m) node pairs from the LSH.
    """
    n, total = len(rank), len(exact_groups)
    new = np.arange(n)
    groups = exact_groups[:n]
    links = [edges.astype(np.int64, copy=False)]
    copy = np.zeros(n, bool)
    earlier_copy = np.full(n, -1, np.int64)
    if exact and n:
        representative = best_in_group(groups, rank)
        copy = representative != new
        links.append(np.stack([new[copy], representative[copy]]))
        size = int(exact_groups.max()) + 1
        earlier_copy = first_in_group(exact_groups[n:], n, size)[groups]
        has = earlier_copy >= 0
        links.append(np.stack([new[has], earlier_copy[has]]))
    pairs = np.concatenate(links, axis=1)
    graph = coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), (total, total))
    count, label = connected_components(graph, directed=False)

    earlier_root = first_in_group(label[n:], n, count)[label[:n]]
    survivor = best_in_group(label[:n], rank)
    previous = earlier_root >= 0
    duplicate_of = np.where(
        previous, np.where(earlier_copy >= 0, earlier_copy, earlier_root), survivor
    )
    is_exact = np.where(previous, earlier_copy >= 0, copy)  # a copy is never its group's best

    sizes = np.bincount(label[:n][~previous], minlength=count) if n else np.zeros(0, np.int64)
    return Clustering(
        duplicate_of=duplicate_of.astype(np.int64),
        exact=is_exact,
        clusters=int((sizes > 1).sum()),
        largest_cluster=int(sizes.max()) if len(sizes) else 0,
    )
