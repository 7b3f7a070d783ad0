"""Extract stage: WARC response records in, main-content text documents out.

Each WARC file becomes one shard: trafilatura extracts the main text (as FineWeb did, with
datatrove's settings), py3langid labels its language, and every response that yields no
document lands in `removed/` with an `extract_*` reason. Extraction runs in a sandbox child
process with a per-page timeout (`sandbox.py`), so one pathological page cannot stall a
worker; a page is read only up to `max_html_bytes` (pipeline/extract/warc.py reads WARC bodies
incrementally), so a decompression bomb ends as `extract_too_large`, not in memory. A final
pass keeps each URL once across shards. A shard's text depends on that shard
only (trafilatura's dedup cache starts empty per shard). bench/extract.py measures quality and
speed against a bare trafilatura loop.

WARC files and the output folder may be URLs: a shard task carries the WARC file's location,
the output `Folder` and its shard name, reads and writes through them, and so runs on any
worker that can reach the store; the driver only dedups URLs across the finished shards.

    from pipeline.extract.extractor import ExtractConfig, run
    from pipeline.extract.warc import list_warc_files
    result = run(ExtractConfig(), list_warc_files("crawl/"), Path("out.tmp"))
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import trafilatura
from pydantic import BaseModel, ConfigDict, Field
from trafilatura.deduplication import LRU_TEST
from trafilatura.metadata import extract_title

from pipeline.documents import (
    DOCUMENT_SCHEMA,
    REMOVED_SCHEMA,
    ShardWriter,
    atomic_write_table,
    doc_id,
    read_table,
    removed_row,
    shard_name,
)
from pipeline.errors import DataError
from pipeline.extract.sandbox import Sandbox, SandboxError, SandboxTimeout
from pipeline.extract.warc import WarcFile, WarcInput, decode_html, is_html, iter_responses
from pipeline.langid import detect_language
from pipeline.stage import ParallelMap, ShardResult, StageResult, serial_map
from pipeline.store.fs import Folder, as_folder

log = logging.getLogger(__name__)

STAGE = "extract"
HTTP_SCHEMES = ("http://", "https://")
# Docs labelled together, while the child extracts a page: ~16 x 0.4 ms, within one page's ~17 ms.
_LANGID_BATCH = 16


class ExtractConfig(BaseModel):
    """trafilatura settings as FineWeb used them (REFERENCE.md): datatrove's
    `pipeline/extractors/trafilatura.py` (favour_precision=True, deduplicate=True,
    include_comments=False) and `extractors/base.py` (1 s per page, in a sandbox process).
    """

    model_config = ConfigDict(extra="forbid")

    favor_precision: bool = True  # datatrove Trafilatura default, FineWeb kept it
    include_comments: bool = False  # datatrove passes include_comments=False
    deduplicate: bool = True  # datatrove default: drop segments repeated across a shard's pages
    include_tables: bool = True  # trafilatura's default; datatrove/FineWeb do not change it
    timeout_seconds: float = Field(1.0, gt=0)  # datatrove BaseExtractor timeout, per page
    min_text_chars: int = Field(1, ge=0)  # shorter (stripped) text -> extract_no_text
    # Decoded bodies (after Content-Encoding) beyond this many bytes -> extract_too_large, read
    # only this far. Real pages are far smaller: the largest HTML response in the shared sample
    # WARCs (Common Crawl, Dolma, warcio, jwarc) is 198 KiB, the median 23 KiB; Common Crawl cuts
    # payloads at 1 MiB (0.69% of its HTML pages, CC-MAIN-2019-47, commoncrawl/cc-notebooks) and
    # plans 5 MiB; the crawl keeps 5 MB (crawl.max_response_bytes), so every page it stores fits.
    max_html_bytes: int = Field(5 * 1024 * 1024, gt=0)
    # Language ID reads the first N characters (None: all). py3langid walks text byte by byte in
    # Python: whole texts cost ~23% of trafilatura's CPU time, 1000 characters ~2% (bench/
    # extract.py, 990 pages); the label held on 985 of 988, the FineWeb en >= 0.65 decision
    # changed on 3 whose opening differs from the rest (PHP warnings, inline script).
    langid_max_chars: int | None = Field(1000, gt=0)


def trafilatura_options(config: ExtractConfig) -> dict[str, bool]:
    """The keyword arguments of `trafilatura.extract` this config sets (bench/extract.py runs
    bare trafilatura with the same ones)."""
    return {
        "favor_precision": config.favor_precision,
        "include_comments": config.include_comments,
        "include_tables": config.include_tables,
        "deduplicate": config.deduplicate,
    }


def extract_html(
    html: str, url: str | None, config: ExtractConfig
) -> tuple[str | None, str | None]:
    """(title, text) of one page; text is trafilatura's plain-text output, one paragraph a line.

    Runs inside the sandbox child, looked up there at call time (tests swap in a slow one). The
    tree is parsed once and shared by both calls.
    """
    tree = trafilatura.load_html(html)
    if tree is None:
        return None, None
    title = extract_title(tree) or None
    text = trafilatura.extract(tree, url=url, **trafilatura_options(config))
    return title, text


def _extract_body(
    body: bytes, content_type: str | None, url: str, config: ExtractConfig
) -> tuple[str | None, str | None]:
    """Decode then extract, in the sandbox child: the pipe carries bytes (a str would be encoded
    to UTF-8 to be pickled, then decoded again)."""
    return extract_html(decode_html(body, content_type), url, config)


@dataclass(frozen=True)
class ExtractTask:
    """One unit of work: a WARC file into `out/data/<shard>` and `out/removed/<shard>`. It holds
    locations only (a Folder pickles as its URL), so any worker that reaches the store runs it."""

    warc: WarcInput
    out: Folder
    shard: str  # part-NNNNN.parquet
    config: ExtractConfig

    @property
    def data(self) -> str:
        return f"data/{self.shard}"

    @property
    def removed(self) -> str:
        return f"removed/{self.shard}"


def _base_doc(response: Any, source: str) -> dict[str, Any]:
    try:
        host = urlsplit(response.url).hostname  # lowercase, without port or credentials
    except ValueError:  # "http://[::1/": an unclosed IPv6 bracket (found by test_properties.py)
        host = None
    return {
        "id": doc_id(response.url),
        "url": response.url,
        "domain": host or None,
        "title": None,
        "text": None,
        "language": None,
        "language_score": None,
        "fetched_at": response.fetched_at,
        "source_warc": source,
        "source_offset": response.offset,
    }


def _skip_reason(response: Any, config: ExtractConfig, kept: set[str], doc: dict) -> str | None:
    """Why a response is not worth extracting, checked cheapest first (reasons.py says what
    each reason means)."""
    if not response.url.lower().startswith(HTTP_SCHEMES):  # dns:, ftp:, urn:, ... records
        return "extract_not_http"
    if response.status != 200:
        return "extract_http_status"
    if not is_html(response.content_type, response.body):
        return "extract_not_html"
    if response.truncated:  # longer than config.max_html_bytes: only that much was read
        return "extract_too_large"
    if doc["id"] in kept:
        return "extract_duplicate_url"
    return None


def extract_shard(task: ExtractTask) -> ShardResult:
    """Extract one WARC file into its data and removed shards (both written only at the end)."""
    config, warc = task.config, WarcFile.of(task.warc)
    result = ShardResult(shard=task.shard)
    stats: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    kept: set[str] = set()
    unlabelled: list[dict[str, Any]] = []  # extracted docs waiting for language ID
    extractor = functools.partial(_extract_body, config=config)
    # deduplicate=True drops segments seen > 2 times in this process (an LRU cache, inherited by
    # the sandbox child): empty it, so shard i's text depends on shard i alone.
    LRU_TEST.clear()
    start = time.perf_counter()
    with (
        task.out.output(task.data) as data_path,  # published once written, dropped on an error
        task.out.output(task.removed) as removed_path,
        Sandbox(extractor, config.timeout_seconds) as sandbox,
        ShardWriter(data_path, DOCUMENT_SCHEMA) as data,
        ShardWriter(removed_path, REMOVED_SCHEMA) as removed,
    ):

        def finish(doc: dict[str, Any], reason: str | None) -> None:
            if reason is None:
                unlabelled.append(doc)
                kept.add(doc["id"])
            else:
                dup = doc["id"] if reason == "extract_duplicate_url" else None
                removed.write(removed_row(doc, reason, STAGE, duplicate_of=dup))
                drops[reason] += 1

        # The parent reads the next record and labels languages while the child extracts.
        in_sandbox: dict[str, Any] | None = None  # the doc whose page the child is extracting
        for response in iter_responses(warc, stats, config.max_html_bytes):
            result.docs_in += 1
            stats["html_bytes"] += len(response.body)
            if in_sandbox is not None:
                finish(in_sandbox, _take_text(in_sandbox, sandbox, config))
                in_sandbox = None
            doc = _base_doc(response, warc.label)
            reason = _skip_reason(response, config, kept, doc)
            if reason is not None:
                finish(doc, reason)
                continue
            sandbox.submit(response.body, response.content_type, response.url)
            in_sandbox = doc
            if len(unlabelled) >= _LANGID_BATCH:
                _label_and_write(unlabelled, data, config)
        if in_sandbox is not None:
            finish(in_sandbox, _take_text(in_sandbox, sandbox, config))
        _label_and_write(unlabelled, data, config)
        result.extra["sandbox_mode"] = sandbox.mode or "unused"
        result.extra["sandbox_restarts"] = sandbox.restarts
    seconds = time.perf_counter() - start
    result.docs_out = data.rows
    result.drops = dict(sorted(drops.items()))
    result.extra.update(_record_counts(stats), seconds=round(seconds, 3))
    log.info(
        "extract %s: %d responses -> %d docs in %.1f s %s",
        *(warc.url, result.docs_in, result.docs_out, seconds, result.drops),
    )
    return result


def _take_text(doc: dict, sandbox: Sandbox, config: ExtractConfig) -> str | None:
    """Fill title/text of `doc` from the sandbox; a removal reason when there is no usable text."""
    try:
        title, text = sandbox.result()
    except SandboxTimeout:
        log.debug("extract timeout: %s", doc["url"])
        return "extract_timeout"
    except SandboxError as exc:
        log.debug("extract error: %s: %s", doc["url"], exc)
        return "extract_error"
    doc["title"] = title
    if text is None or len(text.strip()) < config.min_text_chars:
        return "extract_no_text"
    doc["text"] = text
    return None


def _label_and_write(docs: list[dict[str, Any]], data: ShardWriter, config: ExtractConfig) -> None:
    """Language ID for a batch of docs, then write them (in order) and empty the batch.

    A few at a time: py3langid's tables then stay in the CPU cache (one page at a time, with
    trafilatura and WARC reading in between, cost twice the CPU time here).
    """
    for doc in docs:
        text = doc["text"][: config.langid_max_chars]
        doc["language"], doc["language_score"] = detect_language(text)
        data.write(doc)
    docs.clear()


def _record_counts(stats: Counter[str]) -> dict[str, Any]:
    return {
        "records": stats["records"],
        "response_records": stats["records_response"],
        "skipped_records": {
            key.removeprefix("records_"): n
            for key, n in sorted(stats.items())
            if key.startswith("records_") and key != "records_response"
        },
        "html_bytes": stats["html_bytes"],
    }


def run(
    config: ExtractConfig,
    warc_files: list[WarcInput],
    out: Folder | Path | str,
    pmap: ParallelMap = serial_map,
) -> StageResult:
    """Extract every WARC file (shard i = file i), then keep each URL once across shards.

    `warc_files`: local paths, URLs or `WarcFile`s; `out`: a folder or URL."""
    if not warc_files:
        raise DataError("extract: no WARC files given")
    out = as_folder(out)
    tasks = [
        ExtractTask(WarcFile.of(warc), out, shard_name(i), config)
        for i, warc in enumerate(warc_files)
    ]
    start = time.perf_counter()
    results = pmap(extract_shard, tasks, STAGE)
    moved = dedup_urls_across_shards(tasks, results)
    seconds = time.perf_counter() - start

    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r.extra["skipped_records"])
    responses = sum(r.extra["response_records"] for r in results)
    extra = {
        "records": sum(r.extra["records"] for r in results),
        "response_records": responses,
        "skipped_records": dict(sorted(skipped.items())),
        "html_bytes": sum(r.extra["html_bytes"] for r in results),
        "duplicate_urls_across_shards": moved,
        "sandbox_restarts": sum(r.extra["sandbox_restarts"] for r in results),
        "seconds": round(seconds, 3),
        "pages_per_s": round(responses / seconds, 2) if seconds > 0 else None,
    }
    return StageResult.from_shards(results, extra)


def dedup_urls_across_shards(tasks: list[ExtractTask], results: list[ShardResult]) -> int:
    """Keep each id (= URL) in the lowest-index shard only; move the others to removed.

    Shards are internally unique already, so only the id columns are read; shards holding a
    duplicate are rewritten (rare: the same URL fetched in two WARC files). Returns rows moved.
    """
    ids = [_read(t.out, t.data, columns=["id"]).column("id") for t in tasks]
    if sum(len(c) for c in ids) == 0:
        return 0
    shard = np.concatenate([np.full(len(c), i, dtype=np.int32) for i, c in enumerate(ids)])
    table = pa.table(
        {"id": pa.chunked_array(ids, type=pa.string()).combine_chunks(), "shard": shard}
    )
    groups = table.group_by("id").aggregate([("shard", "min"), ("shard", "count")])
    groups = groups.filter(pc.greater(groups["shard_count"], 1))
    first = dict(zip(groups["id"].to_pylist(), groups["shard_min"].to_pylist(), strict=True))
    moved = 0
    for i, (task, result) in enumerate(zip(tasks, results, strict=True)):
        later = pa.array([doc for doc, shard in first.items() if shard < i], pa.string())
        if len(later) == 0 or not pc.any(pc.is_in(ids[i], later)).as_py():
            continue
        data = _read(task.out, task.data)
        dup = pc.is_in(data["id"], later)
        rows = [
            removed_row(d, "extract_duplicate_url", STAGE, duplicate_of=d["id"])
            for d in data.filter(dup).to_pylist()
        ]
        removed = _read(task.out, task.removed)  # Parquet keeps timestamps in ms: reuse schema
        removed = pa.concat_tables([removed, pa.Table.from_pylist(rows, schema=removed.schema)])
        with task.out.output(task.data) as path:
            atomic_write_table(data.filter(pc.invert(dup)), path)
        with task.out.output(task.removed) as path:
            atomic_write_table(removed, path)
        result.docs_out -= len(rows)
        drops = Counter(result.drops) + Counter(extract_duplicate_url=len(rows))
        result.drops = dict(sorted(drops.items()))
        moved += len(rows)
    return moved


def _read(folder: Folder, name: str, columns: list[str] | None = None) -> pa.Table:
    """A shard as a table: only the footer and the columns asked for are read, so the driver's
    dedup pass fetches the id columns, not the shards."""
    return read_table(folder.url_of(name), columns=columns)
