"""Filters (URL, language, Gopher, C4, FineWeb, PII) and the filter stage that runs them."""

from pipeline.filters.badwords import C4BadWordsConfig, C4BadWordsFilter
from pipeline.filters.base import DocumentFilter, Rule, StepConfig
from pipeline.filters.c4 import C4Config, C4Filter
from pipeline.filters.config import (
    FILTERS,
    FilterConfig,
    build_filters,
    signals_config,
    thresholds_only_change,
)
from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from pipeline.filters.language import LanguageConfig, LanguageFilter
from pipeline.filters.pii import PIIConfig, PIIFilter
from pipeline.filters.shard import FilterTask, filter_document, filter_shard
from pipeline.filters.spec import STAGE
from pipeline.filters.stage import retune, run
from pipeline.filters.url import UrlConfig, UrlFilter

__all__ = [
    "FILTERS",
    "STAGE",
    "C4BadWordsConfig",
    "C4BadWordsFilter",
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
    "PIIConfig",
    "PIIFilter",
    "Rule",
    "StepConfig",
    "UrlConfig",
    "UrlFilter",
    "build_filters",
    "filter_document",
    "filter_shard",
    "retune",
    "run",
    "signals_config",
    "thresholds_only_change",
]
