"""FineWeb's own quality rules (Penedo et al. 2024, Sec. 3.3), as datatrove's
`FineWebQualityFilter`.

Found by comparing C4/Gopher-filtered data with what they let through: pages that are mostly
unpunctuated lines, short lines, repeated lines or one-item-per-line lists. Counted as datatrove
counts: lines are the non-blank lines, "terminal punctuation" is datatrove's set of sentence
terminators (".", "!", "?" and their equivalents in other scripts; no quotes), words are spaCy's
English tokens (`words.py`), and each rule drops strictly beyond its threshold.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.filters.base import (
    DocumentFilter,
    Rule,
    Signals,
    StepConfig,
    find_duplicates,
    text_of,
)
from pipeline.filters.words import WORDS, terminal_punctuation


class FineWebQualityConfig(StepConfig):
    signal_fields: ClassVar[tuple[str, ...]] = ("short_line_length",)  # shapes a signal
    # Penedo et al. 2024, Sec. 3.3 / datatrove defaults.
    line_punct_thr: float | None = 0.12  # drop if < 12% of lines end in terminal punctuation
    line_punct_exclude_zero: bool = False  # datatrove: True spares pages with no such line
    short_line_thr: float | None = 0.67  # drop if > 67% of lines are short ...
    short_line_length: int = 30  # ... i.e. at most 30 characters
    # Drop if > 1% of (non-newline) characters are in lines repeating an earlier line. The
    # paper's text says 0.1, its appendix table and datatrove's code 0.01: we follow the code
    # FineWeb was actually built with.
    char_duplicates_ratio: float | None = 0.01
    new_line_ratio: float | None = 0.3  # drop if newlines / words > 0.3 (list-like pages)


class FineWebQualityFilter(DocumentFilter):
    """FineWeb's line rules; reasons keep datatrove's names (`fineweb_list_ratio` = newlines)."""

    name = "fineweb"
    signal_names = ("line_punct_ratio", "short_line_ratio", "char_dup_ratio", "new_line_ratio")
    rules = (
        Rule("line_punct_ratio", "<", "line_punct_thr", "fineweb_line_punct_ratio"),
        Rule("short_line_ratio", ">", "short_line_thr", "fineweb_short_line_ratio"),
        Rule("char_dup_ratio", ">", "char_duplicates_ratio", "fineweb_char_dup_ratio"),
        Rule("new_line_ratio", ">", "new_line_ratio", "fineweb_list_ratio"),
    )

    def __init__(self, config: FineWebQualityConfig):
        super().__init__(config)
        self.stop_chars = terminal_punctuation()

    def signals(self, doc) -> Signals:
        text = text_of(doc)
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return {}  # datatrove drops a page without a non-blank line ("empty")
        short = self.config.short_line_length
        out: Signals = {
            "line_punct_ratio": sum(line.endswith(self.stop_chars) for line in lines) / len(lines),
            "short_line_ratio": sum(len(line) <= short for line in lines) / len(lines),
            "char_dup_ratio": find_duplicates(lines)[1] / (len(text) - text.count("\n")),
        }
        out["new_line_ratio"] = text.count("\n") / WORDS.counts(text).n_tokens
        return out

    def decide(self, signals: Signals) -> str | None:
        if not signals:
            return "fineweb_empty"
        if self.config.line_punct_exclude_zero and signals.get("line_punct_ratio") == 0:
            signals = {k: v for k, v in signals.items() if k != "line_punct_ratio"}
        return super().decide(signals)
