"""The one owner of paths under the storage root, and versioned, atomically committed datasets.

Layout (also in storage/README.md):

    <root>/versions/<stage>/<version_id>/   one immutable dataset version, manifest.json inside
    <root>/runs/<run_id>/run.json           what a pipeline run used and produced
    <root>/tmp/                             versions being written (renamed into place when done)
    <root>/prefect/                         PREFECT_HOME of the local Prefect server

A version id is a hash of (stage, stage config, input version ids, stage code version), so the
same work always lands in the same directory and a rerun finds it instead of recomputing:
Dagster's code version + data version idea, with Metaflow's immutable output directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.documents import DataError
from pipeline.stage import StageResult

PIPELINE_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(value: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def code_version(patterns: list[str]) -> str:
    """Hash of the source files a stage runs (globs relative to pipeline/ or model/'s parent).

    Editing any of them gives the stage a new version id, so stale outputs are never reused
    after a code change (Prefect's TASK_SOURCE hashes only one function's text; this hashes
    every file the stage depends on).
    """
    digest = hashlib.sha256()
    root = PIPELINE_DIR.parent
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_files(paths: list[Path]) -> str:
    """Content fingerprint of external inputs (user WARC files): names, sizes and sha256."""
    entries = []
    for path in paths:
        try:
            entries.append([path.name, path.stat().st_size, file_sha256(path)])
        except OSError as exc:
            raise DataError(f"{path}: cannot read input file ({exc.strerror})") from None
    return short_hash(entries)


def write_json_atomic(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None


@dataclass(frozen=True)
class Storage:
    """Paths under one storage root. Nothing touches the filesystem until a method is called.

    A URL root (`s3://bucket/llmforge`, `file:///data/llmforge`) is the shared store and
    `root` its local cache (pipeline/remote.py); a plain path is used directly.
    """

    root: Path
    remote: str | None = None

    @classmethod
    def at(cls, root: str | Path) -> Storage:
        text = str(root)
        if "://" in text:
            from pipeline.remote import cache_dir

            return cls(cache_dir(text), text.rstrip("/"))
        return cls(Path(root).expanduser().resolve())

    def remote_url(self, local: Path) -> str | None:
        """Where a path under the local root lives in the remote store."""
        if self.remote is None:
            return None
        return f"{self.remote}/{local.relative_to(self.root).as_posix()}"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def version_dir(self, stage: str, version_id: str) -> Path:
        return self.versions_dir / stage / version_id

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def report_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "report"

    def has_version(self, stage: str, version_id: str) -> bool:
        """Committed here, or in the remote store (then downloaded into the local cache)."""
        path = self.version_dir(stage, version_id)
        if (path / MANIFEST).is_file():
            return True
        if self.remote is None:
            return False
        from pipeline.remote import pull_tree

        return pull_tree(self.remote_url(path), path)

    def publish(self, path: Path) -> None:
        """Upload a committed version or a run record to the remote store, if there is one."""
        if self.remote is None:
            return
        from pipeline.remote import push_file, push_tree

        if path.is_dir():
            push_tree(path, self.remote_url(path))
        else:
            push_file(path, self.remote_url(path))

    def manifest(self, stage: str, version_id: str) -> dict[str, Any]:
        return read_json(self.version_dir(stage, version_id) / MANIFEST)

    def work_dir(self, stage: str, version_id: str) -> Path:
        """A stable in-progress folder for long work (training) that may resume after a stop."""
        return self.tmp_dir / f"{stage}-{version_id}"

    def new_tmp_dir(self, stage: str) -> Path:
        path = self.tmp_dir / f"{stage}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path


@dataclass
class VersionPlan:
    """Everything that determines a stage's output, hence its version id."""

    stage: str
    config: dict[str, Any]
    inputs: list[dict[str, str]]  # [{"stage": ..., "version_id": ...}] or [{"source": ..., ...}]
    code_version: str
    version_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.version_id = short_hash(
            {
                "stage": self.stage,
                "config": self.config,
                "inputs": self.inputs,
                "code_version": self.code_version,
            }
        )


@dataclass
class Version:
    """A committed dataset version, and whether this call built it or found it."""

    stage: str
    version_id: str
    path: Path
    manifest: dict[str, Any]
    reused: bool

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "version_id": self.version_id,
            "path": str(self.path),
            "reused": self.reused,
            "counts": self.manifest.get("counts", {}),
        }


def _file_entries(folder: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        entries.append(
            {
                "path": path.relative_to(folder).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        )
    return entries


def find_version(storage: Storage, plan: VersionPlan) -> Version | None:
    if not storage.has_version(plan.stage, plan.version_id):
        return None
    return load_version(storage, plan.stage, plan.version_id)


def load_version(storage: Storage, stage: str, version_id: str) -> Version:
    """A committed version by id; a clear error if it is missing (deleted or never built)."""
    if not storage.has_version(stage, version_id):
        raise DataError(f"{stage} version {version_id} not found under {storage.versions_dir}")
    path = storage.version_dir(stage, version_id)
    return Version(stage, version_id, path, storage.manifest(stage, version_id), True)


def build_version(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Path], StageResult],
    replace: bool = False,
    work_dir: Path | None = None,
) -> Version:
    """Return the version for `plan`, computing it into a temp dir and renaming it into place.

    The rename is the commit: a reader sees either no directory or a complete one with its
    manifest. If another process committed the same version first, its copy wins and ours is
    discarded (same inputs, same output). A `work_dir` (training) survives a failure so the
    work can resume there; the default temp dir does not.
    """
    existing = find_version(storage, plan)
    if existing is not None and not replace:
        return existing
    tmp = work_dir or storage.new_tmp_dir(plan.stage)
    tmp.mkdir(parents=True, exist_ok=True)
    replaced: Path | None = None
    started = time.time()
    try:
        result = compute(tmp)
        files = _file_entries(tmp)
        manifest = {
            "stage": plan.stage,
            "version_id": plan.version_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": plan.code_version,
            "config": plan.config,
            "inputs": plan.inputs,
            "counts": {
                "docs_in": result.docs_in,
                "docs_out": result.docs_out,
                "drops": result.drops,
                "extra": result.extra,
            },
            "shards": result.shards,
            "files": files,
            "bytes_total": sum(f["bytes"] for f in files),
            "timings": {"seconds": round(time.time() - started, 3)},
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        final = storage.version_dir(plan.stage, plan.version_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if replace and final.exists():
            # --force: move the old copy aside first so readers never see a mix of both.
            replaced = storage.new_tmp_dir(f"{plan.stage}-replaced")
            os.rename(final, replaced / plan.version_id)
        try:
            os.rename(tmp, final)
        except OSError:
            if not storage.has_version(plan.stage, plan.version_id):
                raise
            return load_version(storage, plan.stage, plan.version_id)
        storage.publish(final)
        return Version(plan.stage, plan.version_id, final, manifest, False)
    finally:
        for leftover in (None if work_dir else tmp, replaced):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
