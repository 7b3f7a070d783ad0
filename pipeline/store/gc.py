"""Garbage collection of the storage root: drop old runs and the versions only they used.

    report = collect_garbage(Storage.at("storage"), keep_last=3, dry_run=True)
    print(format_report(report))

A version is kept when a kept run needs it: the versions its run.json lists (its pipeline and
its reruns, and what its artifact links point to), and everything those were built from,
followed through each manifest's "inputs" down to the crawl. Everything else under versions/
goes, like `git gc` dropping unreachable objects. Each deletion first renames the folder into
tmp/ (one atomic step, so a reader sees the whole version or none), then removes it; on a URL
root (no rename) it removes the manifest (or run.json) first, then the rest. The root's `Folder`
does all of it, so gc cleans a remote store the same way as a local one.

Best run between pipeline runs. A running pipeline is mostly safe: its run is kept while marked
"running" (up to a day, unless its process is known dead), versions committed since it started
are spared, and its tmp/ folders are kept while their process lives. Not safe: an old version
it has just found for reuse and not yet recorded.

`clean_stale` is the part every run does first: run records left "running" by a process that
died are marked "interrupted", and tmp/ folders of dead processes on this host are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.store.fs import Folder
from pipeline.store.runs import RUN_FILE, RunRecord, is_stale, read_runs
from pipeline.store.versions import (
    MANIFEST,
    STAGE_NAME_PATTERN,
    VERSION_ID_PATTERN,
    Storage,
    owner_alive,
)

# tmp/ entries not written to for this long are leftovers of a stopped process. A stage that is
# running writes shards (or WARC records) into its folder far more often than once an hour.
TMP_MIN_AGE_S = 3600
# Training work dirs (tmp/<stage>-<version id>) hold checkpoints to resume from: keep them a day
# after their last write unless a kept run references their version.
WORK_DIR_MIN_AGE_S = 86400
# A run still marked "running" is kept beyond keep_last while younger than this (an older one
# was killed without a chance to record its end).
ACTIVE_RUN_MAX_AGE_S = 86400
WORK_DIR_RE = re.compile(r"^([a-z_]+)-([0-9a-f]{16})$")  # Storage.work_dir: 16-hex version id
TRASH_PREFIX = "gc-"  # versions and runs being deleted by gc; always garbage


@dataclass
class GcReport:
    """What gc deleted (or, with dry_run, would delete)."""

    deleted_versions: list[tuple[str, str, int]] = field(default_factory=list)  # stage, id, bytes
    deleted_runs: list[tuple[str, int]] = field(default_factory=list)  # run id, bytes
    deleted_tmp: list[tuple[str, int]] = field(default_factory=list)  # tmp/ entry name, bytes
    # URL roots: versions/<stage>/<id>/ prefixes with no manifest (a build that stopped)
    deleted_uncommitted: list[tuple[str, str, int]] = field(default_factory=list)
    kept_runs: int = 0
    kept_versions: int = 0
    dry_run: bool = False

    @property
    def freed_bytes(self) -> int:
        return (
            sum(b for *_, b in self.deleted_versions)
            + sum(b for _, b in self.deleted_runs)
            + sum(b for _, b in self.deleted_tmp)
            + sum(b for *_, b in self.deleted_uncommitted)
        )


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as du -h)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def tree_bytes(path: Path) -> int:
    """Total size of the regular files under `path` (symlinks are not followed nor counted)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size if stat.S_ISREG(info.st_mode) else 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def last_write(path: Path) -> float:
    """The newest mtime anywhere under `path`: when something last wrote to it."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def _stamp(info: dict[str, Any]) -> float:
    """When fsspec says a file was last written (local mtime, S3 LastModified, memory created)."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return 0.0


def _bytes(folder: Folder) -> int:
    return tree_bytes(folder.local_path()) if folder.is_local else sum(folder.sizes().values())


def _last_write(folder: Folder, name: str = "") -> float:
    """When anything below `folder` (or its file `name`) was last written."""
    if folder.is_local:
        return last_write(folder.local_path(name))
    infos = folder.infos()
    if name:
        return _stamp(infos.get(name, {}))
    return max((_stamp(info) for info in infos.values()), default=0.0)


def _started(run: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(run.get("started_at"))).timestamp()
    except ValueError:
        return 0.0


def _active(run: dict[str, Any], now: float) -> bool:
    return (
        run.get("status") == "running"
        and now - _started(run) < ACTIVE_RUN_MAX_AGE_S
        and not is_stale(run)
    )


