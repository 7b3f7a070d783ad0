"""Settings of the dedup stage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.dedup.exact import NORMALIZATION
from pipeline.dedup.lsh import lsh_threshold
from pipeline.dedup.signatures import MAX_NGRAM, SCHEME, SHINGLE_HASH


class DedupConfig(BaseModel):
    """Exact and near-duplicate removal, optionally against earlier dataset versions.

    The LSH is set by `bands` x `rows` rather than a threshold: they are what FineWeb publishes
    and what decides the S-curve, while datasketch's threshold-to-params optimizer gives other
    values (12 x 9 for 0.72 at 112 permutations). `threshold` is derived from them.
    """

    model_config = ConfigDict(extra="forbid")

    exact: bool = True  # drop documents whose normalized text repeats (exact.normalize_text)
    near: bool = True  # drop near duplicates found by MinHash-LSH
    ngram: int = Field(5, ge=1, le=MAX_NGRAM)  # word 5-grams: FineWeb (datatrove n_grams=5)
    # FineWeb: 112 hashes = 14 buckets x 8 hashes. P(candidate) = 1 - (1 - s^8)^14 is 5% at
    # Jaccard 0.5, 56% at 0.7, 92% at 0.8, 98.8% at 0.85, 99.96% at 0.9; threshold ~0.72.
    num_perm: int = Field(112, ge=2)  # may exceed bands*rows: spare values sharpen verification
    bands: int = Field(14, ge=2)
    rows: int = Field(8, ge=1, le=64)
    seed: int = 1  # permutation seed; signatures made with another seed are not comparable
    # LSH units per band: each sorts the band hashes with hash % band_splits == its number, so
    # a unit holds ~24 bytes x documents / band_splits (1M documents, 1 split: ~24 MB).
    band_splits: int = Field(1, ge=1)
    # Keep an LSH link only if the two signatures agree on >= this fraction of all num_perm
    # positions (an estimate of Jaccard, sd ~ 1/sqrt(num_perm)). FineWeb/datatrove do not check
    # (None); 0.7, just under the S-curve's 0.72 midpoint, drops bucket collisions of dissimilar
    # pages. bench/dedup.py quality, 3 seeds: documents removed with no other document at
    # Jaccard >= 0.6 went from 2-7 (of ~750) to 0; recall at Jaccard >= 0.85 stayed 1.0, at
    # 0.7-0.8 it fell from 0.74-0.85 to 0.68-0.75.
    verify_threshold: float | None = Field(0.7, ge=0.0, le=1.0)
    # Earlier dedup version folders (each with signatures/): new documents matching one of
    # their documents are removed as dedup_exact_previous / dedup_near_previous. For
    # `llmforge stage dedup` and Python callers; pipeline runs pass earlier versions as
    # `{stage, version_id}` inputs instead (run.dedup_against_previous_runs), never paths.
    against: list[str] = []

    @model_validator(mode="after")
    def _bands_fit(self) -> DedupConfig:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands*rows = {self.bands}*{self.rows} exceeds num_perm = {self.num_perm}"
            )
        return self

    @property
    def threshold(self) -> float:
        """Jaccard similarity at the S-curve's steepest point, (1/bands)^(1/rows)."""
        return lsh_threshold(self.bands, self.rows)

    def signature_params(self) -> dict[str, Any]:
        """Everything that must match for two signatures to be comparable."""
        return {
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "scheme": SCHEME,
            "shingle_hash": SHINGLE_HASH,
            "normalization": NORMALIZATION,
        }
