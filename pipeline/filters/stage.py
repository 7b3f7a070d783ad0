"""The filter stage: run the configured filters over every shard of a documents dataset.

Order and settings default to FineWeb's pipeline (Penedo et al. 2024): language, Gopher
repetition, Gopher quality, C4 (terminal-punctuation rule off), FineWeb quality. Each input
shard `part-NNNNN.parquet` becomes `data/part-NNNNN.parquet` (kept, possibly cleaned by C4)
and `removed/part-NNNNN.parquet` (the original document plus the first failing reason).

    from pipeline.filters import FilterConfig, run
    result = run(FilterConfig(), Path("extracted/"), Path("filtered.tmp/"))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.documents import (
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    ShardWriter,
    iter_documents,
    list_shards,
    removed_row,
)
from pipeline.filters.base import Document, DocumentFilter
from pipeline.filters.c4 import C4Config, C4Filter
from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from pipeline.filters.language import LanguageConfig, LanguageFilter
from pipeline.stage import EmptyStageError, ParallelMap, ShardResult, StageResult, serial_map

STAGE = "filter"


class FilterConfig(BaseModel):
    """All filters, in the order they run (the field order is the pipeline order)."""

    model_config = ConfigDict(extra="forbid")

    language: LanguageConfig = Field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    c4: C4Config = Field(default_factory=C4Config)
    fineweb: FineWebQualityConfig = Field(default_factory=FineWebQualityConfig)


FILTERS: dict[str, type[DocumentFilter]] = {
    cls.name: cls
    for cls in (
        LanguageFilter,
        GopherRepetitionFilter,
        GopherQualityFilter,
        C4Filter,
        FineWebQualityFilter,
    )
}


def build_filters(config: FilterConfig) -> list[DocumentFilter]:
    """The enabled filters, in FilterConfig's field order."""
    filters = []
    for name in FilterConfig.model_fields:
        step = getattr(config, name)
        if step.enabled:
            filters.append(FILTERS[name](step))
    return filters


def filter_document(filters: list[DocumentFilter], doc: Document) -> tuple[Document, str | None]:
    """Run `doc` through `filters`: (the document as rewritten so far, first failing reason)."""
    for step in filters:
        doc = step.transform(doc)
        reason = step.decide(step.signals(doc))
        if reason is not None:
            return doc, reason
    return doc, None


@dataclass(frozen=True)
class FilterTask:
    """One shard's work; small and picklable so any ParallelMap can ship it."""

    input_path: Path
    output_path: Path
    removed_path: Path
    config: FilterConfig


def filter_shard(task: FilterTask) -> ShardResult:
    filters = build_filters(task.config)
    result = ShardResult(shard=task.input_path.name)
    drops: Counter[str] = Counter()
    chars_in = chars_out = 0
    with (
        ShardWriter(task.output_path, DOCUMENT_SCHEMA) as kept,
        ShardWriter(task.removed_path, REMOVED_SCHEMA) as removed,
    ):
        for doc in iter_documents(task.input_path):
            result.docs_in += 1
            chars_in += len(doc.get("text") or "")
            cleaned, reason = filter_document(filters, doc)
            if reason is None:
                kept.write(cleaned)
                chars_out += len(cleaned.get("text") or "")
            else:
                removed.write(removed_row(doc, reason, STAGE))
                drops[reason] += 1
    result.docs_out = kept.rows
    result.drops = dict(sorted(drops.items()))
    # C4 rewrites kept documents; the character counts show how much text that (and the
    # dropped documents) took away.
    result.extra = {"chars_in": chars_in, "chars_out": chars_out}
    return result


def run(
    config: FilterConfig, input_dir: Path, out_dir: Path, pmap: ParallelMap = serial_map
) -> StageResult:
    """Filter every shard of `input_dir` into `out_dir`; raises EmptyStageError if none kept."""
    out_dir = Path(out_dir)
    tasks = [
        FilterTask(shard, out_dir / "data" / shard.name, out_dir / "removed" / shard.name, config)
        for shard in list_shards(input_dir)
    ]
    shard_results = pmap(filter_shard, tasks, STAGE)
    totals = {key: sum(r.extra[key] for r in shard_results) for key in ("chars_in", "chars_out")}
    result = StageResult.from_shards(shard_results, extra=totals)
    if result.docs_out == 0:
        raise EmptyStageError(STAGE, result.drops)
    return result
