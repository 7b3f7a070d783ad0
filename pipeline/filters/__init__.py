"""Quality filters (language, Gopher, C4, FineWeb) and the filter stage that runs them."""

from pipeline.filters.base import DocumentFilter, Rule, StepConfig
from pipeline.filters.c4 import C4Config, C4Filter
from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from pipeline.filters.language import LanguageConfig, LanguageFilter
from pipeline.filters.stage import (
    FilterConfig,
    FilterTask,
    build_filters,
    filter_document,
    filter_shard,
    run,
)

__all__ = [
    "C4Config",
    "C4Filter",
    "DocumentFilter",
    "FilterConfig",
    "FilterTask",
    "FineWebQualityConfig",
    "FineWebQualityFilter",
    "GopherQualityConfig",
    "GopherQualityFilter",
    "GopherRepetitionConfig",
    "GopherRepetitionFilter",
    "LanguageConfig",
    "LanguageFilter",
    "Rule",
    "StepConfig",
    "build_filters",
    "filter_document",
    "filter_shard",
    "run",
]
