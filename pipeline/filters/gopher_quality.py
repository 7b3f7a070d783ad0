"""Gopher quality rules (Rae et al. 2021, "Scaling Language Models", App. A.1.1).

Document-level heuristics that catch boilerplate, word lists and non-prose: length, mean word
length, symbol density, bullet/ellipsis lines, alphabetic words and English stop words.
Defaults are datatrove's `GopherQualityFilter` as FineWeb ran it, counting included: words are
spaCy's English tokens (`words.py`), so "," and "." are words; length and mean length count
the non-symbol words; "#", ellipsis and alphabetic ratios divide by all tokens; stop words are
the distinct ones present, case-sensitive ("The" is not "the").

`word_counting = "paper"` reads the paper instead: every ratio is per non-symbol word and
stop words match in any case. On real pages it keeps more (README, "filter" row): datatrove's
reading drops prose with many numbers or punctuation for `gopher_below_alpha_threshold`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pipeline.filters.base import DocumentFilter, Rule, Signals, StepConfig, text_of
from pipeline.filters.words import WORDS

# Gopher App. A.1.1 / datatrove STOP_WORDS.
STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQualityConfig(StepConfig):
    signal_fields: ClassVar[tuple[str, ...]] = ("stop_words", "word_counting")  # shape signals
    # "datatrove": as FineWeb ran it (the default); "paper": ratios per non-symbol word and
    # stop words in any case, as Rae et al. word the rules.
    word_counting: Literal["datatrove", "paper"] = "datatrove"
    min_doc_words: int | None = 50  # Gopher App. A.1.1: 50..100,000 non-symbol words
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3  # Gopher App. A.1.1: mean word length 3..10 chars
    max_avg_word_length: float | None = 10
    max_hash_word_ratio: float | None = 0.1  # Gopher: "#" per word <= 0.1
    max_ellipsis_word_ratio: float | None = 0.1  # Gopher: "..." or "…" per word <= 0.1
    max_bullet_lines_ratio: float | None = 0.9  # Gopher: <= 90% lines start with a bullet
    max_ellipsis_lines_ratio: float | None = 0.3  # Gopher: <= 30% lines end with an ellipsis
    # Gopher: >= 80% of words contain an alphabetic character (datatrove names this field
    # max_non_alpha_words_ratio, but it is a lower bound on alphabetic words; its words are
    # all tokens, punctuation included).
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2  # Gopher: at least 2 (distinct) of STOP_WORDS
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
        self.paper = config.word_counting == "paper"
        words = config.stop_words
        self.stop_words = frozenset(w.lower() for w in words) if self.paper else frozenset(words)

    def signals(self, doc) -> Signals:
        text = text_of(doc)
        counts = WORDS.counts(text)
        words = counts.words  # non-symbol tokens
        present = self.stop_words.intersection(counts.tokens)
        if self.paper:
            present = self.stop_words.intersection(map(str.lower, counts.tokens))
        out: Signals = {
            "word_count": float(words),
            "stop_words": float(len(present)),
        }
        if words:
            out["mean_word_length"] = counts.word_chars / words
        per = words if self.paper else counts.n_tokens  # the ratios' denominator
        if per:
            out["hash_word_ratio"] = text.count("#") / per
            out["ellipsis_word_ratio"] = (text.count("...") + text.count("…")) / per
            out["alpha_words_ratio"] = counts.alpha / per
        lines = text.splitlines()
        if lines:
            bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
            ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
            out["bullet_lines_ratio"] = bullets / len(lines)
            out["ellipsis_lines_ratio"] = ellipses / len(lines)
        return out
