"""Words and sentences as datatrove's English filters count them, without spaCy.

datatrove's Gopher, C4 and FineWeb filters split English text with spaCy's blank English
tokenizer (`datatrove.utils.word_tokenizers.SpaCyTokenizer`): punctuation marks are words of
their own ("end." is two words), contractions split ("don't" is "do" + "n't"), URLs and
numbers like "3.14" or "1,000" stay whole. C4 counts sentences with spaCy's `sentencizer`.
Those counts decide the ratios, so this module reproduces them:

- The text splits at whitespace into chunks, as spaCy's tokenizer does; each chunk is split
  the way spaCy's algorithm splits one (special cases, then prefixes and suffixes peeled off
  one at a time, then URLs kept whole, then infixes), with our own regexes written after
  spaCy's English prefix/suffix/infix rules, and spaCy's English special cases as data
  (`data/spacy_en_exceptions.txt`).
- Chunks repeat (Zipf), so each distinct chunk is split once and its counts are cached:
  counting a document is a `str.split` and a dictionary look-up per chunk, which is what makes
  the filter stage >10x faster than datatrove's (bench/filter.py).

Agreement with spaCy 3.8 is measured by tests/pipeline/test_filters_reference.py. Not
reproduced: spaCy's second pass that re-joins special cases found across affix splits (e.g.
"(:)" keeps ":)" whole), which is rare in prose.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, cached_property
from itertools import chain
from operator import attrgetter

import regex

from pipeline.filters.lists import DATA_DIR


@cache
def _tables() -> dict[str, str]:
    """datatrove's punctuation sets and spaCy's sentence-ending characters (data file)."""
    return json.loads((DATA_DIR / "punctuation.json").read_text(encoding="utf-8"))


@cache
def punctuation() -> frozenset[str]:
    """datatrove's PUNCTUATION_SET: a word made only of these is a "symbol" word."""
    return frozenset(_tables()["punctuation"])


@cache
def terminal_punctuation() -> tuple[str, ...]:
    """datatrove's TERMINAL_PUNCTUATION: what FineWeb's line-punctuation rule accepts."""
    return tuple(_tables()["terminal_punctuation"])


@cache
def sentence_punctuation() -> frozenset[str]:
    """spaCy's sentencizer: a token that is one of these ends a sentence."""
    return frozenset(_tables()["sentence_punctuation"])


