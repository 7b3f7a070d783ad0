"""Crawl, extract and documents ingest through `store.fs.Folder` (issue 11): inputs and outputs
in a `memory://` folder give the same bytes as local folders, and shard tasks travel as
locations only (what a Dask worker on another machine receives)."""

from __future__ import annotations

import pickle
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.crawl.crawler import crawl
from pipeline.errors import DataError
from pipeline.extract.extractor import ExtractConfig, run
from pipeline.extract.sources import DocumentsConfig, IngestTask, ingest, list_source_files
from pipeline.extract.warc import WarcFile, iter_responses, list_warc_files, warc_files_in
from pipeline.store.fs import Folder
from tests.pipeline.fault_server import local, page, serve_sites
from tests.pipeline.test_extract import ARTICLE, OWN_PAGES, write_warc
from tests.pipeline.test_sources import articles, dolma_jsonl_gz, fineweb_parquet, plain_jsonl

serve = pytest.fixture(serve_sites, name="serve")


@pytest.fixture
def memory() -> Iterator[Folder]:
    """A fresh folder in fsspec's in-process memory filesystem, emptied afterwards."""
    folder = Folder(f"memory://llmforge-test-{uuid.uuid4().hex}")
    yield folder
    folder.remove()


def contents(folder: Folder) -> dict[str, bytes]:
    return {name: folder.read_bytes(name) for name in folder.list()}


def as_worker(sent: list[bytes]) -> Callable[..., list[Any]]:
    """A ParallelMap that pickles each task, as Dask does to send it to another machine, and
    runs the copy; the pickles are kept in `sent` for inspection."""

    def pmap(fn: Callable[[Any], Any], items: Sequence[Any], name: str = "") -> list[Any]:
        blobs = [pickle.dumps(item) for item in items]
        sent.extend(blobs)
        return [fn(pickle.loads(blob)) for blob in blobs]

    return pmap


def no_local_path(blob: bytes, *paths: Path | str) -> bool:
    return not any(str(path).encode() in blob for path in paths)


def comparable(result: Any) -> dict[str, Any]:
    """A StageResult without its timings."""
    timing = {"seconds", "pages_per_s"}
    return {
        "docs_in": result.docs_in,
        "docs_out": result.docs_out,
        "drops": result.drops,
        "extra": {k: v for k, v in result.extra.items() if k not in timing},
    }


def test_extract_from_and_into_memory_is_byte_identical_to_local(tmp_path, memory):
    warcs = tmp_path / "warc"
    warcs.mkdir()
    # b repeats two URLs of a: the cross-shard pass rewrites b's shards, through the Folder too.
    names = [
        write_warc(warcs / "a.warc.gz", OWN_PAGES).name,
        write_warc(warcs / "b.warc.gz", OWN_PAGES[5:6] + OWN_PAGES[:1]).name,
    ]
    for name in names:
        memory.write_bytes(f"warc/{name}", (warcs / name).read_bytes())
    config = ExtractConfig()

    # source_warc records the name given, so both runs can be compared byte for byte.
    here = run(config, [WarcFile(Folder(warcs), n, n) for n in names], tmp_path / "out")
    sent: list[bytes] = []
    there = run(
        config, [WarcFile(memory / "warc", n, n) for n in names], memory / "out", as_worker(sent)
    )

    expected = contents(Folder(tmp_path / "out"))
    assert sorted(expected) == [
        f"{d}/part-0000{i}.parquet" for d in ("data", "removed") for i in (0, 1)
    ]
    assert contents(memory / "out") == expected
    assert (
        comparable(there) == comparable(here) and there.extra["duplicate_urls_across_shards"] == 2
    )

    # What each worker got: the WARC's and the output's URLs and a shard name, no local path.
    assert len(sent) == 2
    tasks = [pickle.loads(blob) for blob in sent]
    assert [task.shard for task in tasks] == ["part-00000.parquet", "part-00001.parquet"]
    assert all(task.out == memory / "out" for task in tasks)
    assert all(no_local_path(blob, tmp_path, tempfile.gettempdir()) for blob in sent)


