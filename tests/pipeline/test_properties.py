"""Property-based tests (hypothesis): extract and the filters take arbitrary input, never crash
and never hang.

Deterministic (derandomize, no example database) and bounded: each test has a fixed number of
examples and a deadline per example, ~20 s for the module on 2 cores.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.extract.extractor import ExtractConfig, ExtractTask, _extract_body, extract_shard
from pipeline.extract.sandbox import Sandbox, SandboxTimeout
from pipeline.extract.warc import decode_html, inflate, is_html, iter_responses, read_capped
from pipeline.filters import FilterConfig, build_filters
from pipeline.store.fs import Folder

CONFIG = ExtractConfig()


def bounded(max_examples: int, deadline_ms: int | None = 2000):
    return settings(
        max_examples=max_examples,
        deadline=deadline_ms,
        derandomize=True,  # the same examples every run: CI is deterministic
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# --- inputs ---------------------------------------------------------------------------------

CHARSETS = ["utf-8", "latin1", "utf-16", "shift_jis", "koi8-r", "x-nonsense", "", "utf-8'"]
content_types = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(["text/html", "application/xhtml+xml", "text/plain"]).flatmap(
        lambda mime: st.sampled_from(CHARSETS).map(lambda cs: f"{mime}; charset={cs}")
    ),
)
TAGS = ["div", "p", "span", "table", "tr", "td", "li", "ul", "b", "a", "article", "main"]


@st.composite
def html_bytes(draw) -> bytes:
    """Byte soups, tag soups, broken encodings and deeply nested tags."""
    kind = draw(st.sampled_from(["bytes", "text", "nested", "soup", "bom"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "text":
        return draw(st.text(max_size=2000)).encode("utf-8", "surrogatepass")
    if kind == "nested":
        tag, depth = draw(st.sampled_from(TAGS)), draw(st.integers(0, 3000))
        inner = draw(st.text(max_size=200))
        return f"<html><body>{f'<{tag}>' * depth}{inner}{f'</{tag}>' * depth}".encode(
            "utf-8", "surrogatepass"
        )
    if kind == "soup":
        parts = st.one_of(
            st.sampled_from(TAGS).map(lambda t: f"<{t}>"),
            st.sampled_from(TAGS).map(lambda t: f"</{t}>"),
            st.sampled_from(["<!--", "-->", "<![CDATA[", "]]>", "<script>", "&#0;", "&#xD800;"]),
            st.text(max_size=30),
        )
        return "".join(draw(st.lists(parts, max_size=80))).encode("utf-8", "surrogatepass")
    bom = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
    return bom + draw(st.binary(max_size=500))


urls = st.one_of(
    st.text(min_size=1, max_size=60),
    st.builds(lambda host, path: f"http://{host}/{path}", st.text(max_size=20), st.text()),
    st.sampled_from(["http://[::1/", "http://[zz]/", "http://a.test:99999/", "http://%zz/"]),
)


# --- extract --------------------------------------------------------------------------------


@bounded(200)
@given(body=html_bytes(), content_type=content_types)
def test_decode_and_sniff_take_any_bytes(body, content_type):
    text = decode_html(body, content_type)
    assert isinstance(text, str)
    assert isinstance(is_html(content_type, body), bool)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(_extract_body, CONFIG.timeout_seconds) as box:
        yield box


@bounded(150, deadline_ms=None)  # the sandbox's own timeout is the bound checked
@given(body=html_bytes(), content_type=content_types, url=urls)
def test_html_to_text_never_crashes_or_outlives_its_timeout(sandbox, body, content_type, url):
    """What the extract child runs for every page: decode, parse, extract."""
    start = time.monotonic()
    try:
        title, text = sandbox(body, content_type, url, CONFIG)
    except SandboxTimeout:
        title = text = None
    assert time.monotonic() - start < CONFIG.timeout_seconds + 2.0
    assert title is None or isinstance(title, str)
    assert text is None or isinstance(text, str)


@bounded(25, deadline_ms=None)
@given(
    pages=st.lists(
        st.tuples(urls, st.integers(100, 599), content_types, html_bytes()),
        min_size=1,
        max_size=4,
    )
)
def test_extract_shard_takes_any_record(tmp_path_factory, pages):
    """Every response comes out as a document or a removed row; nothing raises."""
    tmp = tmp_path_factory.mktemp("shard")
    warc = tmp / "any.warc.gz"
    with open(warc, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, status, content_type, body in pages:
            headers = [("Content-Type", content_type)] if content_type is not None else []
            http = StatusAndHeaders(f"{status} X", headers, protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), http_headers=http
                )
            )
    task = ExtractTask(warc, Folder(tmp), "d.parquet", CONFIG)
    result = extract_shard(task)
    rows = pq.read_table(tmp / task.data).num_rows + pq.read_table(tmp / task.removed).num_rows
    assert result.docs_in == len(list(iter_responses(warc, Counter()))) == rows


@bounded(100)
@given(
    data=st.binary(max_size=2000),
    encoding=st.sampled_from(["gzip", "x-gzip", "deflate"]),
    cut=st.integers(1, 50),
)
def test_inflate_takes_any_bytes(data, encoding, cut):
    blocks = [data[i : i + cut] for i in range(0, len(data), cut)]
    body, _ = read_capped(inflate(blocks, encoding), 10_000)
    assert isinstance(body, bytes) and len(body) <= 10_000


# --- filters --------------------------------------------------------------------------------

FILTERS = build_filters(FilterConfig())

texts = st.one_of(
    st.text(max_size=3000),
    st.lists(st.text(max_size=80), max_size=60).map("\n".join),  # many lines
    st.lists(
        st.sampled_from(["the", "cat", "...", "#", "•", "-", "\n", "\n\n", " "]), max_size=400
    ).map(" ".join),  # few distinct tokens: repetition and symbol ratios at their edges
    st.just(""),
)


@bounded(150, deadline_ms=3000)
@given(
    text=st.one_of(st.none(), texts),
    url=st.one_of(st.none(), urls),
    language=st.one_of(st.none(), st.sampled_from(["en", "fr", "und", ""])),
    score=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_every_filter_takes_any_document(text, url, language, score):
    """Each filter's transform, signals, decide and finish, on its own, as the stage calls them."""
    doc = {
        "id": "x",
        "url": url,
        "domain": None,
        "title": None,
        "text": text,
        "language": language,
        "language_score": score,
    }
    for step in FILTERS:
        out = step.transform(dict(doc))
        signals = step.signals(out)
        assert set(signals) <= set(step.signal_names), step.name
        for name, value in signals.items():
            if name in step.label_signals:
                assert value is None or isinstance(value, str), (step.name, name)
            else:
                assert value is None or isinstance(value, int | float), (step.name, name)
                assert value is None or not math.isnan(value) or score is not None, (
                    step.name,
                    name,
                    value,
                )
        reason = step.decide(signals)
        assert reason is None or (isinstance(reason, str) and reason), step.name
        assert isinstance(step.finish(out), dict)


def test_properties_module_is_wired():
    """The filters under test are the pipeline's (a rename must not leave this module empty)."""
    assert {f.name for f in FILTERS} >= {"gopher_quality", "gopher_repetition", "c4", "fineweb"}
