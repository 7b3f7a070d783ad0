"""Quality filters: each rule on a hand-made document, robustness, real CC text, the stage."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.documents import DOCUMENT_SCHEMA, ShardWriter, doc_id
from pipeline.errors import DataError, EmptyStageError
from pipeline.filters import (
    FILTERS,
    FilterConfig,
    FilterTask,
    build_filters,
    filter_document,
    filter_shard,
    run,
)
from tests.conftest import shared_data

# Eight distinct, punctuated sentences, one per line: passes every filter.
CLEAN = """The old lighthouse stood at the edge of the cliff for more than a century.
Fishermen relied on its steady beam to guide them home through winter storms.
In 1921 the keeper and his family moved into the small stone cottage beside it.
His daughter kept a journal describing every ship that passed during those years.
Historians later used her notes to reconstruct the trade routes of the region.
Today the building is a museum, and visitors can climb the narrow spiral staircase.
From the top they see the harbour, the village and the distant green hills.
Volunteers repaint the tower each spring so that it remains a landmark for sailors."""
LINES = CLEAN.splitlines()
GERMAN = (
    "Der alte Leuchtturm stand mehr als ein Jahrhundert lang am Rand der Klippe. Die Fischer "
    "verließen sich auf seinen Lichtstrahl, um bei Winterstürmen sicher nach Hause zu kommen."
)


def make_doc(text: str | None, language: str | None = "en", score: float | None = 0.95) -> dict:
    url = f"https://example.com/{abs(hash(text)) % 10**8}"
    return {
        "id": doc_id(url),
        "url": url,
        "domain": "example.com",
        "title": "t",
        "text": text,
        "language": language,
        "language_score": score,
        "fetched_at": datetime(2024, 5, 1, tzinfo=UTC),
        "source_warc": "x.warc.gz",
        "source_offset": 0,
    }


def verdict(name: str, text: str | None, **overrides) -> str | None:
    """One filter alone (FilterConfig field `name`, with overrides): its reason or None.

    The document has no stored language, so the language filter identifies it.
    """
    config = getattr(FilterConfig.model_validate({name: overrides}), name)
    step = FILTERS[name](config)
    return step.decide(step.signals(step.transform(make_doc(text, None, None))))


def unique_words(count: int, length: int, start: int = 0) -> list[str]:
    """Distinct lowercase words of `length` letters (base-26 numbering), never stop words."""
    words = []
    for i in range(start, start + count):
        letters, n = [], i + 26**3
        while n:
            n, r = divmod(n, 26)
            letters.append("abcdefghijklmnopqrstuvwxyz"[r])
        words.append(("q" * length + "".join(letters))[-length:])
    return words


def spaced(unit: list[str], fillers: list[str]) -> str:
    """unit + one filler, repeated: `unit` repeats, nothing longer than it does."""
    return " ".join(" ".join([*unit, f]) for f in fillers) + "."


def repeated_run(run_words: int, filler_words: int) -> str:
    """A run of words occurring twice (never on identical lines) amid distinct filler."""
    run_ = " ".join(unique_words(run_words, 5))
    fill = unique_words(filler_words, 6, start=5000)
    half = filler_words // 2
    return f"{run_} {' '.join(fill[:half])}.\n{' '.join(fill[half:])} {run_}."


# (filter, text, reason, threshold field set to None/False, reason then: None = passes)
CASES = [
    ("language", GERMAN, "language_not_en", None, None),
    ("gopher_quality", "\n".join(LINES[:2]), "gopher_short_doc", "min_doc_words", None),
    ("gopher_quality", " ".join(LINES * 1000), "gopher_long_doc", "max_doc_words", None),
    (
        "gopher_quality",
        "We go to an ox pen to be by it. " * 10,
        "gopher_below_avg_threshold",
        "min_avg_word_length",
        None,
    ),
    (
        "gopher_quality",
        "The incomprehensibilities of the extraordinarily uncharacteristically "
        "counterrevolutionaries. " * 12,
        "gopher_above_avg_threshold",
        "max_avg_word_length",
        None,
    ),
    (
        "gopher_quality",
        CLEAN + "\n" + " ".join(f"#{w}" for w in unique_words(20, 5)),
        "gopher_too_many_hashes",
        "max_hash_word_ratio",
        None,
    ),
    (
        "gopher_quality",
        CLEAN + "\n" + " ... ".join(["then"] * 25) + ".",
        "gopher_too_many_ellipsis",
        "max_ellipsis_word_ratio",
        # as in datatrove, each "..." is a word without letters: too few alphabetic words
        "gopher_below_alpha_threshold",
    ),
    (
        "gopher_quality",
        "\n".join(f"- {line}" for line in LINES),
        "gopher_too_many_bullets",
        "max_bullet_lines_ratio",
        None,
    ),
    (
        "gopher_quality",
        "\n".join(line[:-1] + "..." for line in LINES),
        "gopher_too_many_end_ellipsis",
        "max_ellipsis_lines_ratio",
        None,
    ),
    (
        "gopher_quality",
        CLEAN + "\n" + " ".join(str(n) for n in range(100, 160)),
        "gopher_below_alpha_threshold",
        "min_alpha_words_ratio",
        None,
    ),
    (
        "gopher_quality",
        "Cats sleep all day. Dogs bark at strangers. Birds sing before sunrise. " * 6,
        "gopher_few_stop_words",
        "min_stop_words",
        None,
    ),
    (
        "gopher_repetition",
        "\n".join(LINES[:4]) + "\n\n" + "\n".join(LINES[4:]) + "\n\nThanks." * 3,
        "gopher_repetition_dup_para_frac",
        "dup_para_frac",
        None,
    ),
    (
        "gopher_repetition",
        "\n\n".join([" ".join(LINES)] * 2 + LINES),
        "gopher_repetition_dup_para_char_frac",
        "dup_para_char_frac",
        "gopher_repetition_dup_line_char_frac",  # a repeated paragraph is repeated lines
    ),
    (
        "gopher_repetition",
        CLEAN + "\nRead more" * 5,
        "gopher_repetition_dup_line_frac",
        "dup_line_frac",
        None,
    ),
    (
        "gopher_repetition",
        CLEAN + ("\n" + " ".join(unique_words(70, 5))) * 2,
        "gopher_repetition_dup_line_char_frac",
        "dup_line_char_frac",
        "gopher_repetition_dup_5_gram",  # the repeated line is a long repeated n-gram too
    ),
    (
        "gopher_repetition",
        spaced(["the", "cat"], unique_words(40, 7)),
        "gopher_repetition_top_2_gram",
        "top_2_gram_frac",
        None,
    ),
    (
        "gopher_repetition",
        spaced(["xx", "yy", "zz"], unique_words(40, 24)),  # 8 / ~34 chars per unit
        "gopher_repetition_top_3_gram",
        "top_3_gram_frac",
        None,
    ),
    (
        "gopher_repetition",
        spaced(["aa", "bb", "cc", "dd"], unique_words(40, 43)),  # 11 / ~55 chars per unit
        "gopher_repetition_top_4_gram",
        "top_4_gram_frac",
        None,
    ),
    (
        "gopher_repetition",
        repeated_run(60, 60),
        "gopher_repetition_dup_5_gram",
        "dup_5_gram_frac",
        "gopher_repetition_dup_6_gram",
    ),
    (
        "gopher_repetition",
        repeated_run(10, 50),  # the run covers ~10.5% of the characters: only the 10-gram rule
        "gopher_repetition_dup_10_gram",
        "dup_10_gram_frac",
        None,
    ),
    ("c4", CLEAN + "\nLorem ipsum dolor sit amet.", "c4_lorem_ipsum", "filter_lorem_ipsum", None),
    (
        "c4",
        CLEAN + "\nUse f(x) { return 1; } here.",
        "c4_curly_bracket",
        "filter_curly_bracket",
        None,
    ),
    ("c4", "\n".join(LINES[:4]), "c4_too_few_sentences", "min_num_sentences", None),
    (
        "fineweb",
        "\n".join(line[:-1] for line in LINES),
        "fineweb_line_punct_ratio",
        "line_punct_thr",
        None,
    ),
    (
        "fineweb",
        "\n".join(
            ["Cats sleep.", "Dogs bark.", "Birds sing.", "Fish swim.", "Cows moo."] + LINES[:2]
        ),
        "fineweb_short_line_ratio",
        "short_line_thr",
        None,
    ),
    ("fineweb", CLEAN + "\n" + LINES[3], "fineweb_char_dup_ratio", "char_duplicates_ratio", None),
    (
        "fineweb",
        "\n".join(
            f"{a} {b}." for a, b in zip(unique_words(12, 15), unique_words(12, 15, 99), strict=True)
        ),
        "fineweb_list_ratio",
        "new_line_ratio",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "reason", "field", "reason_without"),
    CASES,
    ids=[case[2] for case in CASES],
)
def test_each_rule_trips_on_its_document(name, text, reason, field, reason_without):
    assert verdict(name, text) == reason
    assert verdict(name, CLEAN) is None
    if field is not None:  # switching the threshold off lets the document past that rule
        off = False if field.startswith("filter_") else None
        assert verdict(name, text, **{field: off}) == reason_without


def test_clean_document_passes_the_whole_default_pipeline():
    doc = make_doc(CLEAN)
    kept, reason = filter_document(build_filters(FilterConfig()), doc)
    assert reason is None
    assert kept["text"] == CLEAN


def language_verdict(doc: dict, **overrides) -> str | None:
    step = FILTERS["language"](FilterConfig.model_validate({"language": overrides}).language)
    return step.decide(step.signals(doc))


def test_language_uses_stored_labels_and_detects_missing_ones():
    assert language_verdict(make_doc(CLEAN)) is None
    assert language_verdict(make_doc(CLEAN, "de", 0.99)) == "language_not_en"  # stored wins
    assert language_verdict(make_doc(CLEAN, score=0.5)) == "language_low_score"
    assert language_verdict(make_doc(CLEAN, score=0.5), min_score=None) is None
    # No stored language: identified from the text.
    assert language_verdict(make_doc(CLEAN, None, None)) is None
    assert language_verdict(make_doc(GERMAN, None, None)) == "language_not_en"
    assert language_verdict(make_doc(GERMAN, None, None), languages=["en", "de"]) is None
    assert language_verdict(make_doc(CLEAN, None, None), languages=["de"]) == "language_not_de"


def test_c4_removes_boilerplate_lines_and_keeps_the_rest():
    noisy = "\n".join(
        [
            LINES[0] + "[1]",
            "Please enable JavaScript to view the comments.",
            LINES[1],
            "This site uses cookies to improve your experience.",
            "Menu",
            "x" * 1001 + " is a very long word here.",
            *LINES[2:],
            "Read our Privacy Policy for details.",
        ]
    )
    step = FILTERS["c4"](FilterConfig().c4)
    cleaned = step.transform(make_doc(noisy))["text"]
    assert cleaned == CLEAN
    assert step.decide(step.signals(make_doc(cleaned))) is None
    # datatrove checks "javascript" (drop the line) before "{" (drop the page).
    assert verdict("c4", CLEAN + "\nvar javascript = { on: true } now.") is None
    assert verdict("c4", CLEAN + "\nvar script = { on: true } now.") == "c4_curly_bracket"
    # FineWeb turned the terminal-punctuation rule off; C4's original setting drops lines.
    unpunctuated = CLEAN + "\nThis line has no final stop"
    assert "final stop" in step.transform(make_doc(unpunctuated))["text"]
    strict = FILTERS["c4"](
        FilterConfig.model_validate({"c4": {"filter_no_terminal_punct": True}}).c4
    )
    assert strict.transform(make_doc(unpunctuated))["text"] == CLEAN


def test_fineweb_exclude_zero_spares_unpunctuated_pages():
    text = "\n".join(line[:-1] for line in LINES)
    assert verdict("fineweb", text, line_punct_exclude_zero=True) is None


def test_config_enabled_flags_order_and_strictness():
    assert [f.name for f in build_filters(FilterConfig())] == [
        "url",
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "pii",
    ]  # c4_badwords is off by default
    config = FilterConfig.model_validate(
        {"gopher_quality": {"enabled": False}, "c4": {"enabled": False}}
    )
    filters = build_filters(config)
    assert [f.name for f in filters] == ["url", "language", "gopher_repetition", "fineweb", "pii"]
    # A short but clean page now passes: Gopher's length rule and C4's sentence rule are off.
    assert filter_document(filters, make_doc("\n".join(LINES[:3])))[1] is None
    assert filter_document(build_filters(FilterConfig()), make_doc("\n".join(LINES[:3])))[1] == (
        "gopher_short_doc"
    )
    assert (
        FilterConfig.model_validate(
            {"gopher_quality": {"min_doc_words": 100}}
        ).gopher_quality.min_doc_words
        == 100
    )
    with pytest.raises(ValidationError):
        FilterConfig.model_validate({"gopher_quality": {"min_doc_wordz": 100}})
    with pytest.raises(ValidationError):
        FilterConfig.model_validate({"language": {"languages": []}})


GARBAGE = [
    None,
    "",
    " ",
    "\n\n\n",
    "{{{",
    "...",
    "#" * 500,
    "a" * 5000,
    "\x00\x01\x02 \ufffd",
    "日本語のテキストです。これは英語ではありません。",
    "Привет, мир! Это не английский текст.\n\nСовсем не английский.",
    "🙂 🙂 🙂\n- \n•",
    "word\n" * 300,
]


@pytest.mark.parametrize("text", GARBAGE, ids=range(len(GARBAGE)))
def test_filters_never_crash_on_odd_text(text):
    for step in build_filters(FilterConfig()):
        doc = step.transform(make_doc(text, None, None))
        signals = step.signals(doc)
        assert set(signals) <= set(step.signal_names)
        for key, value in signals.items():
            if key in step.label_signals:
                assert isinstance(value, str)
            else:
                assert isinstance(value, float) and math.isfinite(value)
        step.decide(signals)
    _, reason = filter_document(build_filters(FilterConfig()), make_doc(text, None, None))
    assert reason is not None  # none of these is a keepable English page


def test_real_common_crawl_english_documents():
    files = sorted(shared_data("text", "dolma-cc_en_head").rglob("*.jsonl"))
    docs = [json.loads(line) for path in files for line in path.open()]
    assert len(docs) >= 20
    filters = build_filters(FilterConfig())
    language = Counter()
    overall = Counter()
    for row in docs:
        doc = make_doc(row["text"], None, None)  # language detected here, as for old data
        language[filters[0].decide(filters[0].signals(doc))] += 1
        overall[filter_document(filters, doc)[1]] += 1
    print(f"\nlanguage: {dict(language)}\nall filters: {dict(overall)}")
    assert language[None] >= 0.9 * len(docs)
    assert overall[None] >= 0.6 * len(docs)


def write_shard(path, texts: list[str | None]) -> None:
    with ShardWriter(path, DOCUMENT_SCHEMA) as writer:
        for i, text in enumerate(texts):
            doc = make_doc(text, "de" if text == GERMAN else "en")
            doc["url"] += f"?{i}"
            writer.write(doc)


def test_run_round_trip(tmp_path):
    source = tmp_path / "extracted"
    noisy = CLEAN + "\nPlease enable JavaScript to continue reading."
    write_shard(source / "part-00000.parquet", [CLEAN, noisy, "Too short.", GERMAN])
    write_shard(source / "part-00001.parquet", [])
    write_shard(source / "part-00002.parquet", [CLEAN + "\nLorem ipsum dolor sit amet."])
    out = tmp_path / "out"
    result = run(FilterConfig(), source, out)

    assert result.docs_in == 5
    assert result.docs_out == 2
    # "Too short." goes on its top 2-gram ("Too short" is 90% of it), as in datatrove, which
    # counts an n-gram seen once; Gopher repetition runs before Gopher quality.
    assert result.drops == {
        "c4_lorem_ipsum": 1,
        "gopher_repetition_top_2_gram": 1,
        "language_not_en": 1,
    }
    assert result.docs_in == result.docs_out + sum(result.drops.values())
    for shard in result.shards:
        assert shard["docs_in"] == shard["docs_out"] + sum(shard["drops"].values())
    names = [p.name for p in sorted(source.iterdir())]
    assert [p.name for p in sorted((out / "data").iterdir())] == names
    assert [p.name for p in sorted((out / "removed").iterdir())] == names

    kept = pq.read_table(out / "data" / "part-00000.parquet")
    assert kept.schema.names == DOCUMENT_SCHEMA.names
    assert kept.column("text").to_pylist() == [CLEAN, CLEAN]  # C4 removed the javascript line
    removed = pq.read_table(out / "removed").to_pylist()
    assert sorted(r["reason"] for r in removed) == sorted(result.drops)
    assert {r["stage"] for r in removed} == {"filter"}
    lorem = next(r for r in removed if r["reason"] == "c4_lorem_ipsum")
    assert lorem["text"].endswith("Lorem ipsum dolor sit amet.")  # removed as it came in
    assert pq.read_table(out / "data" / "part-00001.parquet").num_rows == 0
    assert result.extra["chars_out"] == 2 * len(CLEAN)


def test_run_errors(tmp_path):
    with pytest.raises(DataError, match="missing"):
        run(FilterConfig(), tmp_path / "missing", tmp_path / "out")
    write_shard(tmp_path / "in" / "part-00000.parquet", ["Too short.", GERMAN])
    with pytest.raises(EmptyStageError, match="gopher_repetition_top_2_gram=1"):
        run(FilterConfig(), tmp_path / "in", tmp_path / "out")


def test_shard_task_is_picklable_for_process_pools(tmp_path):
    write_shard(tmp_path / "part-00000.parquet", [CLEAN])
    task = FilterTask(tmp_path / "part-00000.parquet", tmp_path / "out", FilterConfig())
    result = filter_shard(pickle.loads(pickle.dumps(task)))
    assert (result.docs_in, result.docs_out, result.drops) == (1, 1, {})
    assert (tmp_path / "out" / "attributes" / "part-00000.parquet").is_file()


def test_top_ngram_signal_is_the_same_in_every_process():
    """Ties between equally frequent n-grams must not depend on PYTHONHASHSEED."""
    import json
    import os
    import subprocess
    import sys

    text = "red fox runs far. blue cat sits still. red fox runs far. blue cat sits still. " * 3
    code = (
        "import json,sys; from pipeline.filters.gopher_repetition import NGrams; "
        "w=sys.argv[1].split(); g=NGrams(w); print(json.dumps([g.top_chars(n) for n in (2,3,4)]))"
    )
    outputs = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, text], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1, outputs
    assert json.loads(outputs.pop())[0] > 0


def test_words_and_sentences_are_counted_as_datatrove_counts_them():
    """spaCy's English tokens (datatrove's word tokenizer), checked against spaCy itself on
    real text in test_filters_reference.py; here the cases that move the ratios."""
    from pipeline.filters.words import WORDS

    text = (
        "Don't stop: the U.S. paid $5 (about 3.14%) for 1,000 well-known e.g. items at "
        "https://example.com/a?b=1. Ask Mr. Smith... or 10km away!"
    )
    assert WORDS.tokens(text) == [
        "Do",
        "n't",
        "stop",
        ":",
        "the",
        "U.S.",
        "paid",
        "$",
        "5",
        "(",
        "about",
        "3.14",
        "%",
        ")",
        "for",
        "1,000",
        "well",
        "-",
        "known",
        "e.g.",
        "items",
        "at",
        "https://example.com/a?b=1",
        ".",
        "Ask",
        "Mr.",
        "Smith",
        "...",
        "or",
        "10",
        "km",
        "away",
        "!",
    ]
    # spaCy's sentencizer: a sentence ends at a "." "!" "?" token, not inside "Mr." or "3.5".
    assert WORDS.sentences("Mr. Smith went home. He slept.") == 2
    assert WORDS.sentences("It costs 3.5 dollars. Really?! Yes.") == 3
    assert WORDS.sentences_in_lines("One. Two.\nThree") == 3
