"""Which filters run, in which order, and which part of that decides the stored signals.

The order and settings default to FineWeb's pipeline (Penedo et al. 2024): URL blocklist,
language, Gopher repetition, Gopher quality, C4 (terminal-punctuation rule off), FineWeb
quality, then PII redaction; C4's bad-words rule sits after C4, off as in FineWeb.

`signals_config(config)` is the part of a config that changes what the filters *measure*;
everything else (thresholds, the language list, replacement strings) only changes what they
*decide*. Two configs with the same signals config can share stored attributes: the later
run re-decides from them instead of measuring again (`thresholds_only_change`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.filters.badwords import C4BadWordsConfig, C4BadWordsFilter
from pipeline.filters.base import DocumentFilter
from pipeline.filters.c4 import C4Config, C4Filter
from pipeline.filters.decontaminate import DecontaminateConfig, DecontaminateFilter
from pipeline.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from pipeline.filters.language import LanguageConfig, LanguageFilter
from pipeline.filters.pii import PIIConfig, PIIFilter
from pipeline.filters.url import UrlConfig, UrlFilter

# Bump when what a signal means changes without its name changing: old attributes go stale.
ATTRIBUTES_FORMAT = 2  # 2: words and sentences counted as datatrove counts them


class FilterConfig(BaseModel):
    """All filters, in the order they run (the field order is the pipeline order)."""

    model_config = ConfigDict(extra="forbid")

    url: UrlConfig = Field(default_factory=UrlConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = Field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = Field(default_factory=GopherQualityConfig)
    c4: C4Config = Field(default_factory=C4Config)
    c4_badwords: C4BadWordsConfig = Field(default_factory=C4BadWordsConfig)
    fineweb: FineWebQualityConfig = Field(default_factory=FineWebQualityConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)


FILTERS: dict[str, type[DocumentFilter]] = {
    cls.name: cls
    for cls in (
        UrlFilter,
        LanguageFilter,
        GopherRepetitionFilter,
        GopherQualityFilter,
        C4Filter,
        C4BadWordsFilter,
        FineWebQualityFilter,
        PIIFilter,
        DecontaminateFilter,
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


def signals_config(config: FilterConfig) -> dict[str, Any]:
    """What determines every stored signal: the enabled filters in order, the signals each
    writes, and the settings that shape them (C4's line rules, stop words, list contents).

    Deterministic and JSON-serialisable; it reads the list files it names, so an edited
    blocklist counts as a change. Raises DataError for an unreadable list file.
    """
    steps = {}
    for name in FilterConfig.model_fields:
        step = getattr(config, name)
        if step.enabled:
            steps[name] = {"signals": list(FILTERS[name].signal_names), **step.signals_key()}
    return {"format": ATTRIBUTES_FORMAT, "filters": steps}


def thresholds_only_change(old: FilterConfig, new: FilterConfig) -> bool:
    """True when `new` can be decided from attributes that `old` wrote (nothing it measures
    changed); also True for equal configs."""
    return signals_config(old) == signals_config(new)
