"""Extract stage: own small WARCs, real Common Crawl / wget WARCs, broken files, timeouts."""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import pipeline.extract.extractor
from pipeline.documents import DOCUMENT_SCHEMA, doc_id
from pipeline.errors import DataError
from pipeline.extract.extractor import ExtractConfig, ExtractTask, extract_shard, run
from pipeline.extract.reasons import REASONS
from pipeline.extract.sandbox import Sandbox, SandboxError, SandboxTimeout
from pipeline.extract.warc import decode_html, is_html, iter_responses, list_warc_files
from pipeline.langid import detect_language
from pipeline.stage import process_map
from pipeline.store.fs import Folder
from tests.conftest import shared_data

WARCIO = ("warc", "warcio", "test", "data")
ARTICLE = [
    "The river town of Millbrook keeps a small museum of clocks made by local families.",
    "Volunteers open the museum every weekend and explain how each clock was repaired.",
    "Visitors often stay for the noon chime, when forty clocks strike together at once.",
]
FRENCH = [
    "La petite ville de Millbrook garde un musée d'horloges fabriquées par des familles.",
    "Des bénévoles ouvrent le musée chaque week-end et expliquent chaque réparation.",
    "Les visiteurs restent souvent pour le carillon de midi, quand les horloges sonnent.",
]
NAV, FOOTER = "About us", "All rights reserved"


def page(title: str, paragraphs: list[str], head: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!DOCTYPE html><html><head>{head}<title>{title}</title></head><body>"
        f'<nav><ul><li><a href="/">Home</a></li><li><a href="/about">{NAV}</a></li></ul></nav>'
        f"<article><h1>{title}</h1>{body}</article>"
        f"<footer><p>Copyright 2024 Example Corp. {FOOTER}.</p></footer></body></html>"
    )