@cache
def exceptions() -> dict[str, tuple[str, ...]]:
    """spaCy's English special cases: chunk -> its tokens (only those the rules would
    split differently: "don't" -> do n't, "e.g." -> e.g., "5pm" -> 5 pm)."""
    out = {}
    text = (DATA_DIR / "spacy_en_exceptions.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("# "):
            chunk, tokens = line.split("\t")
            out[chunk] = tuple(tokens.split(" "))
    return out


# Character classes after spaCy's `lang/char_classes.py` (its ALPHA/ALPHA_LOWER/ALPHA_UPPER
# list Latin, Greek, Cyrillic, ... ranges; Unicode's letter categories are close to them).
# Scripts without case (Arabic, CJK, ...) count as both lower- and upper-case there.
_LOWER = r"\p{Ll}\p{Lo}"
_UPPER = r"\p{Lu}\p{Lo}"
_PUNCT = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = r"\$£€¥฿₽﷼₴₠-₿"
_ICONS = r"\p{So}"  # spaCy lists "other symbols" (dingbats, emoji) by hand
# spaCy's units after a number ("10km"; its Cyrillic and Arabic ones left out): no regex
# metacharacters, so the list is its own alternation.
_UNITS = (
    "km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|"
    "m/s|km/h|kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%"
)
_HYPHENS = "-|–|—|--|---|——|~"

# A prefix: one leading mark (anchored); spaCy tries its list in order, and the only overlap
# ("…" before "……") already takes the single character.
_PREFIX = regex.compile(
    rf"(?:\.\.+|US\$|C\$|A\$|\+(?![0-9])|[§%=—–{_PUNCT}{_QUOTES}{_CURRENCY}{_ICONS}])"
)
# A suffix: the longest trailing match of any rule (spaCy searches its `rule$` alternation).
_SUFFIX = regex.compile(
    "(?:"
    + "|".join(
        [
            r"\.\.+",
            "……",
            rf"[{_PUNCT}{_QUOTES}{_ICONS}]",
            "'s|'S|’s|’S|—|–",
            r"(?<=[0-9])\+",
            r"(?<=°[FfCcKk])\.",
            rf"(?<=[0-9])(?:US\$|C\$|A\$|[{_CURRENCY}])",
            rf"(?<=[0-9])(?:{_UNITS})",
            # a period after a digit, a lower-case letter, % ² - +, a punctuation mark or quote
            rf"(?<=[0-9{_LOWER}%²\-+|{_PUNCT}{_QUOTES}])\.",
            rf"(?<=[{_UPPER}][{_UPPER}])\.",  # "USA." but not "U.S."
        ]
    )
    + r")$"
)
_INFIX = regex.compile(
    "|".join(
        [
            r"\.\.+",
            "…",
            rf"[{_ICONS}]",
            r"(?<=[0-9])[+\-*^](?=[0-9-])",  # 3+4, 1-2
            rf"(?<=[{_LOWER}{_QUOTES}])\.(?=[{_UPPER}{_QUOTES}])",  # end.Next
            r"(?<=\p{L}),(?=\p{L})",  # a,b
            rf"(?<=[\p{{L}}0-9])(?:{_HYPHENS})(?=\p{{L}})",  # well-known
            r"(?<=[\p{L}0-9])[:<>=/](?=\p{L})",  # and/or
        ]
    )
)
# spaCy's URL_MATCH (after dperini's URL regex): optional scheme and user, a public IPv4 or a
# host name whose last label is 2+ lower-case letters, optional port and path.
_HOST_CHAR = r"A-Za-z0-9\u00a1-\uffff"
_URL = regex.compile(
    r"(?:[\w+\-.]{2,}://)?"
    r"(?:\S+(?::\S*)?@)?"
    r"(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})"
    r"(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"
    r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    rf"|(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_-]{{0,62}})?[{_HOST_CHAR}]\.)+[{_LOWER}]{{2,63}}"
    r")"
    r"(?::\d{2,5})?"
    r"(?:[/?#]\S*)?"
    r"$"
)


_SIMPLE_SUFFIX = frozenset(",;:!?)\"'")  # split off a letters-only word by the rules


def split_chunk(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk, as spaCy's English tokenizer splits it."""
    special = exceptions()
    if chunk in special:
        return special[chunk]
    # Fast paths (most chunks): letters only; letters and one closing mark; the rules split
    # these the same way, and no special case applies to the letters alone.
    if chunk.isalpha():
        return (chunk,)
    head, last = chunk[:-1], chunk[-1]
    if (head.isalpha() and head not in special) and (
        last in _SIMPLE_SUFFIX or (last == "." and head[-1].islower())
    ):
        return (head, last)
    tokens = _split_by_rules(chunk, special)
    if len(tokens) > 1:
        tokens = _rejoin_specials(tokens)
    return tokens


def _split_by_rules(chunk: str, special: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """spaCy's algorithm: peel prefixes and suffixes (stopping at a special case), then keep a
    URL whole or split at infixes. `special` empty gives the split without special cases."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    s = chunk
    last = -1
    while s and len(s) != last:
        if s in special:
            break
        last = len(s)
        m = _PREFIX.match(s)
        pre = m.end() if m else 0
        if pre and s[pre:] in special:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        m = _SUFFIX.search(s, pre)
        suf = m.end() - m.start() if m else 0
        if suf and s[:-suf] in special:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
    tokens = prefixes
    if s in special:
        tokens.extend(special[s])
    elif s and _URL.match(s):
        tokens.append(s)
    elif s:
        start = 0
        for m in _INFIX.finditer(s):
            if m.start() == 0:  # spaCy ignores an infix at the very start
                continue
            if m.start() != start:
                tokens.append(s[start : m.start()])
            if m.start() != m.end():
                tokens.append(m.group())
            start = m.end()
        if s[start:]:
            tokens.append(s[start:])
    tokens.extend(reversed(suffixes))
    return tuple(tokens)


@cache
def _split_specials() -> dict[str, dict[tuple[str, ...], tuple[str, ...]]]:
    """Special cases the rules split into several tokens, by first token: those tokens ->
    the special case's own tokens. spaCy re-joins them wherever they occur side by side
    inside a chunk ("a-z." splits to a - z . and "z." is a special case: a - z.)."""
    out: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = {}
    for chunk, tokens in exceptions().items():
        bare = _split_by_rules(chunk, {})
        if len(bare) > 1:
            out.setdefault(bare[0], {})[bare] = tokens
    return out


def _rejoin_specials(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """spaCy's second pass: longest special-case matches first, never overlapping."""
    table = _split_specials()
    if not any(t in table for t in tokens):
        return tokens
    matches = []  # (length, start, replacement)
    for i, token in enumerate(tokens):
        for bare, replacement in table.get(token, {}).items():
            if tokens[i : i + len(bare)] == bare:
                matches.append((len(bare), i, replacement))
    taken: set[int] = set()
    chosen = []
    for length, start, replacement in sorted(matches, reverse=True):
        if start not in taken and start + length - 1 not in taken:
            chosen.append((start, length, replacement))
        taken.update(range(start, start + length))
    if not chosen:
        return tokens
    out: list[str] = []
    i = 0
    for start, length, replacement in sorted(chosen):
        out.extend(tokens[i:start])
        out.extend(replacement)
        i = start + length
    out.extend(tokens[i:])
    return tuple(out)


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: `None in chunks` stays fast
class Chunk:
    """One chunk's tokens and the counts the filters need from them."""

    tokens: tuple[str, ...]
    words: int  # non-symbol tokens: a character outside datatrove's punctuation
    word_chars: int  # their total length
    alpha: int  # tokens with an alphabetic character
    # Each token's part in spaCy's sentencizer: "E" ends a sentence ("." "!" "?" ...), "P" is
    # other punctuation (it neither ends nor starts one), "W" anything else.
    roles: str


def _role(token: str, ends: frozenset[str]) -> str:
    if token in ends:
        return "E"
    # spaCy's `is_punct`: every character is a Unicode punctuation mark (P*)
    return "P" if all(unicodedata.category(c).startswith("P") for c in token) else "W"


def _measure(chunk: str) -> Chunk:
    if chunk.isspace():  # other whitespace than one space is a (dropped) token of its own
        return Chunk((), 0, 0, 0, "W")
    if chunk.isalpha() and chunk not in exceptions():
        # Most new chunks: one word; no letter is punctuation or ends a sentence.
        return Chunk((chunk,), 1, len(chunk), 1, "W")
    tokens = split_chunk(chunk)
    marks = punctuation()
    ends = sentence_punctuation()
    words = [t for t in tokens if any(c not in marks for c in t)]
    return Chunk(
        tokens,
        len(words),
        sum(map(len, words)),
        sum(any(c.isalpha() for c in t) for t in tokens),
        "".join(_role(t, ends) for t in tokens),
    )


class Counts:
    """One text's chunks, with the totals the filters need (each summed on first use).

    `by_line`: the chunks are those of `_line_pieces(text)` (line breaks kept as separator
    chunks, no whitespace tokens), so each line's chunks can be taken from them.
    """

    def __init__(self, chunks: list[Chunk], by_line: bool = False):
        self.chunks = chunks
        self.by_line = by_line

    @cached_property
    def tokens(self) -> list[str]:
        return list(chain.from_iterable(map(_TOKENS, self.chunks)))

    @cached_property
    def n_tokens(self) -> int:
        if "tokens" in self.__dict__:  # already listed (Gopher repetition's n-grams)
            return len(self.tokens)
        return sum(map(len, map(_TOKENS, self.chunks)))

    @cached_property
    def words(self) -> int:
        return sum(map(_WORDS, self.chunks))

    @cached_property
    def word_chars(self) -> int:
        return sum(map(_WORD_CHARS, self.chunks))

    @cached_property
    def alpha(self) -> int:
        return sum(map(_ALPHA, self.chunks))


@cache
def _sentence_end() -> re.Pattern[str]:
    return re.compile("[" + "".join(map(re.escape, sorted(sentence_punctuation()))) + "]")


_ODD_SPACE = re.compile(r"[^\S ]| {2}")  # whitespace that spaCy makes a token of its own
_PIECES = re.compile(r"\S+|\s+")
# The sentencizer starts a sentence at the first "W" token after an "E" (only "P" between).
_SENTENCE_START = re.compile("E[EP]*W")
_TOKENS = attrgetter("tokens")
_WORDS = attrgetter("words")
_WORD_CHARS = attrgetter("word_chars")
_ALPHA = attrgetter("alpha")
_ROLES = attrgetter("roles")


class Words:
    """Split chunks, cached: a bounded dict (cleared when full), one per process. The last
    text's counts are kept too: Gopher repetition and quality read the same text."""

    MAX_CACHE = 500_000

    def __init__(self) -> None:
        self._cache: dict[str, Chunk] = dict(_SEPARATORS)
        self._last: tuple[str, Counts] | None = None

    def chunks(self, pieces: list[str]) -> list[Chunk]:
        """The chunks' splits, measuring those not seen before (all loops in C when cached)."""
        infos = list(map(self._cache.get, pieces))
        if None in infos:
            if len(self._cache) >= self.MAX_CACHE:
                self._cache.clear()
                self._cache.update(_SEPARATORS)
            for i, info in enumerate(infos):
                if info is None:
                    piece = pieces[i]
                    info = self._cache.get(piece)
                    infos[i] = info if info is not None else self._add(piece)
        return infos

    def _add(self, piece: str) -> Chunk:
        info = self._cache[piece] = _measure(piece)
        return info

    def counts(self, text: str) -> Counts:
        if self._last is not None and self._last[0] is text:
            return self._last[1]
        if _has_space_tokens(text):
            counts = Counts(self.chunks(text.split()))
        else:  # by line (same tokens): C4 takes its kept lines' chunks from here
            counts = Counts(self.chunks(_line_pieces(text)), by_line=True)
        self._last = (text, counts)
        return counts

    def lines(self, text: str) -> list[list[Chunk]] | None:
        """The chunks of each line of `text` (split at "\\n"), if `text` is the last text
        counted and was split by lines; None otherwise (then nothing is split here)."""
        if self._last is None or self._last[0] is not text or not self._last[1].by_line:
            return None
        chunks = self._last[1].chunks
        out, start = [], 0
        for _ in range(text.count("\n")):
            end = chunks.index(_LINE_BREAK, start)  # identity: a Chunk equals only itself
            out.append(chunks[start:end])
            start = end + 1
        out.append(chunks[start:])
        return out

    def remember(self, text: str, lines: list[list[Chunk]]) -> None:
        """Make `text`, the given lines joined by "\\n", the last text counted, with those
        lines' chunks: C4's kept lines, so its sentences and FineWeb's words need no split."""
        chunks = []
        for line in lines:
            chunks += line
            chunks.append(_LINE_BREAK)
        self._last = (text, Counts(chunks[:-1], by_line=True))

    def tokens(self, text: str) -> list[str]:
        """datatrove's `split_into_words(text)` for English."""
        return self.counts(text).tokens

    def sentences(self, line: str) -> int:
        """datatrove's `len(split_into_sentences(line))` for English (spaCy's sentencizer).

        A run of whitespace other than one space is a token of its own to spaCy, and it
        starts a sentence after a full stop like any other non-punctuation token.
        """
        if not _sentence_end().search(line):
            return 1
        if _ODD_SPACE.search(line):
            roles = "".join(
                "W" if piece.isspace() else self.chunks([piece])[0].roles
                for piece in _PIECES.findall(line)
                if piece != " "
            )
        else:  # a single space at the end (after "[1]" went) is no token
            roles = "".join(map(_ROLES, self.chunks([p for p in line.split(" ") if p])))
        return 1 + len(_SENTENCE_START.findall(roles))

    def sentences_in_lines(self, text: str) -> int:
        """`sentences` summed over the lines of `text` (split at "\\n"), in one pass: a line
        break becomes a "|" role, which no sentence start can span, and a run of whitespace
        other than one space a "W" one."""
        if self._last is not None and self._last[0] is text and self._last[1].by_line:
            infos = self._last[1].chunks  # split already (C4's kept lines)
        elif _has_space_tokens(text):  # keep every run of whitespace apart
            infos = self.chunks(_LINE_PIECES.findall(text))
            self._last = (text, Counts(infos))
        else:
            infos = self.chunks(_line_pieces(text))
            self._last = (text, Counts(infos, by_line=True))
        # The same tokens as text.split() gives (the separators have none): FineWeb, next on
        # this text, counts its words from here.
        roles = "".join(map(_ROLES, infos))
        return text.count("\n") + 1 + len(_SENTENCE_START.findall(roles))


# Pieces of `sentences_in_lines` that are no chunk: a line break, and nothing (what split(" ")
# gives around it, or at a trailing space).
_SEPARATORS = {
    "\n": Chunk((), 0, 0, 0, "|"),
    "": Chunk((), 0, 0, 0, ""),
    " ": Chunk((), 0, 0, 0, ""),  # one space between words is no token
}
_LINE_BREAK = _SEPARATORS["\n"]
_OTHER_SPACE_IN_LINES = re.compile(r"[^\S \n]")


def _has_space_tokens(text: str) -> bool:
    """Whether spaCy makes a token of some whitespace in `text` (two spaces, or other
    whitespace than one space or a line break). Two plain searches: a regex alternation of
    both scans ~3x slower."""
    return "  " in text or _OTHER_SPACE_IN_LINES.search(text) is not None


def _line_pieces(text: str) -> list[str]:
    """The chunks of a text without whitespace tokens, each line break a chunk of its own."""
    return text.replace("\n", " \n ").split(" ")


_LINE_PIECES = re.compile(r"\S+|\n|[^\S\n]+")

WORDS = Words()
