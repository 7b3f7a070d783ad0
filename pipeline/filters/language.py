"""Language filter: keep documents in the wanted languages, identified confidently enough.

The extract stage already ran py3langid and stored `language` / `language_score`; a document
without them (older data, other sources) is identified here. It runs first among the text
filters because the others' word and stop-word rules only make sense for English-like text.
The signals are the label and its score, not "is it wanted", so the language list is a
threshold: changing it re-decides from stored attributes.
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
    signal_names = ("label", "score")
    label_signals = frozenset({"label"})

    def __init__(self, config: LanguageConfig):
        super().__init__(config)
        self.keep = frozenset(config.languages)
        self.not_kept_reason = "language_not_" + "_".join(config.languages)

    def signals(self, doc: Document) -> Signals:
        lang, score = doc.get("language"), doc.get("language_score")
        if not lang or score is None:
            lang, score = detect_language(text_of(doc))
        return {"label": str(lang), "score": float(score)}

    def decide(self, signals: Signals) -> str | None:
        if signals["label"] not in self.keep:
            return self.not_kept_reason
        min_score = self.config.min_score
        if min_score is not None and float(signals["score"]) < min_score:
            return "language_low_score"
        return None
