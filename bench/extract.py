"""Extraction bench: quality and speed of the extract stage against a bare trafilatura loop.

    python bench/extract.py                    # all 990 pages, 1 and 2 workers, 8 shards, 3 repeats
    python bench/extract.py --pages 200 --repeats 1
    python bench/extract.py --shards 2         # big shards: the sandbox start amortizes
    python bench/extract.py --resiliparse      # also resiliparse, where installed

Pages: trafilatura's own evaluation set (../shared/data/extraction-trafilatura, 990 annotated
real pages; each lists segments a good extraction must contain, `with`, and must not, `without`).
They are written as HTTP 200 responses into WARC.gz shards in a temp folder, then extracted in
the same run by:
  bare      `trafilatura.extract(html, url=..., <the stage's settings>)` over the same HTML
            strings the stage decodes (decoded before the clock starts)
  bare-Nw   the bare loop per shard in a pool of N processes: what the shards allow N workers
  stage-1w  `pipeline.extract.run(config, warcs, out, serial_map)`: WARC reading, sandbox child,
            title, language ID and Parquet writing included
  stage-Nw  the same through `process_map(N)`
Rates are pages/s (and MB/s of HTML). Overhead = bare_rate / stage_rate - 1 (stage-1w against
bare, stage-Nw against bare-Nw), also in CPU time; speed-up = N-worker rate / 1-worker rate.
Quality as trafilatura's tests/eval_common.py scores it (whitespace-normalized substrings):
recall = share of `with` segments found, precision = share of `without` segments absent; f1 is
trafilatura's own (its precision being tp / (tp + fp)).

Same text by construction: trafilatura's `deduplicate=True` drops segments it has seen more
than twice in the same process (an LRU cache), so output depends on what ran before. The stage
empties that cache at the start of every shard; the bare loop does the same at the same shard
boundaries, so all runs extract the same pages in the same order and should give the same text
(`same_text` counts the pages whose text equals the bare loop's).

Shards: `--shards` WARC files (default 4 per worker) of near-equal bytes, contiguous in
evaldata order, as a crawler that rolls files by size writes them. Pages differ in cost, so
fewer shards balance worse (bare-Nw shows the ceiling) while each shard costs the stage a
sandbox start (~0.1-0.2 s CPU: a fresh process faulting in its heap). cpu_s is CPU time of
this process and its children: less disturbed than wall-clock rates when other jobs share the
machine. The first stage-1w run also pays one-off per-process costs (py3langid's model,
~0.4-1 s; pyarrow importing pandas, ~0.5 s); stage-Nw workers inherit them already paid.

One JSON line per measurement on stdout, then a summary table (best and median of repeats).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trafilatura
from trafilatura.deduplication import LRU_TEST
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pipeline.documents import list_shards, read_table  # noqa: E402
from pipeline.extract.extractor import ExtractConfig, run, trafilatura_options  # noqa: E402
from pipeline.extract.warc import decode_html  # noqa: E402
from pipeline.stage import ParallelMap, process_map, serial_map  # noqa: E402

SHARED = Path(os.environ.get("LLMFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data" / "extraction-trafilatura" / "tests"
CONTENT_TYPE = "text/html"  # no charset: the stage then reads <meta charset>, else UTF-8


@dataclass(frozen=True)
class Page:
    url: str
    body: bytes  # the page as served
    with_: tuple[str, ...]  # segments a good extraction contains
    without: tuple[str, ...]  # segments it must not contain


def load_pages(root: Path = DATA, limit: int | None = None) -> list[Page]:
    """The annotated pages in evaldata.json order; `cache/` as-is, `eval_gz/` gzipped."""
    items = json.loads((root / "evaldata.json").read_text(encoding="utf-8"))
    pages = []
    for url, item in list(items.items())[:limit]:
        plain, packed = root / "cache" / item["file"], root / "eval_gz" / f"{item['file']}.gz"
        body = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
        if not url.startswith(("http://", "https://")):  # 37 keys are labels ("hard::...")
            url = f"https://evaldata.invalid/{item['file']}"  # warcio reads HTTP for http(s) only
        url = url.replace(" ", "%20")  # one URL has a space: a crawler records it encoded
        pages.append(Page(url, body, tuple(item["with"]), tuple(item["without"])))
    return pages


def split(pages: list[Page], shards: int) -> list[list[Page]]:
    """Contiguous shards of near-equal HTML bytes, as a crawler rolls WARC files by size."""
    total = sum(len(p.body) for p in pages)
    parts: list[list[Page]] = [[] for _ in range(shards)]
    seen = 0
    for page in pages:
        parts[min(shards - 1, seen * shards // max(total, 1))].append(page)
        seen += len(page.body)
    return [part for part in parts if part]


def write_warc(path: Path, pages: list[Page]) -> Path:
    """One WARC.gz of HTTP 200 responses, as a crawler records them."""
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for page in pages:
            headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(page.body)))]
            http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
            record = writer.create_warc_record(
                page.url, "response", payload=io.BytesIO(page.body), http_headers=http
            )
            writer.write_record(record)
    return path


Shards = list[list[tuple[str, str]]]  # (url, decoded HTML) per page, per WARC shard


def decode_shards(parts: list[list[Page]]) -> Shards:
    """The HTML strings the stage extracts: same bytes, same header, same decoder."""
    return [[(p.url, decode_html(p.body, CONTENT_TYPE)) for p in part] for part in parts]


def bare_extract(shards: Shards, config: ExtractConfig) -> dict[str, str | None]:
    """trafilatura alone, with the stage's settings, the dedup cache cleared per shard."""
    texts: dict[str, str | None] = {}
    for shard in shards:
        LRU_TEST.clear()
        for url, html in shard:
            texts[url] = trafilatura.extract(html, url=url, **trafilatura_options(config))
    return texts


