"""Deduplication: exact (normalized-text hash), then near duplicates with MinHash-LSH.

Modules: `exact` (normalization, exact hash), `signatures` (vectorized MinHash), `lsh` (banded
LSH as an on-disk partitioned sort), `components` (clusters, survivors), `incremental` (dedup
against earlier versions), `config` (DedupConfig), `shards` (per-shard units), `stage`
(the four phases and `run`), `spec` (the Stage the pipeline lists).
"""

from pipeline.dedup.components import Clustering, cluster_documents, preference
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.exact import exact_hash, normalize_text
from pipeline.dedup.incremental import IndexTask, earlier_versions, index_shard
from pipeline.dedup.lsh import (
    BandTask,
    band_hashes,
    candidate_probability,
    link_band,
    lsh_threshold,
)
from pipeline.dedup.shards import SignTask, WriteTask, sign_shard, write_shard
from pipeline.dedup.signatures import Signer, shingle_hash, word_shingles
from pipeline.dedup.spec import STAGE
from pipeline.dedup.stage import find_duplicates, run

__all__ = [
    "STAGE",
    "BandTask",
    "Clustering",
    "DedupConfig",
    "IndexTask",
    "SignTask",
    "Signer",
    "WriteTask",
    "band_hashes",
    "candidate_probability",
    "cluster_documents",
    "earlier_versions",
    "exact_hash",
    "find_duplicates",
    "index_shard",
    "link_band",
    "lsh_threshold",
    "normalize_text",
    "preference",
    "run",
    "shingle_hash",
    "sign_shard",
    "word_shingles",
    "write_shard",
]
