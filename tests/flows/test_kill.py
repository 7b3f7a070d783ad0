"""Hard kills mid-stage: no process outlives its command, and a rerun gives the same output.

Each command runs in its own session (so killing "the whole group" kills nothing else) and is
SIGKILLed either alone (its pool workers, sandbox children and Prefect's temporary server must
then notice and stop by themselves: pipeline/lifeline.py) or with its whole process group.
Linux only: processes are found through /proc.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.sample_site.server import make_handler
from pipeline.sample_site.site import SampleSiteConfig, generate_site, load_ground_truth

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="finds processes through /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
# Orphans notice within pipeline.lifeline.POLL_S (0.5 s), then a server may take GRACE_S (5 s).
SETTLE_S = 10.0


# --- processes ------------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process, from /proc/PID/stat."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        found[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def descendants(pid: int) -> dict[int, int]:
    """pid -> depth below `pid` (1 = child) of its living descendants."""
    table = processes()
    depth, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _, state) in table.items():
            if ppid == parent and state not in "ZX" and child not in depth:
                depth[child] = depth.get(parent, 0) + 1
                frontier.append(child)
    return depth


def living(pids: set[int], group: int) -> set[int]:
    """Which of `pids`, or any process in process group `group`, still run (zombies are dead:
    the container's init may never reap them)."""
    return {
        pid
        for pid, (_, pgid, state) in processes().items()
        if (pid in pids or pgid == group) and state not in "ZX"
    }


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def prefect_home(tmp_path_factory) -> Iterator[Path]:
    """One Prefect home (database) for this module's commands: a fresh database costs ~5 s
    per command. Not the session's: another test's in-process server may be using that one."""
    path = tmp_path_factory.mktemp("prefect-home")
    PREFECT_HOME[:] = [path]
    yield path
    PREFECT_HOME.clear()


PREFECT_HOME: list[Path] = []


def cli_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # --no-server's own
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(PREFECT_HOME[0] if PREFECT_HOME else tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def llmforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def run_ok(args: list[str], tmp: Path, timeout: float = 300) -> None:
    proc = subprocess.run(args, env=cli_env(tmp), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def kill_mid_stage(
    args: list[str],
    tmp: Path,
    whole_group: bool,
    started: Callable[[dict[int, int]], bool],
    how: int = signal.SIGKILL,
) -> tuple[dict[int, int], int]:
    """Start the command, wait until `started(descendants)` says the stage is under way, kill
    it, and check that it and everything it started are gone within SETTLE_S. Returns the
    descendants seen (pid -> depth) and the command's exit status."""
    log = open(tmp / f"killed-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=cli_env(tmp), stdout=log, stderr=log, start_new_session=True)
    seen: dict[int, int] = {}
    try:

        def under_way() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"command ended (rc {proc.returncode}) before the kill")
            seen.update(descendants(proc.pid))
            return started(seen)

        wait_until(under_way, 240, "the stage to start")
        seen.update(descendants(proc.pid))
        if whole_group:
            os.killpg(proc.pid, how)
        else:
            os.kill(proc.pid, how)
        proc.wait(timeout=60)
        gone = lambda: not living(set(seen), proc.pid)  # noqa: E731
        wait_until(gone, SETTLE_S + (30 if how != signal.SIGKILL else 0), "children to end")
    finally:
        for pid in living(set(seen) | {proc.pid}, proc.pid):  # only if the test failed
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        log.close()
    return seen, proc.returncode


def same_files(expected: Path, got: Path, folders: tuple[str, ...]) -> None:
    """Byte-identical Parquet files under `folders` (manifests hold timings, not compared)."""
    for folder in folders:
        want = sorted(p.relative_to(expected) for p in (expected / folder).rglob("*"))
        have = sorted(p.relative_to(got) for p in (got / folder).rglob("*"))
        assert have == want and want, folder
        for rel in want:
            assert (got / rel).read_bytes() == (expected / rel).read_bytes(), rel


# --- inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("site")
    generate_site(path, SampleSiteConfig(seed=3, articles=100))
    return path


@pytest.fixture(scope="module")
def warcs(site, tmp_path_factory) -> Path:
    """The site's pages as two WARC files: two extract shards, one per pool worker."""
    folder = tmp_path_factory.mktemp("warcs")
    pages = [p for p in load_ground_truth(site)["pages"] if p["status"] == 200]
    pages = [p for p in pages if p["file"].endswith(".html")]
    for part in (0, 1):
        with open(folder / f"part-{part}.warc.gz", "wb") as fh:
            writer = WARCWriter(fh, gzip=True)
            for page in pages[part::2]:
                http = StatusAndHeaders(
                    "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
                )
                record = writer.create_warc_record(
                    f"http://site.test{page['path']}",
                    "response",
                    payload=io.BytesIO((site / page["file"]).read_bytes()),
                    http_headers=http,
                    warc_headers_dict={"WARC-Date": "2024-05-01T12:00:00Z"},
                )
                writer.write_record(record)
    return folder


def in_sandbox(seen: dict[int, int]) -> bool:
    """Extraction under way: a pool worker (depth 1) has started its sandbox child (depth 2)."""
    return 2 in seen.values()


def extract_args(warcs: Path, out: Path) -> list[str]:
    # A page past the 1 s timeout is dropped (extract_timeout): on a loaded machine that is
    # chance, and the outputs would differ by it. A generous timeout keeps the comparison exact.
    args = ("--input", str(warcs), "--output", str(out), "--set", "timeout_seconds=60")
    return llmforge("stage", "extract", *args)


@pytest.fixture(scope="module")
def extracted(warcs, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("extract-ref")
    run_ok(extract_args(warcs, tmp / "out"), tmp)
    return tmp / "out"


@pytest.mark.parametrize("whole_group", [False, True], ids=["main", "group"])
def test_extract_killed_leaves_no_process_and_rerun_matches(
    whole_group, warcs, extracted, tmp_path
):
    out = tmp_path / "out"
    args = extract_args(warcs, out)
    seen, _ = kill_mid_stage(args, tmp_path, whole_group, in_sandbox)
    assert sorted(set(seen.values())) == [1, 2]  # pool workers and their sandbox children
    assert not out.exists()  # killed before the commit
    run_ok(args, tmp_path)
    same_files(extracted, out, ("data", "removed"))


# --- dedup ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """4 shards x 1500 random 300-word documents, every 10th a copy of an earlier one: a few
    seconds of MinHash work, spread over the pool."""
    folder = tmp_path_factory.mktemp("docs")
    rng = np.random.default_rng(0)
    vocab = np.array([f"word{i}" for i in range(20_000)], dtype=object)
    texts: list[str] = []
    for shard in range(4):
        rows = []
        for i in range(1500):
            text = texts[rng.integers(len(texts))] if texts and i % 10 == 9 else None
            text = text or " ".join(vocab[rng.integers(0, len(vocab), 300)])
            texts.append(text)
            url = f"http://docs.test/{shard}/{i}"
            rows.append({"id": url, "url": url, "domain": "docs.test", "text": text})
        table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
        pq.write_table(table, folder / f"part-{shard:05d}.parquet")
    return folder


@pytest.fixture(scope="module")
def deduped(documents, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dedup-ref")
    out = tmp / "out"
    run_ok(llmforge("stage", "dedup", "--input", str(documents), "--output", str(out)), tmp)
    return out


@pytest.mark.parametrize("whole_group", [False, True], ids=["main", "group"])
def test_dedup_killed_leaves_no_process_and_rerun_matches(
    whole_group, documents, deduped, tmp_path
):
    out = tmp_path / "out"
    args = llmforge("stage", "dedup", "--input", str(documents), "--output", str(out))
    seen, _ = kill_mid_stage(args, tmp_path, whole_group, lambda seen: len(seen) >= 2)
    assert set(seen.values()) == {1}  # the pool's two workers
    assert not out.exists()
    run_ok(args, tmp_path)
    same_files(deduped, out, ("data", "removed", "signatures"))


# --- crawl, through `llmforge run --no-server` -------------------------------------------------


@pytest.fixture(scope="module")
def slow_site(site) -> Iterator[tuple[str, list[int]]]:
    """The sample site on 127.0.0.1, 0.1 s per request (so a crawl lasts seconds); yields its
    URL and a one-item list counting GET requests."""
    count = [0]
    base = make_handler(site)

    class Slow(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:
            count[0] += 1
            time.sleep(0.1)
            super().do_GET()

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            """A killed crawler drops its connections: no traceback per broken pipe."""

    server = Quiet(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", count
    finally:
        server.shutdown()
        server.server_close()


def crawl_args(base_url: str, storage: Path) -> list[str]:
    from pipeline.crawl.crawler import CrawlConfig

    sets = [
        f'crawl.seeds=["{base_url}/"]',
        "crawl.max_pages=30",
        "crawl.delay_seconds=0",
        "run.until=crawl",
        f'run.storage_root="{storage}"',
    ]
    if "allow_private_addresses" in CrawlConfig.model_fields:  # the SSRF guard (issue 9)
        sets.append("crawl.allow_private_addresses=true")
    return llmforge("run", "--no-server", *[arg for s in sets for arg in ("--set", s)])


def crawled_pages(storage: Path) -> list[tuple]:
    """What a crawl stored, without its timings: (url, status, type, bytes, depth, error) rows
    of its index and (url, payload) of its WARC responses, sorted."""
    from pipeline.extract.warc import iter_responses

    [version] = (storage / "versions" / "crawl").iterdir()
    index = pq.read_table(version / "index").to_pylist()
    rows = sorted(
        (r["url"], r["status"], r["content_type"], r["bytes"], r["depth"], r["error"])
        for r in index
    )
    bodies = sorted(
        (page.url, page.body)
        for warc in sorted((version / "warc").glob("*.warc.gz"))
        for page in iter_responses(warc, Counter())
    )
    assert len(rows) >= 30 and bodies
    return rows + bodies


@pytest.fixture(scope="module")
def crawled(slow_site, tmp_path_factory) -> list[tuple]:
    tmp = tmp_path_factory.mktemp("crawl-ref")
    run_ok(crawl_args(slow_site[0], tmp / "storage"), tmp)
    return crawled_pages(tmp / "storage")


@pytest.mark.parametrize("whole_group", [False, True], ids=["main", "group"])
def test_crawl_killed_leaves_no_server_and_rerun_matches(whole_group, slow_site, crawled, tmp_path):
    base_url, count = slow_site
    args = crawl_args(base_url, tmp_path / "storage")
    start = count[0]
    seen, _ = kill_mid_stage(args, tmp_path, whole_group, lambda seen: count[0] >= start + 5)
    assert 1 in seen.values()  # Prefect's temporary server: gone too
    assert not (tmp_path / "storage" / "versions" / "crawl").exists()
    run_ok(args, tmp_path)
    assert crawled_pages(tmp_path / "storage") == crawled


def test_sigterm_stops_prefect_temporary_server(slow_site, tmp_path):
    base_url, count = slow_site
    start = count[0]
    seen, status = kill_mid_stage(
        crawl_args(base_url, tmp_path / "storage"),
        tmp_path,
        whole_group=False,
        started=lambda seen: count[0] >= start + 5,
        how=signal.SIGTERM,
    )
    assert 1 in seen.values()  # the server was there, and is gone
    assert status == 128 + signal.SIGTERM  # exited through SystemExit: cleanups ran