def write_warc(path: Path, responses: list[tuple[str, int, str | None, bytes]]) -> Path:
    """A gzipped WARC like our crawler's: warcinfo, then a request + response per page."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for url, status, content_type, body in responses:
            request = StatusAndHeaders("GET / HTTP/1.1", [], is_http_request=True)
            writer.write_record(
                writer.create_warc_record(
                    url, "request", payload=io.BytesIO(b""), http_headers=request
                )
            )
            headers = [("Content-Type", content_type)] if content_type else []
            http = StatusAndHeaders(f"{status} X", headers, protocol="HTTP/1.1")
            date = {"WARC-Date": "2024-05-01T12:00:00Z"}
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict=date
            )
            writer.write_record(record)
    return path


def extract_one(warc: Path, tmp_path: Path, **config) -> tuple[list[dict], list[dict], object]:
    task = ExtractTask(warc, Folder(tmp_path), "d.parquet", ExtractConfig(**config))
    result = extract_shard(task)
    docs = pq.read_table(tmp_path / task.data).to_pylist()
    return docs, pq.read_table(tmp_path / task.removed).to_pylist(), result


HTML = "text/html; charset=utf-8"
LATIN1_PAGE = page("Café", ARTICLE, '<meta charset="latin1">').encode("latin-1")
OWN_PAGES = [
    ("http://a.test/clocks", 200, HTML, page("Clocks", ARTICLE).encode()),
    ("http://a.test/missing", 404, HTML, page("Not found", ARTICLE).encode()),
    ("http://a.test/data.json", 200, "application/json", b'{"a": 1}'),
    ("http://a.test/clocks", 200, HTML, page("Clocks again", ARTICLE).encode()),
    ("http://a.test/empty", 200, HTML, b"<html><head><title>t</title></head><body></body></html>"),
    ("http://A.test:8080/fr", 200, None, page("Le musée", FRENCH).encode()),  # sniffed as HTML
    ("http://a.test/latin", 200, "text/html", LATIN1_PAGE),
]


def test_own_warc_gives_expected_docs_and_removals(tmp_path):
    warc = write_warc(tmp_path / "own.warc.gz", OWN_PAGES)
    docs, removed, result = extract_one(warc, tmp_path)

    assert [d["url"] for d in docs] == [
        "http://a.test/clocks",
        "http://A.test:8080/fr",
        "http://a.test/latin",
    ]
    clocks, french, latin = docs
    assert clocks["title"] == "Clocks" and all(p in clocks["text"] for p in ARTICLE)
    assert NAV not in clocks["text"] and FOOTER not in clocks["text"]  # boilerplate gone
    assert clocks["id"] == doc_id("http://a.test/clocks")
    assert clocks["domain"] == "a.test" and french["domain"] == "a.test"  # lowercase, no port
    assert (clocks["language"], french["language"]) == ("en", "fr")
    assert clocks["language_score"] > 0.9
    assert clocks["fetched_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert clocks["source_warc"] == str(warc) and clocks["source_offset"] > 0
    assert latin["title"] == "Café"  # charset from <meta>, not the UTF-8 fallback

    reasons = {r["url"]: r["reason"] for r in removed if r["reason"] != "extract_duplicate_url"}
    assert reasons == {
        "http://a.test/missing": "extract_http_status",
        "http://a.test/data.json": "extract_not_html",
        "http://a.test/empty": "extract_no_text",
    }
    dup = [r for r in removed if r["reason"] == "extract_duplicate_url"]
    assert len(dup) == 1 and dup[0]["source_offset"] > clocks["source_offset"]  # first one kept
    assert all(r["stage"] == "extract" for r in removed)

    assert (result.docs_in, result.docs_out) == (7, 3)
    assert result.drops == {
        "extract_duplicate_url": 1,
        "extract_http_status": 1,
        "extract_no_text": 1,
        "extract_not_html": 1,
    }
    assert result.extra["skipped_records"] == {"request": 7, "warcinfo": 1}
    assert result.extra["records"] == 15 and result.extra["sandbox_mode"] == "process"


def test_records_of_other_schemes_are_dropped_as_not_http(tmp_path):
    """A dns: record (Heritrix writes one per host) or an ftp: page is not an HTTP response:
    it gets its own reason, not extract_http_status, whatever its status line says."""
    pages = [("ftp://a.test/clocks.html", 200, HTML, page("Clocks", ARTICLE).encode())]
    pages += [("https://a.test/clocks", 200, HTML, page("Clocks", ARTICLE).encode())]
    warc = write_warc(tmp_path / "own.warc.gz", pages)
    with open(warc, "ab") as fh:
        writer = WARCWriter(fh, gzip=True)
        dns = b"20240501120000\na.test.\t300\tIN\tA\t192.0.2.1\n"
        record = writer.create_warc_record(
            "dns:a.test", "response", payload=io.BytesIO(dns), warc_content_type="text/dns"
        )
        writer.write_record(record)
    docs, removed, result = extract_one(warc, tmp_path)
    assert [d["url"] for d in docs] == ["https://a.test/clocks"]
    assert {r["url"]: r["reason"] for r in removed} == {
        "ftp://a.test/clocks.html": "extract_not_http",
        "dns:a.test": "extract_not_http",
    }
    assert result.drops == {"extract_not_http": 2}


def test_every_extract_reason_is_documented():
    source = Path(pipeline.extract.extractor.__file__).read_text()
    assert set(re.findall(r'"(extract_[a-z_]+)"', source)) == set(REASONS)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert [r for r in REASONS if f"`{r}`" not in readme] == []


def test_max_html_bytes_and_min_text_chars(tmp_path):
    warc = write_warc(tmp_path / "own.warc.gz", OWN_PAGES[:1] + OWN_PAGES[5:6])
    docs, removed, _ = extract_one(warc, tmp_path, max_html_bytes=100)
    assert docs == [] and {r["reason"] for r in removed} == {"extract_too_large"}
    docs, removed, _ = extract_one(warc, tmp_path, min_text_chars=10_000)
    assert docs == [] and {r["reason"] for r in removed} == {"extract_no_text"}


def test_run_writes_shards_and_keeps_each_url_once_across_them(tmp_path):
    first = write_warc(tmp_path / "a.warc.gz", OWN_PAGES[:1])
    second = write_warc(tmp_path / "b.warc.gz", OWN_PAGES[5:6] + OWN_PAGES[1:2] + OWN_PAGES[:1])
    out = tmp_path / "out"
    result = run(ExtractConfig(), [first, second], out, pmap=process_map(2))  # as flows run it

    shard0 = pq.read_table(out / "data" / "part-00000.parquet")
    shard1 = pq.read_table(out / "data" / "part-00001.parquet")
    assert shard0["url"].to_pylist() == ["http://a.test/clocks"]
    assert shard1["url"].to_pylist() == ["http://A.test:8080/fr"]
    assert shard1.schema.names == DOCUMENT_SCHEMA.names
    moved = pq.read_table(out / "removed" / "part-00001.parquet").to_pylist()
    assert [(r["url"], r["reason"]) for r in moved] == [
        ("http://a.test/missing", "extract_http_status"),
        ("http://a.test/clocks", "extract_duplicate_url"),
    ]
    assert moved[1]["duplicate_of"] == doc_id("http://a.test/clocks")
    assert moved[1]["fetched_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)

    assert (result.docs_in, result.docs_out) == (4, 2)
    assert result.drops == {"extract_duplicate_url": 1, "extract_http_status": 1}
    assert result.shards[1]["docs_out"] == 1 and result.shards[1]["drops"] == result.drops
    assert result.extra["response_records"] == 4 and result.extra["pages_per_s"] > 0
    assert result.extra["duplicate_urls_across_shards"] == 1


def test_run_needs_warc_files(tmp_path):
    with pytest.raises(DataError, match="no WARC files"):
        run(ExtractConfig(), [], tmp_path / "out")


def test_common_crawl_and_wget_warcs_extract_english_text(tmp_path):
    files = [
        shared_data("warc", "commoncrawl-whirlwind", "whirlwind.warc.gz"),
        shared_data("warc", "commoncrawl-whirlwind", "whirlwind.warc"),
        shared_data("warc", "jwarc", "test-resources", "org", "netpreserve", "jwarc", "cc.warc.gz"),
        *list_warc_files(shared_data("warc", "dolma")),
    ]
    result = run(ExtractConfig(), files, tmp_path / "out")
    docs = [
        d
        for p in sorted((tmp_path / "out" / "data").glob("*.parquet"))
        for d in pq.read_table(p).to_pylist()
    ]

    whirlwind = [d for d in docs if d["source_warc"].endswith("whirlwind.warc.gz")]
    assert len(whirlwind) == 1 and len(whirlwind[0]["text"]) > 500
    assert whirlwind[0]["language"] == "an"  # an.wikipedia.org (Aragonese), correctly so
    dolma = [d for d in docs if "dolma" in d["source_warc"]]
    assert len(dolma) >= 30  # of 37 responses; the rest are the same URL fetched again
    english = [d for d in dolma if d["language"] == "en" and len(d["text"]) > 200]
    assert len(english) >= 0.8 * len(dolma)
    assert result.extra["response_records"] == 1 + 1 + 1 + 37
    assert result.drops.get("extract_duplicate_url", 0) >= 1  # whirlwind page in .warc and .warc.gz
    assert not {"extract_error", "extract_timeout"} & set(result.drops)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("example.warc.gz", "Example Domain"),
        ("example.arc", "Example Domain"),  # ARC records are read as WARC (warcio arc2warc)
        ("example-iana.org-chunked.warc", "Internet Assigned Numbers Authority"),  # chunked body
        ("example-wget-bad-target-uri.warc.gz", "Example Domain"),  # odd URIs on metadata only
    ],
)
def test_warcio_valid_files_extract_their_page(name, title, tmp_path):
    docs, _, _ = extract_one(shared_data(*WARCIO, name), tmp_path)
    assert [d["title"] for d in docs] == [title] and docs[0]["text"]


@pytest.mark.parametrize(
    "name",
    [
        "bad.arc",  # Archive-length -1 / "abc"
        "example-bad-non-chunked.warc.gz",  # one gzip member for many records
        "example-bad.warc.gz.bad",
        "example-wrong-chunks.warc.gz",
        "example-trunc.warc",  # Content-Length 2 bytes short
    ],
)
def test_warcio_broken_files_give_one_line_data_error(name, tmp_path, capfd):
    path = shared_data(*WARCIO, name)
    task = ExtractTask(path, Folder(tmp_path), "d.parquet", ExtractConfig())
    with pytest.raises(DataError) as info:
        extract_shard(task)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert not (tmp_path / task.data).exists() and not (tmp_path / task.removed).exists()
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "data", tmp_path / "removed"]  # no temp file
    assert capfd.readouterr().err == ""  # warcio's own stderr warnings are silenced


def test_corrupted_and_truncated_copies_give_data_error(tmp_path):
    real = shared_data("warc", "dolma", "tests", "data", "warc", "sample-0000.warc.gz").read_bytes()
    flipped = bytearray(real)
    flipped[20_000:20_100] = bytes(b ^ 0x55 for b in flipped[20_000:20_100])
    plain = gzip.decompress(real)
    cases = {
        "flipped.warc.gz": (bytes(flipped), "corrupt gzip member at offset 15904"),
        "cut.warc.gz": (real[: len(real) // 2], "offset"),
        "no-trailer.warc.gz": (real[:-4], "truncated gzip member"),  # records intact, gzip not
        "cut.warc": (plain[: len(plain) // 2], "truncated"),
        "junk.warc": (b"hello, not a warc\n" * 5, "corrupt WARC"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match=expected) as info:
            list(iter_responses(path, Counter()))
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_list_warc_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.warc.gz", "sub/a.warc", "notes.txt", "x.wet.gz"]:
        (tmp_path / name).write_bytes(b"")
    assert list_warc_files(tmp_path) == [tmp_path / "b.warc.gz", tmp_path / "sub" / "a.warc"]
    assert list_warc_files(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]  # a file as given
    with pytest.raises(DataError, match="no such file"):
        list_warc_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'}: no"):
        list_warc_files(tmp_path / "empty")


def test_decode_and_sniff():
    assert decode_html("é".encode("latin-1"), "text/html; charset=ISO-8859-1") == "é"
    assert decode_html('<meta charset="windows-1252">\xe9'.encode("latin-1"), None).endswith("é")
    assert decode_html("é".encode(), "text/html; charset=utf-8") == "é"
    assert decode_html(b"\xff\xfe" + "é".encode("utf-16-le"), "text/html; charset=latin1") == "é"
    assert decode_html(b"\xe9", "text/html; charset=nonsense") == "\ufffd"  # UTF-8, replaced
    assert is_html("application/xhtml+xml", b"") and not is_html("image/png", b"<html>")
    assert is_html(None, b"  <!doctype html><p>x") and not is_html(None, b"\x89PNG\r\n")


def test_detect_language():
    en = detect_language(" ".join(ARTICLE))
    assert en[0] == "en" and 0.9 < en[1] <= 1.0
    assert detect_language(" ".join(FRENCH))[0] == "fr"
    assert detect_language("Der schnelle braune Fuchs springt über den faulen Hund.")[0] == "de"
    assert detect_language("") == ("und", 0.0) and detect_language("12 34 !!") == ("und", 0.0)


def test_config_defaults_and_unknown_keys():
    config = ExtractConfig()
    assert (config.favor_precision, config.include_comments, config.deduplicate) == (
        True,
        False,
        True,
    )
    assert config.timeout_seconds == 1.0 and config.max_html_bytes == 5 * 1024 * 1024
    with pytest.raises(ValidationError):
        ExtractConfig(favour_precision=True)  # datatrove's spelling is not ours
    with pytest.raises(ValidationError):
        ExtractConfig(timeout_seconds=0)


# --- timeouts: the sandbox ----------------------------------------------------------------


def slow_extract(html: str, url: str | None, config: ExtractConfig):
    """Stands in for trafilatura: hangs on one page, crashes the process on another."""
    if "HANG" in html:
        time.sleep(30)
    if "CRASH" in html:
        os._exit(3)
    return "title", f"text of {url}"


def test_slow_page_is_killed_and_recorded_as_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.extract.extractor, "extract_html", slow_extract)
    pages = [
        ("http://a.test/1", 200, HTML, b"<html><body>one</body></html>"),
        ("http://a.test/hang", 200, HTML, b"<html><body>HANG</body></html>"),
        ("http://a.test/crash", 200, HTML, b"<html><body>CRASH</body></html>"),
        ("http://a.test/2", 200, HTML, b"<html><body>two</body></html>"),
    ]
    start = time.perf_counter()
    docs, removed, result = extract_one(
        write_warc(tmp_path / "t.warc.gz", pages), tmp_path, timeout_seconds=0.5
    )
    assert time.perf_counter() - start < 10  # the 30 s page was cut short
    assert [d["text"] for d in docs] == ["text of http://a.test/1", "text of http://a.test/2"]
    assert [(r["url"], r["reason"]) for r in removed] == [
        ("http://a.test/hang", "extract_timeout"),
        ("http://a.test/crash", "extract_error"),
    ]
    assert result.extra["sandbox_restarts"] == 2


def echo_or_fail(x: str):
    if x == "sleep":
        time.sleep(30)
    if x == "raise":
        raise ValueError("bad page")
    return x.upper(), os.getpid()


def test_sandbox_errors_and_restart():
    with Sandbox(echo_or_fail, timeout=0.5) as sandbox:
        value, child = sandbox("a")
        assert value == "A" and child != os.getpid() and sandbox.mode == "process"
        with pytest.raises(SandboxError, match="ValueError: bad page"):
            sandbox("raise")
        assert sandbox("b")[1] == child  # an exception does not cost the child
        with pytest.raises(SandboxTimeout):
            sandbox("sleep")
        value, new_child = sandbox("c")
        assert value == "C" and new_child != child and sandbox.restarts == 1


def _timeout_inside_daemon(_: int) -> tuple[str | None, str]:
    sandbox = Sandbox(echo_or_fail, timeout=0.3)
    first = sandbox("a")[0]
    try:
        sandbox("sleep")
    except SandboxTimeout:
        return sandbox.mode, first
    return sandbox.mode, "no timeout"


def test_sandbox_falls_back_to_sigalrm_in_a_daemonic_worker():
    # multiprocessing.Pool workers are daemonic and may not start children of their own.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.map(_timeout_inside_daemon, [0]) == [("alarm", "A")]
