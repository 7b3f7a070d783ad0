"""Gopher repetition rules (Rae et al. 2021, App. A.1.1 and Table A1).

Repeated paragraphs, lines and n-grams mark spam, navigation and generated pages, and repeated
text is what language models memorise. Each measure is the share of the document's characters
covered by the repetition; defaults are Table A1 as datatrove's `GopherRepetitionFilter`
ships them.
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.filters.base import (
    DocumentFilter,
    Rule,
    Signals,
    StepConfig,
    find_duplicates,
    split_words,
    text_of,
)

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")

TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


class GopherRepetitionConfig(StepConfig):
    # Gopher Table A1, all as fractions of the document.
    dup_para_frac: float | None = 0.3  # duplicate paragraphs / paragraphs
    dup_para_char_frac: float | None = 0.2  # chars in duplicate paragraphs / chars
    dup_line_frac: float | None = 0.3  # duplicate lines / lines
    dup_line_char_frac: float | None = 0.2  # chars in duplicate lines / chars
    top_2_gram_frac: float | None = 0.20  # chars covered by the most common 2-gram / chars
    top_3_gram_frac: float | None = 0.18
    top_4_gram_frac: float | None = 0.16
    dup_5_gram_frac: float | None = 0.15  # chars in repeated 5-grams / chars
    dup_6_gram_frac: float | None = 0.14
    dup_7_gram_frac: float | None = 0.13
    dup_8_gram_frac: float | None = 0.12
    dup_9_gram_frac: float | None = 0.11
    dup_10_gram_frac: float | None = 0.10


def _rules() -> tuple[Rule, ...]:
    prefix = "gopher_repetition_"
    rules = [
        Rule(name, ">", name, prefix + name)
        for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")
    ]
    rules += [
        Rule(f"top_{n}_gram_frac", ">", f"top_{n}_gram_frac", f"{prefix}top_{n}_gram")
        for n in TOP_NGRAM_SIZES
    ]
    rules += [
        Rule(f"dup_{n}_gram_frac", ">", f"dup_{n}_gram_frac", f"{prefix}dup_{n}_gram")
        for n in DUP_NGRAM_SIZES
    ]
    return tuple(rules)


class NGrams:
    """All n-grams of a word list as integer keys, so counting them is numpy work.

    A key is a polynomial hash of the words' Python hashes (64-bit SipHash); a collision
    between two different n-grams of one document has probability ~(words^2 / 2^64).
    """

    _MULTIPLIER = np.uint64(0x100000001B3)  # FNV-64 prime: any large odd number works

    def __init__(self, words: list[str]):
        self.hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words))
        self.hashes = self.hashes.view(np.uint64)
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))

    def first_and_counts(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per n-gram start: the index where that n-gram first occurs; per distinct n-gram:
        its first index and its count."""
        starts = len(self.hashes) - n + 1
        if starts <= 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        keys = self.hashes[:starts].copy()
        for k in range(1, n):
            keys = keys * self._MULTIPLIER + self.hashes[k : starts + k]
        _, first, inverse, counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        return first[inverse], first, counts

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (words + spaces) times its count.

        0 unless it occurs at least twice: datatrove also counts an n-gram seen once, which
        calls any very short document repetitive (it should fail Gopher's length rule).
        """
        _, first, counts = self.first_and_counts(n)
        if not len(counts) or counts.max() < 2:
            return 0
        # Ties go to the n-gram seen first in the text, as Counter.most_common does in
        # datatrove; np.unique's order follows the hash keys, which change per process.
        tied = np.flatnonzero(counts == counts.max())
        start = int(first[tied].min())
        top = int(tied[np.argmin(first[tied])])
        return int(self.lengths[start : start + n].sum() + n - 1) * int(counts[top])

    def dup_chars(self, n: int) -> int:
        """Characters (spaces excluded) of words covered by an n-gram seen earlier in the text.

        Each word counts once however many repeated n-grams overlap it: Gopher's "not
        double-counting", done as in RedPajama-v2 with a word mask. datatrove's greedy scan
        skips n words after each repeat instead, slightly undercounting runs longer than n.
        """
        firsts, _, _ = self.first_and_counts(n)
        starts = np.flatnonzero(firsts != np.arange(len(firsts)))
        if not len(starts):
            return 0
        edges = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        edges[starts] += 1  # starts are distinct, so fancy-index adds are exact
        edges[starts + n] -= 1
        covered = np.cumsum(edges[:-1]) > 0
        return int(self.lengths[covered].sum())


class GopherRepetitionFilter(DocumentFilter):
    """Gopher's repetition rules; reasons are `gopher_repetition_<rule>`."""

    name = "gopher_repetition"
    rules = _rules()
    signal_names = tuple(rule.signal for rule in rules)

    def signals(self, doc) -> Signals:
        text = text_of(doc)
        if not text.strip():
            return {}  # nothing repeats in an empty document
        chars = len(text)
        out: Signals = {}
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        dup, dup_chars = find_duplicates(paragraphs)
        out["dup_para_frac"] = dup / len(paragraphs)
        out["dup_para_char_frac"] = dup_chars / chars
        lines = _LINE_BREAK.split(text.strip())
        dup, dup_chars = find_duplicates(lines)
        out["dup_line_frac"] = dup / len(lines)
        out["dup_line_char_frac"] = dup_chars / chars
        grams = NGrams(split_words(text))
        for n in TOP_NGRAM_SIZES:
            out[f"top_{n}_gram_frac"] = grams.top_chars(n) / chars
        for n in DUP_NGRAM_SIZES:
            out[f"dup_{n}_gram_frac"] = grams.dup_chars(n) / chars
        return out
