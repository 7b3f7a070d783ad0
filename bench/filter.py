"""Filter bench: docs/s of our filter stage against datatrove's filters, on the same documents.

    python bench/filter.py                  # all 990 trafilatura pages + dolma's 20, 3 repeats
    python bench/filter.py --pages 300 --repeats 5
    python bench/filter.py --texts docs.jsonl  # your own {id, url, text} lines (+ dolma's 20)

Documents: trafilatura's evaluation pages (../shared/data/extraction-trafilatura) as our
extract stage extracts them (not timed), plus the 20 CCNet documents of dolma's `cc_en_head`
test files; all written to one Parquet shard. Then, interleaved per repeat:
  llmforge   `pipeline.filters.filter_shard` with Gopher repetition, Gopher quality, C4 and
             FineWeb enabled (URL, language and PII off): Parquet in, data/removed/attributes
             out, every filter measuring every document (the attributes need it)
  datatrove  datatrove 0.10.1's GopherRepetitionFilter, GopherQualityFilter,
             C4QualityFilter(filter_no_terminal_punct=False) and FineWebQualityFilter chained
             as a pipeline (`run` generators) over the same shard's documents, read the same way
Both keep process-wide caches (our split chunks, spaCy's tokenizer cache), so repeat 0 is cold
and later ones warm. One JSON line per measurement, then a summary with the speed ratio
(llmforge docs/s / datatrove docs/s) of the first repeat and of the medians, and per repeat by
CPU time (less disturbed than wall-clock rates when other jobs share the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pipeline.documents import DOCUMENT_SCHEMA, ShardWriter, doc_id, iter_documents  # noqa: E402
from pipeline.filters import FilterConfig, FilterTask, filter_shard  # noqa: E402

SHARED = Path(os.environ.get("LLMFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DOLMA = SHARED / "data" / "text" / "dolma-cc_en_head"
# The four filters datatrove is compared on, at their (shared) defaults.
CONFIG = FilterConfig.model_validate(
    {"url": {"enabled": False}, "language": {"enabled": False}, "pii": {"enabled": False}}
)


def trafilatura_texts(pages: int | None = None) -> list[dict[str, str]]:
    """The evaluation pages through our extract stage: [{id, url, text}] in page order."""
    from bench.extract import load_pages, write_warc
    from pipeline.documents import list_shards, read_table
    from pipeline.extract.extractor import ExtractConfig, run
    from pipeline.stage import serial_map

    with tempfile.TemporaryDirectory(prefix="bench-filter-extract-") as tmp:
        warc = write_warc(Path(tmp) / "pages.warc.gz", load_pages(limit=pages))
        run(ExtractConfig(), [warc], Path(tmp) / "out", serial_map)
        rows = []
        for shard in list_shards(Path(tmp) / "out" / "data"):
            rows += read_table(shard, columns=["id", "url", "text"]).to_pylist()
    return rows


def dolma_texts(root: Path = DOLMA) -> list[dict[str, str]]:
    """dolma's cc_en_head test documents (CCNet-processed Common Crawl): [{id, url, text}]."""
    rows = []
    for path in sorted(root.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows.append({"id": doc_id(row["id"]), "url": row["id"], "text": row["text"]})
    return rows


def write_documents(path: Path, rows: list[dict[str, str]]) -> Path:
    """One shard of DOCUMENT_SCHEMA rows, as the extract stage writes them."""
    with ShardWriter(path, DOCUMENT_SCHEMA) as writer:
        for row in rows:
            writer.write(
                {
                    "id": row["id"],
                    "url": row["url"],
                    "domain": None,
                    "title": None,
                    "text": row["text"],
                    "language": "en",
                    "language_score": 1.0,
                    "fetched_at": None,
                    "source_warc": None,
                    "source_offset": None,
                }
            )
    return path


def datatrove_filters() -> list:
    """datatrove's four filters with our defaults (FineWeb turned C4's terminal-punctuation
    rule off); the agreement test uses these too."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]


def run_datatrove(shard: Path) -> int:
    """datatrove's four filters as a pipeline over the shard; returns the documents kept."""
    from datatrove.data import Document

    docs = (Document(text=d["text"] or "", id=d["id"]) for d in iter_documents(shard))
    for step in datatrove_filters():
        docs = step.run(docs)
    return sum(1 for _ in docs)


def run_llmforge(shard: Path, out: Path) -> int:
    """Our filter stage on the shard; returns the documents kept."""
    return filter_shard(FilterTask(shard, out, CONFIG)).docs_out


def measure(rows: list[dict[str, str]], repeats: int, emit=lambda row: None) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmp:
        shard = write_documents(Path(tmp) / "part-00000.parquet", rows)
        runs = {
            "llmforge": lambda out: run_llmforge(shard, out),
            "datatrove": lambda out: run_datatrove(shard),
        }
        for repeat in range(repeats):
            for name, fn in runs.items():
                start, cpu = time.perf_counter(), time.process_time()
                kept = fn(Path(tmp) / f"{name}-{repeat}")
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                row = {
                    "run": name,
                    "repeat": repeat,
                    "docs": len(rows),
                    "kept": kept,
                    "seconds": round(seconds, 3),
                    "docs_per_s": round(len(rows) / seconds, 1),
                    "cpu_s": round(cpu, 3),
                }
                results.append(row)
                emit(row)
    return results


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    rate = {
        name: [r["docs_per_s"] for r in results if r["run"] == name]
        for name in ("llmforge", "datatrove")
    }
    median = {name: statistics.median(values) for name, values in rate.items()}
    cpu = {n: [r["cpu_s"] for r in results if r["run"] == n] for n in ("llmforge", "datatrove")}
    # Each repeat runs both back to back: its ratio is the least disturbed by other load.
    paired = [round(b / a, 1) for a, b in zip(cpu["llmforge"], cpu["datatrove"], strict=True)]
    return {
        "summary": "filter",
        "docs": results[0]["docs"],
        "llmforge_median_docs_per_s": median["llmforge"],
        "datatrove_median_docs_per_s": median["datatrove"],
        "ratio_median": round(median["llmforge"] / median["datatrove"], 1),
        "ratio_first_repeat": round(rate["llmforge"][0] / rate["datatrove"][0], 1),
        "cpu_ratio_per_repeat": paired,
        "cpu_ratio_median": statistics.median(paired),
        "same_kept": len({r["kept"] for r in results}) == 1,
        "cpu": platform.processor() or platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None, help="first N pages (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--texts", type=Path, default=None, help="JSONL of {id, url, text} instead of the pages"
    )
    args = parser.parse_args()
    if args.texts:
        lines = args.texts.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines][: args.pages]
    else:
        rows = trafilatura_texts(args.pages)
    rows += dolma_texts()
    results = measure(rows, args.repeats, emit=lambda row: print(json.dumps(row), flush=True))
    summary = summarize(results)
    print(json.dumps(summary))
    print(
        f"llmforge {summary['llmforge_median_docs_per_s']} docs/s, datatrove "
        f"{summary['datatrove_median_docs_per_s']} docs/s: {summary['ratio_median']}x "
        f"(first, cold repeat {summary['ratio_first_repeat']}x) on {summary['docs']} documents; "
        f"by CPU time per repeat {summary['cpu_ratio_per_repeat']}"
    )


if __name__ == "__main__":
    main()