def test_remote_warc_files_are_listed_read_and_recorded_by_url(tmp_path, memory):
    warc = write_warc(tmp_path / "own.warc.gz", OWN_PAGES[:1])
    memory.write_bytes("crawl/warc/own.warc.gz", warc.read_bytes())
    memory.write_bytes("crawl/warc/notes.txt", b"")
    url = memory.url_of("crawl/warc/own.warc.gz")
    assert list_warc_files(memory / "crawl") == [url]
    assert list_warc_files(url) == list_warc_files(memory / "crawl/warc/own.warc.gz") == [url]
    [response] = iter_responses(url, Counter())
    assert response.url == "http://a.test/clocks"

    run(ExtractConfig(), [url], memory / "out")
    doc = pq.read_table(pa.BufferReader(memory.read_bytes("out/data/part-00000.parquet")))
    assert doc["source_warc"].to_pylist() == [url]
    assert all(p in doc["text"][0].as_py() for p in ARTICLE)

    memory.write_bytes("bad/cut.warc.gz", warc.read_bytes()[:-30])
    with pytest.raises(DataError) as info:
        run(ExtractConfig(), [memory.url_of("bad/cut.warc.gz")], memory / "bad-out")
    assert str(info.value).startswith(memory.url_of("bad/cut.warc.gz") + ": ")
    assert (memory / "bad-out").list() == []  # nothing half-written
    with pytest.raises(DataError, match=f"{memory.url_of('nope')}: no such file"):
        list_warc_files(memory.url_of("nope"))


def test_ingest_from_and_into_memory_is_byte_identical_to_local(tmp_path, memory):
    docs = tmp_path / "docs"
    fineweb_parquet(docs / "fineweb", articles(3))
    dolma_jsonl_gz(docs / "dolma.jsonl.gz", articles(4, seed=1))
    plain_jsonl(docs / "sub" / "plain.jsonl", ["one line", None, "two lines"])
    (docs / "_SUCCESS").write_text("")  # a marker file, skipped in folders
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        memory.write_bytes(f"docs/{path.relative_to(docs).as_posix()}", path.read_bytes())

    here_files = list_source_files([str(docs)])
    there_files = list_source_files([(memory / "docs").url])
    assert there_files == [
        memory.url_of(f"docs/{p.relative_to(docs).as_posix()}") for p in here_files
    ]
    assert list_source_files([memory.url_of("docs/*.jsonl.gz")]) == there_files[:1]
    assert list_source_files([memory.url_of("docs/**/*.jsonl")]) == there_files[-1:]

    config = DocumentsConfig(shard_bytes=4000, detect_language=False)  # several shards
    here = ingest(config, here_files, tmp_path / "out")
    sent: list[bytes] = []
    there = ingest(config, there_files, memory / "out", as_worker(sent))

    expected = contents(Folder(tmp_path / "out"))
    assert len(expected) > 4 and contents(memory / "out") == expected  # no .ingest left either
    assert comparable(there) == comparable(here) and there.drops == {"source_no_text": 1}
    tasks: list[IngestTask] = [pickle.loads(blob) for blob in sent]
    assert [f for t in tasks for f in t.files] == there_files and len(tasks) == 2
    assert all(no_local_path(blob, tmp_path, tempfile.gettempdir()) for blob in sent)

    with pytest.raises(DataError, match=f"{memory.url_of('docs/none')}: no such file"):
        list_source_files([memory.url_of("docs/none")])
    memory.write_bytes("bad/x.parquet", b"PAR1 garbage")
    with pytest.raises(DataError, match=f"{memory.url_of('bad/x.parquet')}: not a readable"):
        ingest(config, [memory.url_of("bad/x.parquet")], memory / "bad-out")