def _bare_shard(job: tuple[list[tuple[str, str]], ExtractConfig]) -> dict[str, str | None]:
    return bare_extract([job[0]], job[1])


def bare_parallel(shards: Shards, config: ExtractConfig, workers: int) -> dict[str, str | None]:
    """The bare loop over the shards in a process pool: what the data and the machine allow
    N workers (shards differ in cost), against which stage-Nw is compared. The HTML strings
    travel to the workers pickled, as they would come from somewhere in a real pipeline."""
    texts: dict[str, str | None] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_bare_shard, [(shard, config) for shard in shards]):
            texts.update(part)
    return texts


def resiliparse_extract(shards: Shards, config: ExtractConfig) -> dict[str, str | None]:
    """resiliparse's main-content heuristic (DCLM's extractor), for comparison only."""
    from resiliparse.extract.html2text import extract_plain_text

    return {
        url: extract_plain_text(
            html,
            main_content=True,
            preserve_formatting=True,  # one block a line, like trafilatura's text
            comments=config.include_comments,
            alt_texts=False,  # these two scored best of the variants tried
            list_bullets=False,
        )
        or None
        for shard in shards
        for url, html in shard
    }


def stage_extract(
    config: ExtractConfig, warcs: list[Path], out_dir: Path, pmap: ParallelMap
) -> dict[str, str | None]:
    """The extract stage as a user runs it; pages it removed map to None.

    trafilatura's dedup cache is deliberately left as the bare loop filled it: the stage must
    empty it per shard itself, or its text differs from bare's (`same_text` shows it).
    """
    run(config, warcs, out_dir, pmap)
    texts: dict[str, str | None] = {}
    for shard in list_shards(out_dir / "data"):
        table = read_table(shard, columns=["url", "text"])
        texts.update(zip(table["url"].to_pylist(), table["text"].to_pylist(), strict=True))
    return texts


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()  # as trafilatura's tests/eval_common.py norm()


