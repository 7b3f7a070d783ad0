"""URL blocklist, PII redaction and the C4 bad-words option."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.errors import DataError, EmptyStageError
from pipeline.filters import FILTERS, FilterConfig, build_filters, filter_document, run
from pipeline.filters.config import signals_config
from tests.pipeline.test_filters import CLEAN, GERMAN, make_doc, write_shard


def step(name: str, **overrides):
    return FILTERS[name](getattr(FilterConfig.model_validate({name: overrides}), name))


def url_verdict(url: str, **overrides) -> str | None:
    url_filter = step("url", **overrides)
    doc = {**make_doc(CLEAN), "url": url}
    return url_filter.decide(url_filter.signals(doc))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://bad.example/page", "url_blocked_domain"),
        ("https://www.bad.example/page", "url_blocked_domain"),  # subdomains too
        ("HTTP://A.B.Bad.Example:8080/x?y=1", "url_blocked_domain"),  # case, port
        ("https://notbad.example/page", None),  # a suffix of a label is not a subdomain
        ("https://bad.example.org/page", None),
        ("https://news.example.com/free-porn-videos", "url_blocked_word"),  # built-in word
        ("https://news.example.com/search?q=online+casino", "url_blocked_word"),
        ("https://news.example.com/essex-news", None),  # "sex" only inside a word
        ("https://cams.example.xxx/", "url_blocked_domain"),  # built-in TLD entry
        ("https://news.example.com/spoilerz", "url_blocked_word"),  # config word
        ("http://[broken/", None),  # unparsable URL: no crash, falls back to `domain`
    ],
)
def test_url_blocklist(url, reason):
    overrides = {"blocked_domains": ["bad.example"], "blocked_words": ["spoilerz"]}
    assert url_verdict(url, **overrides) == reason


def test_url_blocklist_file_and_defaults_switch(tmp_path):
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("# my list\nshady.example\n\nTRACKER  # a word\n")
    assert url_verdict("https://x.shady.example/", blocklist_file=str(blocklist)) == (
        "url_blocked_domain"
    )
    assert url_verdict("https://ok.example/tracker/1", blocklist_file=str(blocklist)) == (
        "url_blocked_word"
    )
    assert url_verdict("https://ok.example/porn") == "url_blocked_word"
    assert url_verdict("https://ok.example/porn", use_default_blocklist=False) is None
    missing = FilterConfig.model_validate({"url": {"blocklist_file": str(tmp_path / "nope")}})
    with pytest.raises(DataError, match="nope: cannot read list file"):
        signals_config(missing)


def test_url_filter_runs_first(tmp_path):
    source = tmp_path / "in"
    write_shard(source / "part-00000.parquet", [CLEAN, GERMAN])
    config = FilterConfig.model_validate({"url": {"blocked_domains": ["example.com"]}})
    with pytest.raises(EmptyStageError, match="url_blocked_domain=2"):  # before language
        run(config, source, tmp_path / "out")


PII_TEXT = (
    "Write to jane.doe@mail.co.uk or to Bob.Smith+news@example-shop.com today. "
    "Our servers are 93.184.216.34 and 1.1.1.1, fine."
)
UNTOUCHED = (
    "Docs say email@example.com and admin@host.test. Private hosts: 10.0.0.1, 192.168.1.20, "
    "127.0.0.1, 172.16.0.3 and 169.254.1.1. Versions: version 2.4.1.8, v1.2.3.4, build 3.5.6.7, "
    "1.2.3.4.5 and 01.02.03.04. Not an IP: 999.1.1.1."
)


def test_pii_redacts_emails_and_public_ips_only():
    pii = step("pii")
    doc = make_doc(PII_TEXT + "\n" + UNTOUCHED)
    assert pii.signals(doc) == {"emails": 2.0, "ips": 2.0}
    redacted = pii.finish(doc)["text"]
    assert redacted == (
        "Write to email@example.com or to email@example.com today. "
        "Our servers are 192.0.2.1 and 192.0.2.1, fine.\n" + UNTOUCHED
    )
    assert pii.finish({**doc, "text": redacted})["text"] == redacted  # idempotent
    assert pii.signals(make_doc(UNTOUCHED)) == {"emails": 0.0, "ips": 0.0}
    assert pii.decide(pii.signals(doc)) is None  # never drops
    custom = step("pii", email_replacement="<EMAIL>", redact_ips=False)
    assert custom.finish(doc)["text"].startswith("Write to <EMAIL> or to <EMAIL> today. Our")
    assert "93.184.216.34" in custom.finish(doc)["text"]
    assert custom.signals(doc) == {"emails": 2.0, "ips": 0.0}


def test_pii_runs_on_kept_documents_in_the_stage(tmp_path):
    source = tmp_path / "in"
    leaky = CLEAN + "\nReach the keeper at keeper@lighthouse.org or 8.8.4.4 any time."
    write_shard(source / "part-00000.parquet", [leaky, "Too short, mail me@private.net."])
    result = run(FilterConfig(), source, tmp_path / "out")
    assert (result.docs_out, result.extra["pii_emails"], result.extra["pii_ips"]) == (1, 1, 1)
    kept = pq.read_table(tmp_path / "out" / "data").column("text").to_pylist()
    assert kept == [CLEAN + "\nReach the keeper at email@example.com or 192.0.2.1 any time."]
    removed = pq.read_table(tmp_path / "out" / "removed").to_pylist()
    assert removed[0]["text"] == "Too short, mail me@private.net."  # removed as it came in
    attributes = pq.read_table(tmp_path / "out" / "attributes").to_pylist()
    assert [(r["pii.emails"], r["pii.ips"]) for r in attributes] == [(1.0, 1.0), (1.0, 0.0)]


def test_c4_badwords_is_off_by_default_and_drops_when_on(tmp_path):
    rude = CLEAN + "\nThe keeper said the storm was a total fucking disaster for the town."
    assert not FilterConfig().c4_badwords.enabled
    assert filter_document(build_filters(FilterConfig()), make_doc(rude))[1] is None
    on = FilterConfig.model_validate({"c4_badwords": {"enabled": True}})
    assert filter_document(build_filters(on), make_doc(rude))[1] == "c4_badwords"
    assert filter_document(build_filters(on), make_doc(CLEAN))[1] is None
    badwords = step("c4_badwords", enabled=True)
    # Whole words only (not inside "Scunthorpe"), phrases too, case-insensitive.
    assert badwords.signals(make_doc("Scunthorpe and Cockermouth; Classic ANAL SEX.")) == {
        "count": 1.0
    }
    assert badwords.decide({"count": 1.0}) == "c4_badwords"
    assert step("c4_badwords", max_badwords=None).decide({"count": 5.0}) is None
    extra = tmp_path / "words.txt"
    extra.write_text("lighthouse\n")
    strict = step("c4_badwords", badwords_file=str(extra))
    assert strict.decide(strict.signals(make_doc(CLEAN))) == "c4_badwords"
