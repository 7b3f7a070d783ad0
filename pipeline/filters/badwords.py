"""C4's bad-words rule (Raffel et al. 2020, Sec. 2.2), as datatrove's `C4BadWordsFilter`.

C4 dropped every page containing a word from a list of obscene words. Off by default: FineWeb's
pipeline (datatrove `examples/fineweb.py`) does not use it and relies on its URL blocklist,
and Dodge et al. (2021) found C4's list removed many harmless pages about health and LGBTQ+
topics. It runs right after C4's line cleaning, on the cleaned text, as C4 did; the list is
English, and it is applied to every document whatever its language.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.filters.base import Document, DocumentFilter, Rule, Signals, StepConfig, text_of
from pipeline.filters.lists import builtin_list, digest, read_list

DEFAULT_LIST = "badwords_en.txt"
_WORD = re.compile(r"\w+")


class C4BadWordsConfig(StepConfig):
    enabled: bool = False  # C4 used it; FineWeb did not (see the module docstring)
    use_default_list: bool = True  # data/badwords_en.txt: the project's own short list
    badwords_file: str | None = None  # one word or phrase per line, added to the list
    max_badwords: int | None = 0  # C4: a single listed word drops the page

    def badwords(self) -> frozenset[str]:
        words = builtin_list(DEFAULT_LIST) if self.use_default_list else []
        if self.badwords_file:
            words += read_list(self.badwords_file)
        return frozenset(words)

    def signals_key(self) -> dict[str, Any]:
        return {"badwords": digest(self.badwords())}


class C4BadWordsFilter(DocumentFilter):
    """Reason: `c4_badwords`."""

    name = "c4_badwords"
    signal_names = ("count",)
    rules = (Rule("count", ">", "max_badwords", "c4_badwords"),)

    def __init__(self, config: C4BadWordsConfig):
        super().__init__(config)
        words = config.badwords()
        # Single words are looked up per token; phrases ("oral sex") need a search. Both match
        # whole words only, like C4's `(?:\W|^)word(?:\W|$)`, so "Scunthorpe" stays.
        self.words = frozenset(w for w in words if _WORD.fullmatch(w))
        phrases = sorted(words - self.words, key=len, reverse=True)
        self.phrases = (
            re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, phrases)) + r")(?!\w)")
            if phrases
            else None
        )

    def signals(self, doc: Document) -> Signals:
        text = text_of(doc).lower()
        count = sum(token in self.words for token in _WORD.findall(text))
        if self.phrases is not None:
            count += len(self.phrases.findall(text))
        return {"count": float(count)}