def score(pages: list[Page], texts: dict[str, str | None]) -> dict[str, float]:
    """Segment recall/precision over all pages; a page without text finds nothing."""
    tp = fp = n_with = n_without = 0
    for page in pages:
        text = _norm(texts.get(page.url) or "")
        tp += sum(_norm(s) in text for s in page.with_)
        fp += sum(_norm(s) in text for s in page.without)
        n_with, n_without = n_with + len(page.with_), n_without + len(page.without)
    return {
        "recall": round(tp / n_with, 4),
        "precision": round(1 - fp / n_without, 4),
        "f1": round(2 * tp / (2 * tp + fp + (n_with - tp)), 4),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (pool workers, sandboxes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(
    pages: list[Page],
    workers: int = 2,
    shards: int | None = None,
    repeats: int = 1,
    config: ExtractConfig | None = None,
    resiliparse: bool = False,
    emit: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    """Run bare, stage-1w and stage-{workers}w (and bare-resiliparse) `repeats` times.

    One row per measurement: run, repeat, pages, shards, seconds, pages_per_s, mb_per_s, cpu_s,
    recall, precision, f1, docs (pages with text), same_text (pages whose text equals bare's).
    """
    config = config or ExtractConfig()
    parts = split(pages, shards or 4 * max(1, workers))
    htmls = decode_shards(parts)
    mb = sum(len(p.body) for p in pages) / 1e6
    pmaps: dict[str, ParallelMap] = {"stage-1w": serial_map}
    if workers > 1:
        pmaps[f"stage-{workers}w"] = process_map(workers)
    n = f"{workers}w"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        warcs = [write_warc(Path(tmp) / f"pages-{i:03d}.warc.gz", p) for i, p in enumerate(parts)]
        runs: dict[str, Callable[[Path], dict[str, str | None]]] = {
            "bare": lambda _: bare_extract(htmls, config)
        }
        if workers > 1:
            runs[f"bare-{n}"] = lambda _: bare_parallel(htmls, config, workers)
        for name, pmap in pmaps.items():
            runs[name] = lambda out, pmap=pmap: stage_extract(config, warcs, out, pmap)
        if resiliparse:
            runs["bare-resiliparse"] = lambda _: resiliparse_extract(htmls, config)
        for repeat in range(repeats):
            bare: dict[str, str | None] = {}
            for name, fn in runs.items():
                out = Path(tmp) / f"{name}-{repeat}"
                start, cpu = time.perf_counter(), _cpu_seconds()
                texts = fn(out)
                seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
                bare = texts if name == "bare" else bare
                row = {
                    "run": name,
                    "repeat": repeat,
                    "pages": len(pages),
                    "shards": len(parts),
                    "seconds": round(seconds, 3),
                    "pages_per_s": round(len(pages) / seconds, 2),
                    "mb_per_s": round(mb / seconds, 2),
                    "cpu_s": round(cpu, 2),
                    **score(pages, texts),
                    "docs": sum(bool(texts.get(p.url)) for p in pages),
                    "same_text": sum(texts.get(p.url) == bare.get(p.url) for p in pages),
                }
                rows.append(row)
                emit(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: best and median pages/s and median CPU seconds; overhead of stage-1w against
    bare and of stage-Nw against bare-Nw (by wall-clock rate, and by CPU time, which other load
    on the machine disturbs less); speed-ups of the N-worker runs against their one-worker run.
    Quality columns come from the first repeat (later ones give the same text)."""
    names = list(dict.fromkeys(r["run"] for r in rows))
    rates = {n: [r["pages_per_s"] for r in rows if r["run"] == n] for n in names}
    best = {n: max(v) for n, v in rates.items()}
    median = {n: statistics.median(v) for n, v in rates.items()}
    cpu = {n: statistics.median(r["cpu_s"] for r in rows if r["run"] == n) for n in names}
    summary = []
    for name in names:
        first = next(r for r in rows if r["run"] == name)
        line = {
            "run": name,
            "best_pages_per_s": best[name],
            "median_pages_per_s": round(median[name], 2),
            "median_cpu_s": round(cpu[name], 2),
            "recall": first["recall"],
            "precision": first["precision"],
            "f1": first["f1"],
            "same_text": f"{first['same_text']}/{first['pages']}",
        }
        workers = name.rsplit("-", 1)[-1]  # "1w", "2w", or a run name without workers
        bare = "bare" if workers == "1w" else f"bare-{workers}"
        if name.startswith("stage") and bare in names:
            line["overhead_best_pct"] = round(100 * (best[bare] / best[name] - 1), 1)
            line["overhead_median_pct"] = round(100 * (median[bare] / median[name] - 1), 1)
            line["cpu_overhead_pct"] = round(100 * (cpu[name] / cpu[bare] - 1), 1)
        one = {"stage": "stage-1w", "bare": "bare"}.get(name.split("-")[0])
        if name.endswith("w") and workers != "1w" and one in names:
            line["speedup_best"] = round(best[name] / best[one], 2)
            line["speedup_median"] = round(median[name] / median[one], 2)
        if name == "bare-resiliparse":
            line["speedup_median"] = round(median[name] / median["bare"], 2)
        summary.append(line)
    return summary


COLUMNS = (
    "run",
    "best_pages_per_s",
    "median_pages_per_s",
    "median_cpu_s",
    "overhead_best_pct",
    "overhead_median_pct",
    "cpu_overhead_pct",
    "speedup_best",
    "speedup_median",
    "recall",
    "precision",
    "f1",
    "same_text",
)


def print_table(summary: list[dict[str, Any]]) -> None:
    columns = [c for c in COLUMNS if any(c in line for line in summary)]
    widths = {c: max(len(c), *(len(str(line.get(c, ""))) for line in summary)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for line in summary:
        print("  ".join(str(line.get(c, "")).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None, help="first N pages (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel run")
    parser.add_argument("--shards", type=int, default=None, help="WARC files (4 per worker)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA, help="trafilatura's tests/ folder")
    parser.add_argument(
        "--resiliparse", action="store_true", help="also time resiliparse (when importable)"
    )
    args = parser.parse_args()
    if not (args.data / "evaldata.json").exists():
        sys.exit(f"{args.data}: no evaldata.json (expected ../shared/data/extraction-trafilatura)")
    if args.resiliparse and importlib.util.find_spec("resiliparse") is None:
        sys.exit("--resiliparse: resiliparse is not installed (pip install resiliparse)")
    pages = load_pages(args.data, args.pages)
    rows = measure(
        pages,
        args.workers,
        args.shards,
        args.repeats,
        resiliparse=args.resiliparse,
        emit=lambda row: print(json.dumps(row), flush=True),
    )
    print_table(summarize(rows))


if __name__ == "__main__":
    main()
