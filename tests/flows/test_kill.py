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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.documents import DOCUMENT_SCHEMA
from pipeline.sample_server import make_handler
from pipeline.sample_site import SampleSiteConfig, generate_site, load_ground_truth

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="finds processes through /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
SETTLE_S = 5.0  # orphans notice within pipeline.lifeline.POLL_S (0.5 s); allow a loaded machine


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


def cli_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # --no-server's own
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp / "prefect-home"),
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
) -> dict[int, int]:
    """Start the command, wait until `started(descendants)` says the stage is under way, kill
    it, and check that it and everything it started are gone within SETTLE_S. Returns the
    descendants seen (pid -> depth)."""
    log = open(tmp / f"killed-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, env=cli_env(tmp), stdout=log, stderr=log, start_new_session=True
    )
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
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        log.close()
    return seen


def same_files(expected: Path, got: Path, folders: tuple[str, ...]) -> None:
    """Byte-identical Parquet files under `folders` (manifests hold timings, not compared)."""
    for folder in folders:
        want = sorted(p.relative_to(expected) for p in (expected / folder).rglob("*") if p.is_file())
        have = sorted(p.relative_to(got) for p in (got / folder).rglob("*") if p.is_file())
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


@pytest.fixture(scope="module")
def extracted(warcs, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("extract-ref")
    out = tmp / "out"
    run_ok(llmforge("stage", "extract", "--input", str(warcs), "--output", str(out)), tmp)
    return out


@pytest.mark.parametrize("whole_group", [False, True], ids=["main", "group"])
def test_extract_killed_leaves_no_process_and_rerun_matches(
    whole_group, warcs, extracted, tmp_path
):
    out = tmp_path / "out"
    args = llmforge("stage", "extract", "--input", str(warcs), "--output", str(out))
    seen = kill_mid_stage(args, tmp_path, whole_group, in_sandbox)
    assert sorted(set(seen.values())) == [1, 2]  # pool workers and their sandbox children
    assert not out.exists()  # killed before the commit
    run_ok(args, tmp_path)
    same_files(extracted, out, ("data", "removed"))
