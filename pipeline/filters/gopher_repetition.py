"""Gopher repetition rules (Rae et al. 2021, App. A.1.1 and Table A1).

Repeated paragraphs, lines and n-grams mark spam, navigation and generated pages, and repeated
text is what language models memorise. Each measure is the share of the document's characters
covered by the repetition; defaults are Table A1 as datatrove's `GopherRepetitionFilter`
ships them, and so is the counting: words are spaCy's English tokens (`words.py`); lines split
on newlines of the unstripped text; the top n-gram counts even when it occurs once; duplicated
n-grams are found by datatrove's greedy scan (after a repeat, skip its n words).
"""

from __future__ import annotations

import bisect
import re
from functools import cached_property

import numpy as np

from pipeline.filters.base import (
    DocumentFilter,
    Rule,
    Signals,
    StepConfig,
    find_duplicates,
    text_of,
)
from pipeline.filters.words import WORDS

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


def _split_runs(text: str, brk: str, runs: re.Pattern[str]) -> list[str]:
    """`runs.split(text)`, where `runs` matches `brk` followed by any more newlines: a plain
    str.split (several times faster) when no break is followed by another newline."""
    return runs.split(text) if brk + "\n" in text else text.split(brk)


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
    """All n-grams of a word list, as where each one first occurs, so counting is numpy work.

    Words get dense ids (by their 64-bit Python hashes: a collision between two different
    words of one document has probability ~words^2 / 2^64). The n-grams are then found
    exactly from the (n-1)-grams: two starts share an n-gram when they share the (n-1)-gram
    and the next word, and only starts whose (n-1)-gram repeats can, so each size sorts fewer
    keys than the last (one sort per size over every start was the stage's main cost).
    """

    def __init__(self, words: list[str]):
        self.words = words
        hashes = np.fromiter(map(hash, words), dtype=np.int64, count=len(words))
        _, first, self.ids = np.unique(hashes, return_index=True, return_inverse=True)
        self._firsts = {1: first[self.ids]}

    @cached_property
    def ends(self) -> np.ndarray:
        """Word i spans characters ends[i]..ends[i+1] (spaces excluded); only documents with
        repeated n-grams need them."""
        lengths = np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))
        return np.concatenate(([0], np.cumsum(lengths)))

    def firsts(self, n: int) -> np.ndarray:
        """Per n-gram start: the start where that n-gram first occurs (empty if none)."""
        if n in self._firsts:
            return self._firsts[n]
        starts = len(self.ids) - n + 1
        if starts <= 0:
            return np.zeros(0, dtype=np.int64)
        prev = self.firsts(n - 1)[:starts]
        first = np.arange(starts)
        shared = np.flatnonzero(np.bincount(prev, minlength=starts)[prev] > 1)
        if len(shared):
            keys = prev[shared] * len(self.ids) + self.ids[shared + n - 1]  # exact, < words^2
            _, key_first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            first[shared] = shared[key_first[inverse]]
        self._firsts[n] = first
        return first

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (words joined by spaces) times its count.

        As datatrove: an n-gram seen once counts too (a short document without repeats scores
        its first n-gram), and ties go to the n-gram seen first (Counter.most_common).
        """
        firsts = self.firsts(n)
        if not len(firsts):
            return 0
        counts = np.bincount(firsts)  # indexed by first start: argmax takes the earliest tie
        top = int(counts.argmax())
        chars = sum(map(len, self.words[top : top + n])) + n - 1
        return chars * int(counts[top])

    def dup_chars(self, n: int) -> int:
        """Characters (spaces excluded) of n-grams that repeat one seen earlier, by datatrove's
        greedy scan: at each position, a repeated n-gram counts and the scan jumps n words
        (the n-grams it jumps over are never remembered); otherwise it is remembered.

        datatrove compares n-grams as their words joined without spaces ("ab c" equals
        "a bc"); we compare the words themselves, which differs only in that rare case.
        """
        firsts = self.firsts(n)
        repeats = np.flatnonzero(firsts != np.arange(len(firsts)))
        if not len(repeats):
            return 0
        # Only positions repeating an earlier n-gram can count, so the scan walks those: a
        # first occurrence is remembered unless a counted repeat's jump skipped it, and a
        # repeat that does not count is remembered in its place.
        chars = (self.ends[repeats + n] - self.ends[repeats]).tolist()
        jumps: list[int] = []  # starts of the counted repeats; each skips [start, start + n)
        remembered: set[int] = set()  # ids remembered at a repeat that did not count
        total, next_visit = 0, 0
        for idx, first, size in zip(repeats.tolist(), firsts[repeats].tolist(), chars, strict=True):
            if idx < next_visit:
                continue  # jumped over
            k = bisect.bisect_right(jumps, first) - 1
            if (k < 0 or first >= jumps[k] + n) or first in remembered:
                total += size
                jumps.append(idx)
                next_visit = idx + n
            else:
                remembered.add(first)
                next_visit = idx + 1
        return total


class GopherRepetitionFilter(DocumentFilter):
    """Gopher's repetition rules; reasons are `gopher_repetition_<rule>`."""

    name = "gopher_repetition"
    rules = _rules()
    signal_names = tuple(rule.signal for rule in rules)

    def signals(self, doc) -> Signals:
        text = text_of(doc)
        if not text:
            return {}  # datatrove drops an empty document ("empty")
        chars = len(text)
        out: Signals = {}
        paragraphs = _split_runs(text.strip(), "\n\n", _PARAGRAPH_BREAK)
        dup, dup_chars = find_duplicates(paragraphs)
        out["dup_para_frac"] = dup / len(paragraphs)
        out["dup_para_char_frac"] = dup_chars / chars
        lines = _split_runs(text, "\n", _LINE_BREAK)  # unstripped, as datatrove: "\nx\n" is 3 lines
        dup, dup_chars = find_duplicates(lines)
        out["dup_line_frac"] = dup / len(lines)
        out["dup_line_char_frac"] = dup_chars / chars
        grams = NGrams(WORDS.tokens(text))
        for n in TOP_NGRAM_SIZES:
            out[f"top_{n}_gram_frac"] = grams.top_chars(n) / chars
        repeats = True
        for n in DUP_NGRAM_SIZES:  # ascending: no repeated n-gram means no longer one either
            dup = grams.dup_chars(n) if repeats else 0
            repeats = dup > 0
            out[f"dup_{n}_gram_frac"] = dup / chars
        return out

    def decide(self, signals: Signals) -> str | None:
        if not signals:
            return "gopher_repetition_empty"
        return super().decide(signals)