def test_crawl_into_memory_writes_what_a_local_crawl_writes(serve, tmp_path, memory):
    site = serve({"/": page("/p1", "/p2", "/p3"), **{p: page() for p in ("/p1", "/p2", "/p3")}})
    # One fetch at a time: pages reach the WARC files in the same order in both crawls.
    config = local(site, records_per_warc=2, delay_seconds=0, per_host_concurrency=1)
    here = crawl(config, tmp_path / "crawl")
    there = crawl(config, memory / "crawl")

    files = ["index/part-00000.parquet", "warc/crawl-00000.warc.gz", "warc/crawl-00001.warc.gz"]
    assert (memory / "crawl").list() == files == Folder(tmp_path / "crawl").list()
    assert there.extra["warc_files"] == here.extra["warc_files"] == files[1:]

    def index(folder: Folder) -> list[dict]:
        """The index rows less what differs between two crawls (times, record ids: offsets)."""
        rows = pq.read_table(pa.BufferReader(folder.read_bytes(files[0]))).to_pylist()
        timing = ("fetched_at", "elapsed_ms", "offset")
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    def records(folder: Folder, name: str) -> list[tuple[str, str | None, bytes]]:
        with folder.open(name, "rb") as f:
            return [
                (r.rec_type, r.rec_headers.get_header("WARC-Target-URI"), r.content_stream().read())
                for r in ArchiveIterator(f)
                if r.rec_type != "warcinfo"
            ]

    assert index(memory / "crawl") == index(Folder(tmp_path / "crawl"))
    for name in files[1:]:
        assert records(memory / "crawl", name) == records(Folder(tmp_path / "crawl"), name)
    rows = pq.read_table(pa.BufferReader((memory / "crawl").read_bytes(files[0]))).to_pylist()
    for row in (r for r in rows if r["warc_file"]):  # offsets hold in the uploaded files
        with (memory / "crawl").open(row["warc_file"], "rb") as f:
            f.seek(row["offset"])
            assert next(iter(ArchiveIterator(f))).rec_headers["WARC-Target-URI"] == row["url"]

    # A crawl version is extract's input as it is; named relative to the store, its documents
    # are the same bytes under a local and a remote root.
    for root in (Folder(tmp_path), memory):
        warcs = warc_files_in(root / "crawl" / "warc", "crawl/warc")
        assert [w.label for w in warcs] == [f"crawl/{name}" for name in files[1:]]
        assert run(ExtractConfig(), warcs, root / "extract").docs_in == 4
    docs = [
        pq.read_table(pa.BufferReader(root.read_bytes("extract/data/part-00000.parquet")))
        for root in (Folder(tmp_path), memory)
    ]
    differ = ["fetched_at", "source_offset"]  # fetch times, and record ids' gzip sizes
    assert docs[0].num_rows == 2 and docs[0].drop(differ) == docs[1].drop(differ)
    assert docs[0]["source_warc"].to_pylist() == ["crawl/warc/crawl-00000.warc.gz"] * 2


def test_failed_crawl_publishes_no_warc_file(serve, tmp_path, memory):
    site = serve({"/": page("/p1"), "/p1": page()})

    def fail(stored: int, seen: int) -> None:
        raise RuntimeError("stop")

    for out in (tmp_path / "crawl", memory / "crawl"):
        with pytest.raises(RuntimeError, match="stop"):
            crawl(local(site, delay_seconds=0), out, on_progress=fail)
        assert Folder(out).list() == []
    assert list((tmp_path / "crawl").rglob("*.tmp")) == []


def test_user_sources_in_the_store_enter_the_id_as_local_copies_do(tmp_path, memory):
    """source.kind "warc" and "documents" read files that live in the store (a cluster's
    workers reach them by URL) and fingerprint them by content: the same files give the same
    version inputs as local copies."""
    from pipeline import stages
    from pipeline.config import load_config

    warc = write_warc(tmp_path / "a.warc.gz", [("https://example.com/a", 200, "text/html", b"x")])
    memory.put(warc, "warcs/a.warc.gz")
    parquet = fineweb_parquet(tmp_path / "docs", articles(3))
    memory.put(parquet, f"docs/{parquet.name}")

    def inputs(**sources: Any) -> list[dict[str, str]]:
        overrides = [f"source.{key}={value!r}" for key, value in sources.items()]
        return stages.resolve_source("extract", load_config(None, overrides), None)[1]

    local_warc = inputs(kind="warc", warc_paths=[str(tmp_path)])
    assert inputs(kind="warc", warc_paths=[memory.url_of("warcs")]) == local_warc
    local_docs = inputs(kind="documents", paths=[str(tmp_path / "docs")])
    assert inputs(kind="documents", paths=[memory.url_of("docs")]) == local_docs
    with pytest.raises(DataError, match=r"memory://.*missing.warc.gz"):
        inputs(kind="warc", warc_paths=[memory.url_of("missing.warc.gz")])
