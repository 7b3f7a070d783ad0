"""13-gram contamination: normalization, hashing, and planted overlaps found (and only those)."""

import json

import numpy as np
import pytest

from pipeline.contamination import (
    NgramIndex,
    eval_file_texts,
    hellaswag_texts,
    ngram_hashes,
    normalize_words,
)
from pipeline.errors import DataError

# 18 words: 6 word 13-grams.
PLANTED = "the quick brown fox jumps over the lazy dog while seven wise owls watch from the old oak"


def test_normalization_follows_the_harness_janitor():
    assert normalize_words("It's  a DOG,\nisn't it?") == ["its", "a", "dog", "isnt", "it"]


def test_ngram_hashes_count_order_and_normalization():
    hashes = ngram_hashes(PLANTED)
    assert hashes.dtype == np.uint64 and hashes.size == 18 - 13 + 1
    assert np.array_equal(hashes, ngram_hashes(PLANTED.upper().replace(" ", " , ")))
    words = PLANTED.split()
    swapped = " ".join([words[1], words[0], *words[2:13]])
    assert ngram_hashes(swapped)[0] != hashes[0]  # word order counts
    assert ngram_hashes("twelve words only " * 3).size == 0


def test_index_finds_planted_items_and_counts_short_ones_apart():
    items = [
        "Earlier text. " + PLANTED.title() + "!",  # contaminated
        "an entirely different sentence about ships sailing far beyond the grey northern sea today",
        "too short to check",
    ]
    index = NgramIndex({"eval": items})
    assert index.scan("A training page: " + " ".join(PLANTED.split()[:12])) == 0  # 12 words
    assert index.scan("prefix words " + PLANTED + " suffix") == 6
    assert index.scan("nothing to see here at all") == 0
    report = index.report()
    assert report["eval"] == {"items": 3, "too_short": 1, "contaminated": 1, "fraction": 0.5}
    assert report["train_documents"] == 3 and report["train_documents_with_eval_ngrams"] == 1
    assert index.matches(PLANTED) == 6 and index.documents == 3  # matches() records nothing
    # An item of several texts: no n-gram spans two of them.
    halves = [" ".join(PLANTED.split()[:9]), " ".join(PLANTED.split()[9:])]
    assert NgramIndex({"eval": [halves]}).ngrams.size == 0


def test_eval_files_hellaswag_and_text(tmp_path):
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps({"ctx": "A man", "endings": ["runs.", "sits.", "b", "c"]}) + "\n")
    assert list(hellaswag_texts(hs)) == [["A man runs.", "A man sits.", "A man b", "A man c"]]
    text = tmp_path / "eval.txt"
    text.write_text("first paragraph\n\nsecond one\n\n\n")
    assert eval_file_texts(text) == ["first paragraph", "second one"]
    hs.write_text('{"ctx": "no endings"}\n')
    with pytest.raises(DataError, match=r"hs.jsonl:1: not a HellaSwag item"):
        eval_file_texts(hs)
    with pytest.raises(DataError, match="cannot open evaluation file"):
        list(hellaswag_texts(tmp_path / "missing.jsonl"))
