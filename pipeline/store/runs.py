"""Run records: `<root>/runs/<run_id>/run.json` says what a pipeline run used and produced.

Records are read and written where they live, through the root's `Folder` (a local path or a
URL): one listing function (`read_runs`) serves `runs list`, gc and stale-run cleaning.

A run record holds the resolved config, the git commit of the code, and every dataset version
the run used (reused) or produced, so any model can be traced back to its data. While it runs,
the record names its process (host, pid, pid start time): a record still marked "running"
whose process is gone from this host is stale, shown as "interrupted" (`is_stale`) and marked
so by the next run (pipeline/store/gc.py `clean_stale`).
"""

from __future__ import annotations

import re
import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.store.fs import Folder
from pipeline.store.locks import alive, this_process
from pipeline.store.versions import RUN_ID_PATTERN, Storage, load_version

RUN_FILE = "run.json"


def new_run_id() -> str:
    """Sortable by time, unique without coordination: 20261122-001500-3fa2c1."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class RunRecord:
    """A run.json being filled in as stages finish, read and written where it lives (the
    storage root, local or remote); every save replaces the whole file at once."""

    def __init__(self, storage: Storage, run_id: str, data: dict[str, Any]):
        self.storage = storage
        self.run_id = run_id
        self.data = data

    @property
    def folder(self) -> Folder:
        return self.storage.run_folder(self.run_id)

    @property
    def url(self) -> str:
        """Where run.json lives: a local path or a URL."""
        return self.folder.url_of(RUN_FILE)

    @classmethod
    def create(
        cls,
        storage: Storage,
        config: dict[str, Any],
        run_id: str | None = None,
        kind: str = "pipeline",
    ) -> RunRecord:
        run_id = run_id or new_run_id()
        data = {
            "run_id": run_id,
            "kind": kind,
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished_at": None,
            "git_commit": git_commit(),
            "config": config,
            "versions": {},
            "artifacts": {},
            "prefect": {},
            "error": None,
            "process": this_process(),  # who is running it: stale detection
        }
        record = cls(storage, run_id, data)
        record.save()
        return record

    @classmethod
    def load(cls, storage: Storage, run_id: str) -> RunRecord:
        """The record of `run_id`: an exact id, `latest` or a unique prefix (resolve_run_id)."""
        run_id = resolve_run_id(storage, run_id)
        return cls(storage, run_id, storage.run_folder(run_id).read_json(RUN_FILE))

    def save(self) -> None:
        self.folder.write_json(RUN_FILE, self.data)

    def add_version(self, summary: dict[str, Any]) -> None:
        self.data["versions"][summary["stage"]] = summary
        self.save()

    def add_artifacts(self, artifacts: dict[str, str]) -> None:
        self.data["artifacts"].update(artifacts)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["status"] = status
        self.data["error"] = error
        self.data["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.save()


def is_stale(data: dict[str, Any]) -> bool:
    """A record marked "running" whose process, recorded on this host, is no longer alive
    (killed, or its machine rebooted). Records from other hosts or older code (no process
    recorded) cannot be judged and are not stale."""
    return data.get("status") == "running" and alive(data.get("process")) is False


def run_ids(storage: Storage) -> list[str]:
    """The ids of the runs recorded under the root (one listing, no record read), newest id
    first; folders not named like a run id are not ours and are skipped."""
    names = sorted(storage.runs.list(f"*/{RUN_FILE}", files_only=False), reverse=True)
    ids = (name.split("/", 1)[0] for name in names)
    return [run_id for run_id in ids if re.fullmatch(RUN_ID_PATTERN, run_id)]


def read_runs(storage: Storage) -> list[tuple[str, dict[str, Any] | DataError]]:
    """Every run folder holding a run.json (one listing), newest id first, with its record or
    the error reading it; callers decide what an unreadable record means. Folders not named
    like a run id are not ours and are skipped."""
    found = []
    for run_id in run_ids(storage):
        try:
            found.append((run_id, storage.run_folder(run_id).read_json(RUN_FILE)))  # listed: exists
        except DataError as exc:
            found.append((run_id, exc))
    return found


LATEST = "latest"  # the run id that means the most recently started run


def resolve_run_id(storage: Storage, ref: str) -> str:
    """The run a user means by `ref`: an exact run id, `latest` (the run started last), or a
    prefix of exactly one run id (`20261207-1129`), as git takes short commit ids. Anything
    else is one DataError line: not found, or ambiguous with the candidates named."""
    if storage.run_folder(ref).is_file(RUN_FILE):
        return ref
    if ref == LATEST:
        runs = read_runs(storage)  # the start times are in the records
        readable = [(run_id, data) for run_id, data in runs if not isinstance(data, DataError)]
        if not readable:
            raise DataError(f"no runs under {storage.runs}: 'latest' means none")
        return max(readable, key=lambda run: (str(run[1].get("started_at") or ""), run[0]))[0]
    matches = [run_id for run_id in run_ids(storage) if run_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DataError(f"run '{ref}' not found under {storage.runs}")
    shown = ", ".join(matches[:5]) + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")
    raise DataError(f"run id '{ref}' is ambiguous under {storage.runs}: {shown}")


def list_runs(storage: Storage) -> list[dict[str, Any]]:
    """All run records, newest first; unreadable ones are reported, not hidden, and stale
    "running" ones read "interrupted"."""
    runs = []
    for run_id, data in read_runs(storage):
        if isinstance(data, DataError):
            runs.append({"run_id": run_id, "status": "unreadable", "error": str(data)})
        else:
            runs.append({**data, "status": "interrupted"} if is_stale(data) else data)
    return runs


def earlier_versions(storage: Storage, run_name: str, stage: str, before_run: str) -> list[Folder]:
    """Folders of `stage` versions used by earlier completed runs named `run_name`, oldest
    first.

    Incremental dedup compares a new crawl against these, so pages admitted in an earlier week
    are not admitted again; each is checked against its manifest first, as any reuse is.
    """
    folders: list[Folder] = []
    for record in sorted(list_runs(storage), key=lambda r: r.get("started_at") or ""):
        if record.get("run_id") == before_run or record.get("status") != "completed":
            continue
        if (record.get("config") or {}).get("run", {}).get("name") != run_name:
            continue
        version = (record.get("versions") or {}).get(stage)
        if version and storage.has_version(stage, version["version_id"]):
            found = load_version(storage, stage, version["version_id"])  # integrity check
            if found.folder not in folders:
                folders.append(found.folder)
    return folders
