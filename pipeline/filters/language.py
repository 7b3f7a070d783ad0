"""Language filter: keep documents in the wanted languages, identified confidently enough.

The extract stage already ran py3langid and stored `language` / `language_score`; a document
without them (older data, other sources) is identified here. It runs first because the other
filters' word and stop-word rules only make sense for English-like text.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.filters.base import Document, DocumentFilter, Signals, StepConfig, text_of
from pipeline.langid import detect_language


class LanguageConfig(StepConfig):
    # ISO 639-1 codes to keep (the py3langid labels the extract stage writes).
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    min_score: float | None = 0.65  # FineWeb and DCLM keep English at score >= 0.65


class LanguageFilter(DocumentFilter):
    """Reasons: `language_not_<codes>` (wrong language), `language_low_score` (unsure)."""

    name = "language"

    def __init__(self, config: LanguageConfig):
        super().__init__(config)
        self.keep = frozenset(config.languages)
        self.not_kept_reason = "language_not_" + "_".join(config.languages)

    def signals(self, doc: Document) -> Signals:
        lang, score = doc.get("language"), doc.get("language_score")
        if not lang or score is None:
            lang, score = detect_language(text_of(doc))
        return {"language_kept": float(lang in self.keep), "language_score": float(score)}

    def decide(self, signals: Signals) -> str | None:
        if not signals["language_kept"]:
            return self.not_kept_reason
        min_score = self.config.min_score
        if min_score is not None and signals["language_score"] < min_score:
            return "language_low_score"
        return None
