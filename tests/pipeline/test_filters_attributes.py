"""Attributes: every signal and verdict per document; re-tuning thresholds from them."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from pipeline.documents import DOCUMENT_SCHEMA, ShardWriter
from pipeline.errors import DataError
from pipeline.filters import (
    FILTERS,
    FilterConfig,
    build_filters,
    retune,
    run,
    signals_config,
    thresholds_only_change,
)
from tests.pipeline.test_filters import CLEAN, GERMAN, LINES, make_doc

SHARDS = {
    "part-00000.parquet": [
        CLEAN,
        CLEAN + "\nPlease enable JavaScript to continue reading.",  # C4 drops that line
        "Too short.",
        GERMAN,
        "\n".join(LINES[:4]),  # 4 sentences: C4 drops it, 3 would keep it
        None,
    ],
    "part-00001.parquet": [
        CLEAN + "\nWrite to the keeper at keeper@lighthouse.org any time.",
        CLEAN + "\nLorem ipsum dolor sit amet.",
    ],
}
BLOCKED = "https://casino.example/win"  # the last document of part-00001, see write_input


def write_input(folder, shards=SHARDS, edit=None) -> None:
    for name, texts in shards.items():
        with ShardWriter(folder / name, DOCUMENT_SCHEMA) as writer:
            for i, text in enumerate(texts):
                doc = make_doc(text, "de" if text == GERMAN else "en")
                doc["url"] += f"?{name}-{i}"
                writer.write(doc)
            if name == "part-00001.parquet":
                writer.write({**make_doc(CLEAN), "url": BLOCKED, "id": "blocked"})
    if edit:
        (path,) = folder.glob(edit)
        rows = pq.read_table(path).to_pylist()
        rows[0]["text"] += " Edited."
        with ShardWriter(path, DOCUMENT_SCHEMA) as writer:
            writer.write_many(rows)


@pytest.fixture
def extracted(tmp_path):
    write_input(tmp_path / "extracted")
    return tmp_path / "extracted"


BASE = {"url": {"blocked_domains": ["casino.example"]}}
# Only thresholds (and an output-only PII setting) change: re-decided from stored signals.
# German is now wanted but fails Gopher's length rule (a reason only stored signals can give);
# the 4-sentence page is now kept (it must come out C4-cleaned and PII-redacted).
TUNED = {
    **BASE,
    "language": {"languages": ["en", "de"]},
    "gopher_quality": {"min_doc_words": 40},
    "c4": {"min_num_sentences": 3},
    "pii": {"email_replacement": "<EMAIL>"},
}


@pytest.fixture
def signal_calls(monkeypatch):
    """How many times any filter's `signals` ran."""
    calls = {"n": 0}
    for cls in FILTERS.values():
        original = cls.signals

        def counting(self, doc, _original=original):
            calls["n"] += 1
            return _original(self, doc)

        monkeypatch.setattr(cls, "signals", counting)
    return calls


def test_attributes_have_a_row_per_document_and_reproduce_the_outputs(extracted, tmp_path):
    config = FilterConfig.model_validate(BASE)
    result = run(config, extracted, tmp_path / "out")
    assert result.extra["signals"] == "measured"
    filters = build_filters(config)
    expected_columns = ["id"]
    for step in filters:
        expected_columns += [f"{step.name}.{s}" for s in step.signal_names]
        expected_columns += [f"{step.name}.reason"] if step.name != "pii" else []
    expected_columns.append("reason")
    assert "language.label" in expected_columns and "gopher_quality.word_count" in expected_columns

    for name in SHARDS:
        source = pq.read_table(extracted / name)
        table = pq.read_table(tmp_path / "out" / "attributes" / name)
        assert table.schema.names == expected_columns
        assert table.column("id").to_pylist() == source.column("id").to_pylist()
        rows = table.to_pylist()
        kept = pq.read_table(tmp_path / "out" / "data" / name).column("id").to_pylist()
        removed = pq.read_table(tmp_path / "out" / "removed" / name).to_pylist()
        assert [r["id"] for r in rows if r["reason"] is None] == kept
        assert [(r["id"], r["reason"]) for r in rows if r["reason"]] == [
            (r["id"], r["reason"]) for r in removed
        ]
        for row in rows:  # the final reason is the first filter's that failed
            verdicts = [row[f"{s.name}.reason"] for s in filters if s.can_drop]
            assert row["reason"] == next((v for v in verdicts if v), None)

    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "attributes").to_pylist()}
    german = next(r for r in rows.values() if r["language.label"] == "de")
    # Removed by the language filter, yet measured by every later filter too.
    assert german["reason"] == german["language.reason"] == "language_not_en"
    assert german["gopher_quality.word_count"] > 20 and german["fineweb.line_punct_ratio"] == 1
    assert german["gopher_quality.reason"] == "gopher_short_doc"
    assert rows["blocked"]["url.blocked_domain"] == 1.0
    assert rows["blocked"]["reason"] == "url_blocked_domain"
    assert result.drops == {
        "c4_lorem_ipsum": 1,
        "c4_too_few_sentences": 1,
        # As datatrove: an empty document is dropped as such, and "Too short." on its top
        # 2-gram (an n-gram seen once counts); repetition runs before Gopher quality.
        "gopher_repetition_empty": 1,
        "gopher_repetition_top_2_gram": 1,
        "language_not_en": 1,
        "url_blocked_domain": 1,
    }


