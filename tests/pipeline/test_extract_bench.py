"""bench/extract.py: its scoring and shard split, a 20-page run of the real measurement, and the
sandbox's submit/result split that lets the stage read the next page while a page is extracted.
"""

from __future__ import annotations

import sys
import time

import pytest

from pipeline.extract.sandbox import Sandbox, SandboxTimeout
from tests.conftest import load_bench, shared_data


@pytest.fixture(scope="module")
def bench():
    yield load_bench("extract")
    sys.modules.pop("bench_extract", None)


def test_score_counts_segments_found_and_absent(bench):
    pages = [
        bench.Page("http://a.test/1", b"", ("main  text", "missing"), ("menu",)),
        bench.Page("http://a.test/2", b"", ("other",), ("footer", "ads")),
        bench.Page("http://a.test/3", b"", ("gone",), ("nav",)),  # no text at all
    ]
    texts = {"http://a.test/1": "the main\ntext, menu", "http://a.test/2": "other", "x": "gone"}
    # with: 2 found of 4; without: 1 present of 4; f1 = 2*2 / (2*2 + 1 + 2)
    assert bench.score(pages, texts) == {"recall": 0.5, "precision": 0.75, "f1": 0.5714}


def test_split_keeps_order_and_balances_bytes(bench):
    sizes = [5, 1, 1, 1, 1, 1, 4, 2]
    pages = [bench.Page(f"http://a.test/{i}", b"x" * n, (), ()) for i, n in enumerate(sizes)]
    parts = bench.split(pages, 2)
    assert [p for part in parts for p in part] == pages
    assert [sum(len(p.body) for p in part) for part in parts] == [8, 8]
    assert len(bench.split(pages[:1], 3)) == 1  # no empty shards


def test_stage_on_20_real_pages_matches_bare_trafilatura(bench):
    pages = bench.load_pages(shared_data("extraction-trafilatura", "tests"), limit=20)
    rows = bench.measure(pages, workers=2, shards=2, repeats=1)
    by_run = {row["run"]: row for row in rows}
    assert list(by_run) == ["bare", "bare-2w", "stage-1w", "stage-2w"]
    bare = by_run["bare"]
    assert bare["recall"] > 0.5 and bare["precision"] > 0.5 and bare["docs"] >= 15
    for name in ("bare-2w", "stage-1w", "stage-2w"):
        row = by_run[name]
        # Same text on every page, so the same scores: the stage empties trafilatura's dedup
        # cache per shard although the bare run just filled it in this process.
        assert row["same_text"] == len(pages) == row["pages"]
        assert (row["recall"], row["precision"], row["docs"]) == (
            bare["recall"],
            bare["precision"],
            bare["docs"],
        )
        assert row["shards"] == 2 and row["pages_per_s"] > 0 and row["cpu_s"] > 0
    summary = {line["run"]: line for line in bench.summarize(rows)}
    assert {"overhead_best_pct", "cpu_overhead_pct"} <= set(summary["stage-1w"])
    assert {"overhead_median_pct", "speedup_median"} <= set(summary["stage-2w"])
    assert "speedup_median" in summary["bare-2w"]


def sleep_then_echo(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_sandbox_submit_lets_the_caller_work_and_times_from_submit():
    with Sandbox(sleep_then_echo, timeout=1.0) as sandbox:
        sandbox(0.0)  # child started
        start = time.perf_counter()
        sandbox.submit(0.5)
        time.sleep(0.5)  # the caller's own work, while the child works too
        assert sandbox.result() == 0.5
        assert time.perf_counter() - start < 0.9  # overlapped, not 0.5 + 0.5
        start = time.perf_counter()
        sandbox.submit(30.0)
        time.sleep(0.6)
        with pytest.raises(SandboxTimeout):
            sandbox.result()
        assert 1.0 <= time.perf_counter() - start < 1.5  # the 1 s ran from submit()
        with pytest.raises(RuntimeError, match="nothing submitted"):
            sandbox.result()
        sandbox.submit(0.0)
        with pytest.raises(RuntimeError, match="previous"):
            sandbox.submit(0.0)
        assert sandbox.result() == 0.0 and sandbox.restarts == 1