def load_runs(storage: Storage) -> list[dict[str, Any]]:
    """Every run record, newest first; an unreadable one stops gc (its needs are unknown)."""
    runs = []
    for run_id, data in read_runs(storage):
        if isinstance(data, DataError):
            raise DataError(
                f"gc: {data}; cannot tell which versions run '{run_id}' needs "
                "(fix or remove that run folder)"
            )
        runs.append({**data, "run_id": data.get("run_id", run_id), "_folder": run_id})
    return sorted(runs, key=lambda r: (_started(r), str(r["run_id"])), reverse=True)


def _artifact_ref(storage: Storage, run_id: str, link: str) -> tuple[str, str] | None:
    """The version an artifact points into: a symlink in a local run folder, or a URL."""
    if storage.root.is_local:
        target = os.path.realpath(storage.run_folder(run_id).local_path(Path(link).name))
        parts = Path(os.path.relpath(target, os.path.realpath(storage.versions.path))).parts
    else:
        base = storage.versions.url + "/"
        parts = tuple(str(link)[len(base) :].split("/")) if str(link).startswith(base) else ()
    return (parts[0], parts[1]) if len(parts) >= 2 and parts[0] != ".." else None


def _run_refs(storage: Storage, run: dict[str, Any]) -> set[tuple[str, str]]:
    """The versions a run names directly: its stages, its reruns, its artifact links."""
    entries = list((run.get("versions") or {}).values()) + list(run.get("reruns") or [])
    refs = {(str(e["stage"]), str(e["version_id"])) for e in entries if "version_id" in e}
    for link in (run.get("artifacts") or {}).values():
        if (ref := _artifact_ref(storage, run["_folder"], link)) is not None:
            refs.add(ref)
    return refs


