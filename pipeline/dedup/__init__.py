"""Deduplication: exact (normalized-text hash), then near duplicates with MinHash-LSH."""

from pipeline.dedup.clusters import Clustering, UnionFind, cluster_documents
from pipeline.dedup.exact import exact_hash, normalize_text
from pipeline.dedup.minhash import Signer, candidate_probability, lsh_threshold, word_shingles
from pipeline.dedup.stage import (
    DedupConfig,
    SignTask,
    WriteTask,
    find_duplicates,
    run,
    sign_shard,
    write_shard,
)

__all__ = [
    "Clustering",
    "DedupConfig",
    "SignTask",
    "Signer",
    "UnionFind",
    "WriteTask",
    "candidate_probability",
    "cluster_documents",
    "exact_hash",
    "find_duplicates",
    "lsh_threshold",
    "normalize_text",
    "run",
    "sign_shard",
    "word_shingles",
    "write_shard",
]
