"""Run records: `<root>/runs/<run_id>/run.json` says what a pipeline run used and produced.

A run record holds the resolved config, the git commit of the code, and every dataset version
the run used (reused) or produced, so any model can be traced back to its data. While it runs,
the record names its process (host, pid, pid start time): a record still marked "running"
whose process is gone from this host is stale, shown as "interrupted" (`is_stale`) and marked
so by the next run (pipeline/store/gc.py `clean_stale`).
"""

from __future__ import annotations

import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.store.locks import alive, this_process
from pipeline.store.versions import (
    RUN_ID_PATTERN,
    Storage,
    load_version,
    read_json,
    write_json_atomic,
)

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
    """A run.json being filled in as stages finish; every save is atomic."""

    def __init__(self, storage: Storage, run_id: str, data: dict[str, Any]):
        self.storage = storage
        self.run_id = run_id
        self.data = data

    @property
    def path(self) -> Path:
        return self.storage.run_dir(self.run_id) / RUN_FILE

    @property
    def dir(self) -> Path:
        return self.storage.run_dir(self.run_id)

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
        path = storage.run_dir(run_id) / RUN_FILE
        if storage.remote is not None:
            from pipeline.store.remote import pull_file

            pull_file(storage.remote_url(path), path)  # the shared copy is the truth
        if not path.is_file():
            raise DataError(f"run '{run_id}' not found under {storage.runs_dir}")
        return cls(storage, run_id, read_json(path))

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
        self.storage.publish(self.path)

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


def list_runs(storage: Storage) -> list[dict[str, Any]]:
    """All run records, newest first; unreadable ones are reported, not hidden, and stale
    "running" ones read "interrupted"."""
    if storage.remote is not None:
        import re

        from pipeline.store.remote import list_names, pull_file

        for run_id in list_names(storage.remote_url(storage.runs_dir)):
            if not re.fullmatch(RUN_ID_PATTERN, run_id):
                continue  # not a run folder of ours; never a path to write to
            local = storage.run_dir(run_id) / RUN_FILE
            pull_file(storage.remote_url(local), local)
    if not storage.runs_dir.is_dir():
        return []
    runs = []
    for path in sorted(storage.runs_dir.glob(f"*/{RUN_FILE}"), reverse=True):
        try:
            data = read_json(path)
        except DataError as exc:
            runs.append({"run_id": path.parent.name, "status": "unreadable", "error": str(exc)})
            continue
        runs.append({**data, "status": "interrupted"} if is_stale(data) else data)
    return runs


def earlier_versions(storage: Storage, run_name: str, stage: str, before_run: str) -> list[Path]:
    """Paths of `stage` versions used by earlier completed runs named `run_name`, oldest first.

    Incremental dedup compares a new crawl against these, so pages admitted in an earlier week
    are not admitted again; each is checked against its manifest first, as any reuse is.
    """
    paths: list[Path] = []
    for record in sorted(list_runs(storage), key=lambda r: r.get("started_at") or ""):
        if record.get("run_id") == before_run or record.get("status") != "completed":
            continue
        if (record.get("config") or {}).get("run", {}).get("name") != run_name:
            continue
        version = (record.get("versions") or {}).get(stage)
        if version:
            path = storage.version_dir(stage, version["version_id"])
            if path.is_dir() and path not in paths:
                load_version(storage, stage, version["version_id"])  # integrity check
                paths.append(path)
    return paths
