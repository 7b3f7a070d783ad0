"""The one owner of paths under the storage root, and versioned, atomically committed datasets.

Layout (also in storage/README.md):

    <root>/versions/<stage>/<version_id>/   one immutable dataset version, manifest.json inside
    <root>/runs/<run_id>/run.json           what a pipeline run used and produced
    <root>/tmp/                             versions being written (renamed into place when done)
    <root>/locks/                           a lock per version being built (store/locks.py)
    <root>/prefect/                         PREFECT_HOME of the local Prefect server

A version id is a hash of (stage, stage config, input version ids, stage code version), so the
same work always lands in the same directory and a rerun finds it instead of recomputing:
Dagster's code version + data version idea, with Metaflow's immutable output directories.

Run ids, version ids and stage names are checked against strict patterns before they become
paths, and each run/version folder must resolve inside its parent (no `..`, no symlink out).
Reusing a version first checks its files against its manifest (pipeline/store/integrity.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import StringConstraints

from pipeline.errors import DataError
from pipeline.stage import StageResult
from pipeline.store.integrity import (
    VerifyMode,
    check_mode,
    file_sha256,  # noqa: F401 (re-exported: callers hash files through storage)
    hash_files,
    remember_verified,
    verify_files,
)
from pipeline.store.locks import LockHeld, describe, exclusive_lock, host_tag, pid_alive

PIPELINE_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)

# Run ids: a letter or digit, then letters, digits, '.', '_', '-', never two dots in a row
# (so never '..'), at most 128 characters; new_run_id() gives 20261122-001500-3fa2c1. Written
# without look-ahead so pydantic (Rust regex) and the Prefect UI's form (JSON schema) share it.
RUN_ID_PATTERN = r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$"
RUN_ID_MAX = 128
VERSION_ID_PATTERN = r"^[0-9a-f]{16}$"  # short_hash(): 16 lowercase hex digits
STAGE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN, max_length=RUN_ID_MAX)]


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a safe folder name, else one DataError line naming it."""
    if (
        not isinstance(run_id, str)
        or len(run_id) > RUN_ID_MAX
        or not re.fullmatch(RUN_ID_PATTERN, run_id)
    ):
        raise DataError(
            f"invalid run id {run_id!r}: expected letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit, no '..', at most {RUN_ID_MAX} characters)"
        )
    return run_id


def check_version_id(version_id: str) -> str:
    if not isinstance(version_id, str) or not re.fullmatch(VERSION_ID_PATTERN, version_id):
        raise DataError(f"invalid version id {version_id!r}: expected 16 lowercase hex digits")
    return version_id


def check_stage_name(stage: str) -> str:
    if not isinstance(stage, str) or not re.fullmatch(STAGE_NAME_PATTERN, stage):
        raise DataError(f"invalid stage name {stage!r}: expected lowercase letters and '_'")
    return stage


def inside(path: Path, parent: Path) -> Path:
    """`path` if it resolves (symlinks followed) to somewhere under `parent`'s resolved path."""
    real, base = os.path.realpath(path), os.path.realpath(parent)
    if os.path.commonpath([real, base]) != base or real == base:
        raise DataError(f"{path}: resolves to {real}, outside {base}")
    return path


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