def _digests(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def _counts(result) -> dict:
    extra = {k: v for k, v in result.extra.items() if k not in ("signals", "retune_fallback")}
    return {**vars(result), "extra": extra}


def test_retune_measures_nothing_and_equals_a_full_run(extracted, tmp_path, signal_calls):
    run(FilterConfig.model_validate(BASE), extracted, tmp_path / "first")
    assert signal_calls["n"] == 9 * 7  # every enabled filter measured every document

    tuned = FilterConfig.model_validate(TUNED)
    assert thresholds_only_change(FilterConfig.model_validate(BASE), tuned)
    signal_calls["n"] = 0
    retuned = retune(tuned, extracted, tmp_path / "first" / "attributes", tmp_path / "retuned")
    assert signal_calls["n"] == 0
    assert retuned.extra["signals"] == "stored"

    full = run(tuned, extracted, tmp_path / "full")
    assert signal_calls["n"] > 0
    assert _digests(tmp_path / "retuned") == _digests(tmp_path / "full")  # byte for byte
    assert _counts(retuned) == _counts(full)
    # The new thresholds did change decisions, in an order-dependent way.
    assert retuned.drops["gopher_short_doc"] == 1  # German now reaches Gopher's rule
    assert "c4_too_few_sentences" not in retuned.drops
    kept = pq.read_table(tmp_path / "retuned" / "data").column("text").to_pylist()
    assert "\n".join(LINES[:4]) in kept
    assert CLEAN + "\nWrite to the keeper at <EMAIL> any time." in kept
    assert CLEAN in kept and retuned.extra["pii_emails"] == 1


def test_retune_falls_back_to_measuring_when_signals_would_change(
    extracted, tmp_path, signal_calls
):
    run(FilterConfig.model_validate(BASE), extracted, tmp_path / "first")
    changed = FilterConfig.model_validate({**BASE, "c4": {"min_words_per_line": 5}})
    assert not thresholds_only_change(FilterConfig.model_validate(BASE), changed)
    signal_calls["n"] = 0
    result = retune(changed, extracted, tmp_path / "first" / "attributes", tmp_path / "retuned")
    assert signal_calls["n"] == 9 * 7
    assert result.extra["signals"] == "measured"
    assert "another signals config (filters: c4)" in result.extra["retune_fallback"]
    full = run(changed, extracted, tmp_path / "full")
    assert _digests(tmp_path / "retuned") == _digests(tmp_path / "full")
    assert _counts(result) == _counts(full)

    missing = retune(changed, extracted, tmp_path / "nowhere", tmp_path / "again")
    assert "no attributes folder" in missing.extra["retune_fallback"]


def test_retune_refuses_attributes_of_other_documents(extracted, tmp_path):
    run(FilterConfig.model_validate(BASE), extracted, tmp_path / "first")
    edited = tmp_path / "edited"
    write_input(edited, edit="part-00001.parquet")  # same ids, one text changed
    with pytest.raises(DataError, match="part-00001.parquet: measured from other input"):
        retune(
            FilterConfig.model_validate(BASE),
            edited,
            tmp_path / "first" / "attributes",
            tmp_path / "out",
        )
    assert not (tmp_path / "out" / "data" / "part-00001.parquet").exists()


def test_signals_config_separates_measuring_from_deciding(tmp_path):
    base = FilterConfig()
    same = [
        {"gopher_quality": {"min_doc_words": 10}},
        {"language": {"languages": ["de"], "min_score": None}},
        {"fineweb": {"line_punct_exclude_zero": True, "new_line_ratio": 0.5}},
        {"c4": {"min_num_sentences": 2}},
        {"pii": {"ip_replacement": "0.0.0.0"}},
    ]
    differ = [
        {"c4": {"filter_javascript": False}},
        {"gopher_quality": {"stop_words": ["the"]}},
        {"fineweb": {"short_line_length": 40}},
        {"c4_badwords": {"enabled": True}},
        {"gopher_repetition": {"enabled": False}},
        {"url": {"blocked_words": ["news"]}},
        {"pii": {"redact_ips": False}},
    ]
    for change in same:
        assert thresholds_only_change(base, FilterConfig.model_validate(change)), change
    for change in differ:
        assert not thresholds_only_change(base, FilterConfig.model_validate(change)), change
    # The list's content counts, not its path: an edited file is a different configuration.
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("one.example\n")
    with_file = FilterConfig.model_validate({"url": {"blocklist_file": str(blocklist)}})
    before = signals_config(with_file)
    blocklist.write_text("one.example\ntwo.example\n")
    assert signals_config(with_file) != before
    assert json.loads(json.dumps(before)) == before  # stored as JSON in the attributes