def referenced_versions(storage: Storage, runs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The versions `runs` name, closed over manifest "inputs" (evaluate -> ... -> crawl)."""
    todo = [ref for run in runs for ref in _run_refs(storage, run)]
    seen: set[tuple[str, str]] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        if not storage.has_version(*ref):
            continue  # already gone; nothing below it can be found from here
        try:
            inputs = storage.manifest(*ref).get("inputs") or []
        except DataError as exc:
            raise DataError(
                f"gc: {exc}; cannot tell what {ref[0]} version {ref[1]} was built from"
            ) from None
        todo += [(str(i["stage"]), str(i["version_id"])) for i in inputs if "version_id" in i]
    return seen


def _all_versions(storage: Storage) -> list[tuple[str, str]]:
    """Every versions/<stage>/<id> folder, committed or not (one listing)."""
    found = []
    for name in storage.versions.list("*/*", files_only=False):
        stage, _, version_id = name.partition("/")
        # Only folders named like a version: anything else is not ours to delete.
        if not (re.match(STAGE_NAME_PATTERN, stage) and re.match(VERSION_ID_PATTERN, version_id)):
            continue
        if storage.root.is_local:
            path = storage.versions.local_path(name)
            if path.is_symlink() or not path.is_dir():
                continue
        found.append((stage, version_id))
    return found


def _tmp_garbage(storage: Storage, refs: set[tuple[str, str]], now: float) -> list[Path]:
    """tmp/ entries no process is working in (see the age limits above)."""
    if not storage.tmp_dir.is_dir():
        return []
    garbage = []
    for entry in sorted(storage.tmp_dir.iterdir()):
        if entry.name.startswith(TRASH_PREFIX):
            garbage.append(entry)  # an earlier gc was stopped halfway through deleting it
            continue
        owner = owner_alive(entry.name)  # tmp/<label>-<host>-<pid>-<random> (Storage.new_tmp_dir)
        if owner is not None:
            if not owner:
                garbage.append(entry)  # its process on this host is gone, however young
            continue  # a live process works in it, however long since its last write
        age = now - last_write(entry)
        work = WORK_DIR_RE.match(entry.name)
        if work:
            if (work[1], work[2]) not in refs and age > WORK_DIR_MIN_AGE_S:
                garbage.append(entry)
        elif age > TMP_MIN_AGE_S:
            garbage.append(entry)
    return garbage


def _delete(storage: Storage, folder: Folder, marker: str, label: str) -> None:
    """Delete a version or run folder so that a reader sees all of it or nothing: locally
    rename it into tmp/ (atomic), then remove it; remotely remove its `marker` file (manifest
    or run.json: what makes it exist) first, then the rest."""
    if not folder.is_local:
        folder.remove(marker)
        folder.remove()
        return
    storage.tmp_dir.mkdir(parents=True, exist_ok=True)
    trash = storage.tmp_dir / f"{TRASH_PREFIX}{label}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder.local_path(), trash)
    except FileNotFoundError:
        return  # another gc got there first
    shutil.rmtree(trash, ignore_errors=True)


def collect_garbage(
    storage: Storage, keep_last: int | None = None, dry_run: bool = False
) -> GcReport:
    """Delete runs beyond the newest `keep_last` (None: keep all), then unreferenced versions.

    Also removes tmp/ leftovers: entries not written to for an hour, and training work dirs
    (tmp/train-<version id>, kept to resume from) a day after their last write when no kept
    run references that version; and, on a URL root, uncommitted version prefixes (a build
    that stopped before writing its manifest) not written to for an hour. `dry_run` deletes
    nothing and reports the same.
    """
    if keep_last is not None and keep_last < 0:
        raise DataError(f"gc: keep_last must be >= 0 (got {keep_last})")
    now = time.time()
    runs = load_runs(storage)
    kept, dropped = [], []
    for i, run in enumerate(runs):
        keep = keep_last is None or i < keep_last or _active(run, now)
        (kept if keep else dropped).append(run)
    refs = referenced_versions(storage, kept)
    # A running pipeline records a version just after committing it: spare versions committed
    # since the oldest active run started, in case they are its own and not yet in its run.json.
    active_since = min((_started(r) for r in kept if _active(r, now)), default=None)
    report = GcReport(kept_runs=len(kept), dry_run=dry_run)

    for run in dropped:
        folder = storage.run_folder(run["_folder"])
        report.deleted_runs.append((str(run["run_id"]), _bytes(folder)))
        if not dry_run:
            _delete(storage, folder, RUN_FILE, f"run-{run['_folder']}")
    for stage, version_id in _all_versions(storage):
        folder = storage.version_folder(stage, version_id)
        if not folder.is_file(MANIFEST):
            # A build in progress or one that stopped; only a URL root has these (local
            # builds happen in tmp/). Gone once nothing has written to it for an hour.
            if now - _last_write(folder) > TMP_MIN_AGE_S:
                report.deleted_uncommitted.append((stage, version_id, _bytes(folder)))
                if not dry_run:
                    folder.remove()
            continue
        if (stage, version_id) in refs or (
            active_since is not None and _last_write(folder, MANIFEST) >= active_since - 1
        ):
            report.kept_versions += 1
            continue
        report.deleted_versions.append((stage, version_id, _bytes(folder)))
        if not dry_run:
            _delete(storage, folder, MANIFEST, f"{stage}-{version_id}")
    for entry in _tmp_garbage(storage, refs, now):
        report.deleted_tmp.append((entry.name, tree_bytes(entry)))
        if not dry_run:
            Folder(entry).remove()
    return report


def clean_stale(storage: Storage) -> list[str]:
    """Mark stale "running" run records "interrupted" and remove tmp/ folders left by dead
    processes of this host; returns one line per thing cleaned (for the log).

    Only what is provably dead is touched: a record or folder is judged by the process that
    wrote it (host, pid and pid start time), never by age, and folders of other hosts, of live
    processes and training work dirs (kept to resume from) stay.
    """
    cleaned: list[str] = []
    for run_id, data in read_runs(storage):
        if isinstance(data, DataError) or not is_stale(data):
            continue  # unreadable: `runs list` reports it; not ours to judge
        process = data.get("process") or {}
        RunRecord(storage, run_id, data).finish(
            "interrupted",
            f"process {process.get('pid')} on {process.get('host')} ended without "
            "recording an end (killed?)",
        )
        cleaned.append(
            f"run {run_id}: marked interrupted (its process {process.get('pid')} is gone)"
        )
    if storage.tmp_dir.is_dir():
        for entry in sorted(storage.tmp_dir.iterdir()):
            if owner_alive(entry.name) is False:
                size = tree_bytes(entry)
                Folder(entry).remove()
                cleaned.append(
                    f"removed tmp/{entry.name} ({human_bytes(size)}), left by a dead process"
                )
    return cleaned


def format_report(report: GcReport) -> str:
    """The text `llmforge runs gc` prints."""
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"{verb} run {run_id} ({human_bytes(b)})" for run_id, b in report.deleted_runs]
    lines += [f"{verb} {s} {v} ({human_bytes(b)})" for s, v, b in report.deleted_versions]
    lines += [f"{verb} tmp/{name} ({human_bytes(b)})" for name, b in report.deleted_tmp]
    lines += [
        f"{verb} uncommitted {s} {v} ({human_bytes(b)})" for s, v, b in report.deleted_uncommitted
    ]
    lines.append(
        f"{'would free' if report.dry_run else 'freed'} {human_bytes(report.freed_bytes)}; "
        f"kept {report.kept_runs} runs, {report.kept_versions} versions"
    )
    return "\n".join(lines)
