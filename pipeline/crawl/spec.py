"""The crawl stage as the pipeline sees it: seeds in, WARC files out, progress as it goes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.crawl.crawler import CrawlConfig, ProgressFn, crawl, load_seeds
from pipeline.stage import ParallelMap, Stage, StageResult


def snapshot_label(snapshot: str, now: datetime | None = None) -> str:
    """`source.snapshot` with strftime codes filled in: "%G-W%V" gives one crawl per ISO week."""
    return (now or datetime.now(UTC)).strftime(snapshot) if "%" in snapshot else snapshot


def resolve(config: Any, upstream: Any) -> tuple[None, list[dict[str, str]]]:
    """A crawl reads no version: the seeds (in its config) and the snapshot label make its id."""
    return None, [{"source": "seeds", "snapshot": snapshot_label(config.source.snapshot)}]


def run(config: CrawlConfig, source: ProgressFn | None, out: Any, pmap: ParallelMap) -> StageResult:
    """A crawl is one asyncio loop, so `pmap` is unused; `source` is the progress callback."""
    return crawl(config, out, on_progress=source)


def progress(config: CrawlConfig, update: ProgressFn) -> ProgressFn:
    """Pages stored against what the frontier says is reachable (at most max_pages)."""

    def on_progress(stored: int, seen: int) -> None:
        update(stored, max(stored, min(config.max_pages, seen)))

    return on_progress


def check(config: Any) -> None:
    """Bad seeds (none, unreadable file, not a URL) fail before any work."""
    load_seeds(config.crawl)


def active(config: Any) -> bool:
    """Runs from WARC files or other tools' documents start at extract."""
    return bool(config.source.kind == "crawl")


STAGE = Stage(
    name="crawl",
    config=CrawlConfig,
    code=("pipeline/crawl/*.py", "pipeline/documents.py", "pipeline/stage.py"),
    resolve=resolve,
    run=run,
    check=check,
    active=active,
    progress=progress,
)
