"""Our Gopher, C4 and FineWeb decisions held against datatrove 0.10.1's, on real text.

Corpora: trafilatura's evaluation pages as our extract stage extracts them (the first PAGES,
extracted once per test session), and the CCNet documents of dolma's `cc_en_head` test files
(all 20 there are). Per document, each filter alone on the same text, and the four chained as
FineWeb runs them (C4's cleaned text goes on to FineWeb): keep/drop must agree on >= 99.5%, and
a failure lists every disagreement with both reasons and our signals.

Run as a script to rewrite the reference tables in pipeline/filters/data/ from the installed
datatrove and spaCy: `python tests/pipeline/test_filters_reference.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "pipeline" / "filters" / "data"
PAGES = 400  # extraction is the slow part (~15 pages/s/core); several hundred is enough
TARGET = 0.995

pytestmark = pytest.mark.slow


def reference_tables() -> tuple[dict[str, str], str]:
    """(punctuation.json's content, spacy_en_exceptions.txt's) from datatrove and spaCy."""
    import spacy
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION
    from spacy.pipeline import Sentencizer
    from spacy.tokenizer import Tokenizer

    nlp = spacy.blank("en")
    tok = nlp.tokenizer
    bare = Tokenizer(
        nlp.vocab,
        rules={},
        prefix_search=tok.prefix_search,
        suffix_search=tok.suffix_search,
        infix_finditer=tok.infix_finditer,
        token_match=tok.token_match,
        url_match=tok.url_match,
    )
    lines = [
        "# spaCy 3.8 English tokenizer special cases (MIT, explosion/spaCy spacy/lang/en/"
        "tokenizer_exceptions.py",
        "# and spacy/lang/tokenizer_exceptions.py) whose tokens differ from the affix rules' "
        "split:",
        "# chunk<TAB>tokens separated by spaces. Written by "
        "tests/pipeline/test_filters_reference.py.",
    ]
    for chunk, rule in sorted(tok.rules.items()):
        tokens = [next(iter(attrs.values())) for attrs in rule]
        if chunk.strip() and [t.text for t in bare(chunk)] != tokens:
            lines.append(f"{chunk}\t{' '.join(tokens)}")
    punct = {
        "terminal_punctuation": "".join(sorted(TERMINAL_PUNCTUATION)),
        "punctuation": "".join(sorted(PUNCTUATION_SET)),
        "sentence_punctuation": "".join(sorted(Sentencizer.default_punct_chars)),
    }
    return punct, "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def corpora() -> dict[str, list[dict[str, str]]]:
    from tests.conftest import load_bench, shared_data

    shared_data("extraction-trafilatura", "tests", "evaldata.json")
    dolma = shared_data("text", "dolma-cc_en_head")
    bench = load_bench("filter")
    return {
        "trafilatura": bench.trafilatura_texts(PAGES),
        "dolma": bench.dolma_texts(dolma),
    }


def their_reason(step, doc) -> str | None:
    result = step.filter(doc)
    if result is True:
        return None
    return result[1] if isinstance(result, tuple) else "dropped"


def compare(docs: list[dict[str, str]]) -> tuple[dict[str, float], list[str]]:
    """Agreement per filter and chained ("overall"), and one line per disagreement."""
    from datatrove.data import Document

    from pipeline.filters import FilterConfig, build_filters

    ours = build_filters(
        FilterConfig.model_validate(
            {"url": {"enabled": False}, "language": {"enabled": False}, "pii": {"enabled": False}}
        )
    )
    from tests.conftest import load_bench

    theirs = load_bench("filter").datatrove_filters()  # datatrove as we configure it to compare
    assert [f.name for f in ours] == ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    agree = dict.fromkeys([f.name for f in ours] + ["overall"], 0)
    lines = []
    for row in docs:
        text = row["text"]
        raw = {"id": row["id"], "text": text}
        doc, our_first, their_first = raw, None, None
        chained = Document(text=text, id=row["id"])  # C4 rewrites its text when it keeps it
        for step, ref in zip(ours, theirs, strict=True):
            signals = step.signals(step.transform(raw))
            mine = step.decide(signals)
            alone = their_reason(ref, Document(text=text, id=row["id"]))
            if (mine is None) == (alone is None):
                agree[step.name] += 1
            else:
                lines.append(f"{row['id']} {step.name}: ours {mine}, datatrove {alone}, {signals}")
            doc = step.transform(doc)  # the chain goes on with C4's cleaned text
            if our_first is None:
                our_first = step.decide(step.signals(doc))
            if their_first is None:
                their_first = their_reason(ref, chained)
        if (our_first is None) == (their_first is None):
            agree["overall"] += 1
        else:
            lines.append(f"{row['id']} overall: ours {our_first}, datatrove {their_first}")
    return {name: count / len(docs) for name, count in agree.items()}, lines


def test_reference_tables_are_datatrove_and_spacy_ones():
    """The data files our word counting reads are what the installed references use."""
    punct, exceptions = reference_tables()
    assert json.loads((DATA / "punctuation.json").read_text(encoding="utf-8")) == punct
    assert (DATA / "spacy_en_exceptions.txt").read_text(encoding="utf-8") == exceptions


@pytest.mark.parametrize("corpus", ["trafilatura", "dolma"])
def test_words_and_sentences_match_spacy(corpora, corpus):
    from datatrove.utils.text import split_into_sentences, split_into_words

    from pipeline.filters.words import WORDS

    docs = corpora[corpus]
    differ = [d["id"] for d in docs if WORDS.tokens(d["text"]) != split_into_words(d["text"])]
    assert len(differ) <= 0.01 * len(docs), differ
    lines = [line.strip() for d in docs[:100] for line in d["text"].splitlines()]
    wrong = [line for line in lines if WORDS.sentences(line) != len(split_into_sentences(line))]
    assert len(wrong) <= 0.005 * len(lines), wrong[:20]


@pytest.mark.parametrize("corpus", ["trafilatura", "dolma"])
def test_decisions_agree_with_datatrove(corpora, corpus):
    docs = corpora[corpus]
    assert len(docs) >= (300 if corpus == "trafilatura" else 20)
    agreement, disagreements = compare(docs)
    print(f"\n{corpus}: {len(docs)} documents, agreement {agreement}")
    failing = {name: share for name, share in agreement.items() if share < TARGET}
    assert not failing, f"{failing} below {TARGET}:\n" + "\n".join(disagreements)


def test_paper_word_counting_keeps_what_datatrove_counting_drops_for_punctuation():
    """The named option: same text, ratios per non-symbol word and stop words in any case."""
    from pipeline.filters import FILTERS, FilterConfig

    # Ordinary prose: 73% of its tokens have a letter (commas, brackets, a colon, a number are
    # tokens too), 97% of its non-symbol words do.
    prose = (
        "The report, published in March, lists 1,250 sites (about a third of them), and that "
        "figure, in turn, has been cited with care: see the notes, the tables and the maps. "
    ) * 4
    datatrove = FILTERS["gopher_quality"](FilterConfig().gopher_quality)
    paper = FILTERS["gopher_quality"](
        FilterConfig.model_validate({"gopher_quality": {"word_counting": "paper"}}).gopher_quality
    )
    doc = {"id": "x", "text": prose}
    assert datatrove.decide(datatrove.signals(doc)) == "gopher_below_alpha_threshold"
    assert paper.decide(paper.signals(doc)) is None
    # Stop words: datatrove's are case-sensitive ("The" is not "the"), the paper's are not.
    title = "The Cat And The Hat With A Bat. " * 12
    assert datatrove.signals({"text": title})["stop_words"] == 0
    assert paper.signals({"text": title})["stop_words"] == 3  # the, and, with


if __name__ == "__main__":
    punct, exceptions = reference_tables()
    (DATA / "punctuation.json").write_text(json.dumps(punct, indent=1, sort_keys=True) + "\n")
    (DATA / "spacy_en_exceptions.txt").write_text(exceptions, encoding="utf-8")
    print(f"wrote {DATA / 'punctuation.json'} and {DATA / 'spacy_en_exceptions.txt'}")