def fingerprint_files(paths: list[Path]) -> str:
    """Content fingerprint of external inputs (user WARC files): names, sizes and sha256."""
    for path in paths:
        try:
            os.stat(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read input file ({exc.strerror})") from None
    try:
        digests = hash_files(paths)
    except OSError as exc:
        raise DataError(f"{exc.filename}: cannot read input file ({exc.strerror})") from None
    entries = [[p.name, p.stat().st_size, d] for p, d in zip(paths, digests, strict=True)]
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
    `root` its local cache (pipeline/store/remote.py); a plain path is used directly.
    """

    root: Path
    remote: str | None = None
    # How reuse checks a committed version against its manifest (run.verify): "sha256" hashes
    # every file, "size" only compares sizes (pipeline/store/integrity.py).
    verify: VerifyMode = "sha256"

    @classmethod
    def at(cls, root: str | Path, verify: str = "sha256") -> Storage:
        mode = check_mode(verify)
        text = str(root)
        if "://" in text:
            from pipeline.store.remote import cache_dir

            return cls(cache_dir(text), text.rstrip("/"), mode)
        return cls(Path(root).expanduser().resolve(), None, mode)

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
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def version_dir(self, stage: str, version_id: str) -> Path:
        """versions/<stage>/<version_id>, after checking both names and where it resolves."""
        path = self.versions_dir / check_stage_name(stage) / check_version_id(version_id)
        return inside(path, self.versions_dir / stage)

    def run_dir(self, run_id: str) -> Path:
        """runs/<run_id>, after checking the id and that the folder resolves under runs/."""
        return inside(self.runs_dir / check_run_id(run_id), self.runs_dir)

    def lock_path(self, stage: str, version_id: str) -> Path:
        """The lock a process holds while it builds this version (removed when it is done)."""
        check_stage_name(stage)
        check_version_id(version_id)
        return self.locks_dir / f"{stage}-{version_id}.lock"

    def report_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "report"

    def has_version(self, stage: str, version_id: str) -> bool:
        """Committed here, or in the remote store (then downloaded into the local cache)."""
        path = self.version_dir(stage, version_id)
        if (path / MANIFEST).is_file():
            return True
        if self.remote is None:
            return False
        from pipeline.store.remote import pull_tree

        return pull_tree(self.remote_url(path), path)

    def publish(self, path: Path) -> None:
        """Upload a committed version or a run record to the remote store, if there is one."""
        if self.remote is None:
            return
        from pipeline.store.remote import push_file, push_tree

        if path.is_dir():
            push_tree(path, self.remote_url(path))
        else:
            push_file(path, self.remote_url(path))

    def manifest(self, stage: str, version_id: str) -> dict[str, Any]:
        return read_json(self.version_dir(stage, version_id) / MANIFEST)

    def work_dir(self, stage: str, version_id: str) -> Path:
        """A stable in-progress folder for long work (training) that may resume after a stop."""
        check_stage_name(stage)
        check_version_id(version_id)
        return self.tmp_dir / f"{stage}-{version_id}"

    def new_tmp_dir(self, stage: str) -> Path:
        """tmp/<label>-<host tag>-<pid>-<random>: unique, and says which process owns it, so
        leftovers of a dead process can be told from a live one's work (see tmp_owner)."""
        path = self.tmp_dir / owned_name(stage)
        path.mkdir(parents=True)
        return path


OWNED_NAME_RE = re.compile(r"^(?P<label>.+)-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{8}$")


def owned_name(label: str) -> str:
    """A name unique to this process and call: <label>-<host tag>-<pid>-<8 random hex>."""
    return f"{label}-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def owner_alive(name: str) -> bool | None:
    """For a name from owned_name(): is its process alive? None if the name says nothing
    (older names) or the owner is on another host."""
    match = OWNED_NAME_RE.match(name)
    if match is None or match["host"] != host_tag():
        return None
    return pid_alive(int(match["pid"]))


def standalone_work_root(output: Path) -> Path:
    """Where `llmforge stage NAME --output OUTPUT` builds before renaming into OUTPUT: beside
    it, unique per command (pid + random), so two commands never share a temp folder."""
    return output.parent / f".{output.name}.{owned_name('work')}.llmforge"


def stale_standalone_roots(output: Path) -> list[Path]:
    """Work folders beside `output` left by `stage` commands that died (same host only)."""
    return [
        path
        for path in sorted(output.parent.glob(f".{output.name}.*.llmforge"))
        if owner_alive(path.name.removeprefix(f".{output.name}.").removesuffix(".llmforge"))
        is False
    ]


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Exclusive, non-waiting lock on a standalone command's output (`<output>.lock` beside
    it): a second command writing the same output fails at once, naming the holder."""
    try:
        lock = exclusive_lock(output.with_name(f"{output.name}.lock"), wait=False)
        lock.__enter__()
    except LockHeld as exc:
        raise DataError(
            f"{output}: another command is writing this output ({describe(exc.owner)}); "
            "wait for it to finish or choose another --output"
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


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
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    return [
        {"path": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size, "sha256": d}
        for path, d in zip(paths, hash_files(paths), strict=True)
    ]


def rebuild_hint(stage: str) -> str:
    return (
        f"rebuild it with --force (`llmforge run --force`, or "
        f"`llmforge stage {stage} --run RUN_ID --force` for this stage alone)"
    )


def find_version(storage: Storage, plan: VersionPlan) -> Version | None:
    """The committed version for `plan`, checked against its manifest; None if not built."""
    if not storage.has_version(plan.stage, plan.version_id):
        return None
    return load_version(storage, plan.stage, plan.version_id)


def load_version(storage: Storage, stage: str, version_id: str) -> Version:
    """A committed version by id, checked against its manifest (`storage.verify`) before any
    use; a clear error if it is missing (deleted or never built) or changed since its commit."""
    if not storage.has_version(stage, version_id):
        raise DataError(f"{stage} version {version_id} not found under {storage.versions_dir}")
    path = storage.version_dir(stage, version_id)
    manifest = storage.manifest(stage, version_id)
    verify_files(path, manifest, storage.verify, rebuild_hint(stage))
    return Version(stage, version_id, path, manifest, True)


def build_version(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Path], StageResult],
    replace: bool = False,
    work_dir: Path | None = None,
) -> Version:
    """Return the version for `plan`, computing it into a temp dir and renaming it into place.

    The rename is the commit: a reader sees either no directory or a complete one with its
    manifest. While building, the process holds the version's lock (`locks/`): a second process
    on this machine planning the same version waits, then reuses the committed copy instead of
    computing it again. Without the lock (another machine sharing the root) the first rename
    wins and the other copy is discarded (same inputs, same output). A `work_dir` (training)
    survives a failure so the work can resume there; the default temp dir does not.
    `replace` (--force) rebuilds even a version that exists or fails its check.
    """
    if not replace and (existing := find_version(storage, plan)) is not None:
        return existing

    def waiting(owner: dict[str, Any] | None) -> None:
        log.warning(
            "%s version %s is being built by %s; waiting for it",
            plan.stage,
            plan.version_id,
            describe(owner),
        )

    with exclusive_lock(storage.lock_path(plan.stage, plan.version_id), on_wait=waiting):
        if not replace and (existing := find_version(storage, plan)) is not None:
            return existing  # committed by the process we waited for
        return _build_locked(storage, plan, compute, replace, work_dir)


def _build_locked(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Path], StageResult],
    replace: bool,
    work_dir: Path | None,
) -> Version:
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
        remember_verified(final)  # just hashed into the manifest: no need to hash it again
        storage.publish(final)
        return Version(plan.stage, plan.version_id, final, manifest, False)
    finally:
        for leftover in (None if work_dir else tmp, replaced):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
