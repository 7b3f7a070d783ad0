"""Locks between processes, and what a killed process leaves behind (found and cleaned)."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.stage import StageResult
from pipeline.store.gc import clean_stale, collect_garbage
from pipeline.store.locks import LockHeld, exclusive_lock, host_tag, pid_alive
from pipeline.store.runs import RunRecord, is_stale, list_runs
from pipeline.store.versions import Storage, VersionPlan, build_version, owner_alive

REPO = Path(__file__).resolve().parents[2]
PLAN = VersionPlan("filter", {"k": 1}, [], "c1")

HOLD = """
import sys, pathlib
from pipeline.store.locks import exclusive_lock
with exclusive_lock(pathlib.Path(sys.argv[1]), wait=False):
    print("locked", flush=True)
    sys.stdin.readline()
"""

BUILD = """
import sys, time, pathlib
from pipeline.stage import StageResult
from pipeline.store.versions import Storage, VersionPlan, build_version
root, counter, go = map(pathlib.Path, sys.argv[1:4])
def compute(out):
    out.write_text("data.txt", "the same output")
    with open(counter, "a") as f:
        f.write(f"{out}\\n")
    while not go.exists():  # hold the version's lock until the test says go
        time.sleep(0.05)
    return StageResult(1, 1)
version = build_version(Storage.at(root), VersionPlan("filter", {"k": 1}, [], "c1"), compute)
print("reused" if version.reused else "built", flush=True)
"""

RUN_THEN_DIE = """
import os, signal, sys, pathlib
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage
storage = Storage.at(pathlib.Path(sys.argv[1]))
RunRecord.create(storage, {}, run_id="killed-run")
(storage.new_tmp_dir("extract") / "part-00000.parquet").write_bytes(b"half a shard")
os.kill(os.getpid(), signal.SIGKILL)
"""


def spawn(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_held_lock_names_its_holder_and_is_freed_when_released(tmp_path):
    lock = tmp_path / "out.lock"
    holder = spawn(HOLD, str(lock), stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld) as error, exclusive_lock(lock, wait=False):
            pass
        assert error.value.owner["pid"] == holder.pid
        assert f"pid {holder.pid}" in str(error.value)
    finally:
        holder.communicate("\n", timeout=30)
    with exclusive_lock(lock, wait=False):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # removed on release


def test_a_killed_holder_releases_its_lock(tmp_path):
    lock = tmp_path / "out.lock"
    holder = spawn(HOLD, str(lock), stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=30)
    with exclusive_lock(lock, wait=False):  # the kernel dropped the dead holder's lock
        pass


def test_two_processes_building_one_version_compute_it_once(tmp_path):
    root, counter, go = tmp_path / "root", tmp_path / "computed.txt", tmp_path / "go"
    first = spawn(BUILD, str(root), str(counter), str(go))
    wait_for(counter.exists)  # the first one is computing, holding the version's lock
    with open(tmp_path / "second.err", "w") as err:
        second = spawn(BUILD, str(root), str(counter), str(go), stderr=err)
    try:
        # The second says who it waits for (and does not compute: the counter stays at 1).
        wait_for(lambda: "is being built by" in (tmp_path / "second.err").read_text())
    finally:
        go.touch()
    first_out = first.communicate(timeout=120)[0].strip()
    second_out = second.communicate(timeout=120)[0].strip()
    assert first.returncode == second.returncode == 0
    assert (first_out, second_out) == ("built", "reused")
    assert f"by pid {first.pid} on " in (tmp_path / "second.err").read_text()
    assert len(counter.read_text().splitlines()) == 1  # the second waited and reused it
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "locks").iterdir()) == []


def test_a_build_killed_midway_leaves_a_free_lock_and_a_tmp_folder_that_is_cleaned(tmp_path):
    root, counter = tmp_path / "root", tmp_path / "computed.txt"
    builder = spawn(BUILD, str(root), str(counter), str(tmp_path / "never"))
    wait_for(counter.exists)
    work = Path(counter.read_text().strip())
    assert work.is_dir() and owner_alive(work.name) is True
    builder.send_signal(signal.SIGKILL)
    builder.communicate(timeout=30)
    storage = Storage.at(root)
    assert owner_alive(work.name) is False
    with exclusive_lock(storage.lock_path("filter", PLAN.version_id), wait=False):
        pass  # nobody holds it: the next build does not wait
    assert clean_stale(storage) == [
        f"removed tmp/{work.name} (15 B), left by a dead process",
    ]
    assert not work.exists()
    version = build_version(storage, PLAN, lambda out: StageResult(0, 0))
    assert not version.reused


def test_a_killed_run_is_stale_shown_interrupted_and_recorded_so_by_the_next_run(tmp_path):
    storage = Storage.at(tmp_path)
    killed = spawn(RUN_THEN_DIE, str(tmp_path))
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    # Things the cleaner must keep: this process's own run and tmp folder, a record and a
    # folder of another host, a record from before processes were recorded, a legacy tmp
    # name (gc ages those), a training work dir (kept to resume from).
    mine = RunRecord.create(storage, {}, run_id="live-run")
    live_tmp = storage.new_tmp_dir("dedup")
    other_host = RunRecord.create(storage, {}, run_id="other-host")
    other_host.data["process"]["host"] = "some-other-machine"
    other_host.save()
    old = RunRecord.create(storage, {}, run_id="old-record")
    del old.data["process"]
    old.save()
    foreign_tmp = storage.tmp_dir / f"filter-{host_tag('some-other-machine')}-{dead_pid()}-0a0b0c0d"
    kept = [live_tmp, foreign_tmp, storage.tmp_dir / "filter-0123456789ab"]
    kept.append(storage.work_dir("train", "0123456789abcdef"))
    for folder in kept:
        folder.mkdir(parents=True, exist_ok=True)

    statuses = {r["run_id"]: r["status"] for r in list_runs(storage)}
    assert statuses == {
        "killed-run": "interrupted",
        "live-run": "running",
        "other-host": "running",
        "old-record": "running",
    }
    assert is_stale(RunRecord.load(storage, "killed-run").data)
    (dead_tmp,) = [p for p in storage.tmp_dir.iterdir() if p.name.startswith("extract-")]

    cleaned = clean_stale(storage)
    assert cleaned[0].startswith("run killed-run: marked interrupted (its process ")
    assert cleaned[1] == f"removed tmp/{dead_tmp.name} (12 B), left by a dead process"
    assert len(cleaned) == 2
    record = RunRecord.load(storage, "killed-run").data
    assert record["status"] == "interrupted" and "ended without recording an end" in record["error"]
    assert record["finished_at"] is not None
    assert not dead_tmp.exists() and all(folder.is_dir() for folder in kept)
    assert clean_stale(storage) == []  # nothing left to clean: idempotent
    assert RunRecord.load(storage, mine.run_id).data["status"] == "running"


def test_gc_keeps_a_live_run_and_drops_a_stale_one_however_young(tmp_path):
    storage = Storage.at(tmp_path)
    killed = spawn(RUN_THEN_DIE, str(tmp_path))
    killed.communicate(timeout=60)
    live = RunRecord.create(storage, {}, run_id="live-run")
    live.data["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    live.save()
    # A live process's folder untouched for two hours (a long clustering step) stays.
    busy = storage.new_tmp_dir("dedup")
    two_hours_ago = time.time() - 7200
    os.utime(busy, (two_hours_ago, two_hours_ago))
    report = collect_garbage(storage, keep_last=0)
    assert [run_id for run_id, _ in report.deleted_runs] == ["killed-run"]
    assert len(report.deleted_tmp) == 1 and report.deleted_tmp[0][0].startswith("extract-")
    assert storage.run_folder("live-run").is_dir() and busy.is_dir()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(os.getpid(), pid_start=-1)  # a recycled pid: another start time
