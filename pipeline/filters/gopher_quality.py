"""Gopher quality rules (Rae et al. 2021, "Scaling Language Models", App. A.1.1).

Document-level heuristics that catch boilerplate, word lists and non-prose: length, mean word
length, symbol density, bullet/ellipsis lines, alphabetic words and English stop words.
Defaults are datatrove's `GopherQualityFilter`, which FineWeb used unchanged.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from pipeline.filters.base import (
    DocumentFilter,
    Rule,
    Signals,
    StepConfig,
    text_of,
    words_only,
)

_LETTER = re.compile(r"[^\W\d_]")  # a word character that is not a digit or underscore

# Gopher App. A.1.1 / datatrove STOP_WORDS.
STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQualityConfig(StepConfig):
    signal_fields: ClassVar[tuple[str, ...]] = ("stop_words",)  # shapes the stop-word count
    min_doc_words: int | None = 50  # Gopher App. A.1.1: 50..100,000 non-symbol words
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3  # Gopher App. A.1.1: mean word length 3..10 chars
    max_avg_word_length: float | None = 10
    max_hash_word_ratio: float | None = 0.1  # Gopher: "#" per word <= 0.1
    max_ellipsis_word_ratio: float | None = 0.1  # Gopher: "..." or "…" per word <= 0.1
    max_bullet_lines_ratio: float | None = 0.9  # Gopher: <= 90% lines start with a bullet
    max_ellipsis_lines_ratio: float | None = 0.3  # Gopher: <= 30% lines end with an ellipsis
    # Gopher: >= 80% of words contain an alphabetic character (datatrove names this field
    # max_non_alpha_words_ratio, but it is a lower bound on alphabetic words).
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2  # Gopher: at least 2 of STOP_WORDS
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS))


class GopherQualityFilter(DocumentFilter):
    """Gopher's quality heuristics; reasons keep datatrove's names (`gopher_short_doc`, ...)."""

    name = "gopher_quality"
    signal_names = (
        "word_count",
        "stop_words",
        "mean_word_length",
        "hash_word_ratio",
        "ellipsis_word_ratio",
        "alpha_words_ratio",
        "bullet_lines_ratio",
        "ellipsis_lines_ratio",
    )
    rules = (
        Rule("word_count", "<", "min_doc_words", "gopher_short_doc"),
        Rule("word_count", ">", "max_doc_words", "gopher_long_doc"),
        Rule("mean_word_length", "<", "min_avg_word_length", "gopher_below_avg_threshold"),
        Rule("mean_word_length", ">", "max_avg_word_length", "gopher_above_avg_threshold"),
        Rule("hash_word_ratio", ">", "max_hash_word_ratio", "gopher_too_many_hashes"),
        Rule("ellipsis_word_ratio", ">", "max_ellipsis_word_ratio", "gopher_too_many_ellipsis"),
        Rule("bullet_lines_ratio", ">", "max_bullet_lines_ratio", "gopher_too_many_bullets"),
        Rule(
            "ellipsis_lines_ratio",
            ">",
            "max_ellipsis_lines_ratio",
            "gopher_too_many_end_ellipsis",
        ),
        Rule("alpha_words_ratio", "<", "min_alpha_words_ratio", "gopher_below_alpha_threshold"),
        # datatrove calls this one "gopher_enough_stop_words"; the reason says why it went.
        Rule("stop_words", "<", "min_stop_words", "gopher_few_stop_words"),
    )

    def __init__(self, config: GopherQualityConfig):
        super().__init__(config)
        self.stop_words = frozenset(w.lower() for w in config.stop_words)

    def signals(self, doc) -> Signals:
        text = text_of(doc)
        words = words_only(text)
        out: Signals = {
            "word_count": float(len(words)),
            # Lower-cased, unlike datatrove, so a sentence-initial "The" counts too.
            "stop_words": float(sum(map(self.stop_words.__contains__, map(str.lower, words)))),
        }
        if words:
            # Per word, as the paper states. datatrove divides by all nltk tokens, so each
            # "," or "." counts as a non-alphabetic word and ordinary prose with a few numbers
            # fails the 0.8 alphabetic rule (2 of the 20 dolma CC docs did).
            n = len(words)
            out["mean_word_length"] = sum(map(len, words)) / n
            out["hash_word_ratio"] = text.count("#") / n
            out["ellipsis_word_ratio"] = (text.count("...") + text.count("…")) / n
            out["alpha_words_ratio"] = sum(map(bool, map(_LETTER.search, words))) / n
        lines = text.splitlines()
        if lines:
            bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
            ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            out["bullet_lines_ratio"] = bullets / len(lines)
            out["ellipsis_lines_ratio"] = ellipses / len(lines)
        return out
