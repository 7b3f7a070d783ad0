"""C4's cleaning rules (Raffel et al. 2020, Sec. 2.2), as datatrove's `C4QualityFilter`.

Unlike the other filters this one rewrites the document first: it drops boilerplate *lines*
(javascript notices, cookie/privacy/terms banners, lines with very long "words", very short
lines) and only then decides on the whole page (lorem ipsum, curly brackets, too few
sentences). Later filters see the cleaned text, and kept documents are written with it.
FineWeb's settings are the defaults: the terminal-punctuation line rule is off, because it
removed ~30% of tokens (Penedo et al. 2024, Sec. 3.3); everything else as datatrove ships it,
sentences included: they are counted per kept line by spaCy's sentencizer rules (`words.py`:
a sentence ends at a "." "!" or "?" token, so "Mr. Smith" and "3.5" do not end one).
"""

from __future__ import annotations

import re
from typing import ClassVar

from pipeline.filters.base import Document, DocumentFilter, Rule, Signals, StepConfig, text_of
from pipeline.filters.words import WORDS

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")  # Wikipedia-style markers
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
# datatrove's POLICY_SUBSTRINGS (from tfds c4_utils): cookie / privacy / terms boilerplate.
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)

_POLICY = re.compile("|".join(map(re.escape, POLICY_SUBSTRINGS)))


class C4Config(StepConfig):
    # Every switch but min_num_sentences shapes the cleaned text (lorem ipsum and "{" lines
    # survive line removal), so only that one can be re-tuned from stored signals.
    signal_fields: ClassVar[tuple[str, ...]] = (
        "remove_citations",
        "filter_no_terminal_punct",
        "min_words_per_line",
        "max_word_length",
        "filter_javascript",
        "filter_policy",
        "filter_lorem_ipsum",
        "filter_curly_bracket",
    )

    remove_citations: bool = True  # datatrove default: strip "[1]", "[edit]", ...
    # C4 keeps only lines ending in . ? ! " ; FineWeb turned it off (Penedo et al. 2024, 3.3).
    filter_no_terminal_punct: bool = False
    min_words_per_line: int | None = 3  # C4: drop lines with fewer than 3 words
    max_word_length: int | None = 1000  # tfds c4_utils: drop lines with a word > 1000 chars
    filter_javascript: bool = True  # C4: drop lines mentioning "javascript"
    filter_policy: bool = True  # tfds c4_utils: drop cookie/privacy/terms lines
    filter_lorem_ipsum: bool = True  # C4: drop pages containing "lorem ipsum"
    filter_curly_bracket: bool = True  # C4: drop pages containing "{" (code)
    min_num_sentences: int | None = 5  # C4: drop pages with < 5 sentences after cleaning


class C4Filter(DocumentFilter):
    """C4 line cleaning, then page rules; reasons `c4_lorem_ipsum`, `c4_curly_bracket`, ..."""

    name = "c4"
    signal_names = ("sentences", "lorem_ipsum", "curly_bracket")
    rules = (Rule("sentences", "<", "min_num_sentences", "c4_too_few_sentences"),)

    def keep_line(self, line: str, words: list[str]) -> bool:
        """Datatrove's per-line checks, in its order (`words` are counted before citations go).

        A line that will drop the whole page is kept, so `decide` sees it: "lorem ipsum" is
        checked before the javascript rule and "{" after it, as in datatrove.
        """
        cfg = self.config
        limit = cfg.max_word_length
        if limit is not None and max(map(len, words), default=0) > limit:
            return False
        if cfg.filter_no_terminal_punct and (
            not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)
        ):
            return False
        if cfg.min_words_per_line is not None and len(words) < cfg.min_words_per_line:
            return False
        lower = line.lower()
        if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
            return True
        if cfg.filter_javascript and "javascript" in lower:
            return False
        if cfg.filter_curly_bracket and "{" in line:
            return True
        return not (cfg.filter_policy and _POLICY.search(lower))

    def transform(self, doc: Document) -> Document:
        text = text_of(doc)
        cite = self.config.remove_citations
        least = self.config.min_words_per_line or 0
        # The lines' chunks, when Gopher split this text by lines and no kept line can change
        # but by strip (no citation goes, every kept line has a word): the kept lines keep
        # them, so the cleaned text is not split again for its sentences and words.
        chunks = WORDS.lines(text) if least and not (cite and "[" in text) else None
        # Without whitespace tokens "\n" is the only line break; splitlines drops a final
        # empty line, which has no word.
        lines = text.split("\n") if chunks is not None else text.splitlines()
        kept, kept_chunks = [], []
        if self._only_length_rules(text, cite):  # most pages: no per-line text checks
            limit = self.config.max_word_length
            for i, raw in enumerate(lines):
                words = raw.split()
                if len(words) >= least and (
                    limit is None or len(raw) <= limit or max(map(len, words)) <= limit
                ):
                    kept.append(raw.strip())
                    if chunks is not None:
                        kept_chunks.append(chunks[i])
        else:
            for i, raw in enumerate(lines):
                raw = raw.strip()
                line = CITATION.sub("", raw) if cite and "[" in raw else raw
                if self.keep_line(line, raw.split()):
                    kept.append(line)
                    if chunks is not None:
                        kept_chunks.append(chunks[i])
        cleaned = "\n".join(kept).strip()
        if chunks is not None:
            WORDS.remember(cleaned, kept_chunks)
        return {**doc, "text": cleaned}

    def _only_length_rules(self, text: str, cite: bool) -> bool:
        """Whether no line rule but the word count and word length can apply to any line of
        `text`: checked once on the whole text, so most pages skip `keep_line`. (A line's
        lower-case form is part of the text's, as str.lower maps characters one by one; a
        removed citation can join text, so "[" takes the per-line checks.)"""
        cfg = self.config
        if (cite and "[" in text) or cfg.filter_no_terminal_punct:
            return False
        lower = text.lower()
        return not (
            (cfg.filter_lorem_ipsum and "lorem ipsum" in lower)
            or (cfg.filter_javascript and "javascript" in lower)
            or (cfg.filter_curly_bracket and "{" in text)
            or (cfg.filter_policy and _POLICY.search(lower))
        )

    def signals(self, doc: Document) -> Signals:
        text = text_of(doc)
        lower = text.lower()
        return {
            # The kept lines, each split into sentences (datatrove's split_into_sentences).
            "sentences": float(WORDS.sentences_in_lines(text)) if text else 0.0,
            "lorem_ipsum": float("lorem ipsum" in lower),
            "curly_bracket": float("{" in text),
        }

    def decide(self, signals: Signals) -> str | None:
        if self.config.filter_lorem_ipsum and signals.get("lorem_ipsum"):
            return "c4_lorem_ipsum"
        if self.config.filter_curly_bracket and signals.get("curly_bracket"):
            return "c4_curly_bracket"
        return super().decide(signals)
