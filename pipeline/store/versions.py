"""The one owner of names under the storage root, and versioned, committed datasets.

The root is a `Folder` (pipeline/store/fs.py): a local path (the default) or a URL such as
`s3://bucket/llmforge`; every read and write goes through it, so a URL root needs no local
mirror. Layout (also in storage/README.md):

    <root>/versions/<stage>/<version_id>/   one immutable dataset version, manifest.json inside
    <root>/runs/<run_id>/run.json           what a pipeline run used and produced

Machine-local state lives in `storage.local`: the root itself for a local root, else
`$LLMFORGE_CACHE/<hash of the URL>` (default ~/.cache/llmforge); it never holds versions:

    <local>/tmp/      local builds (renamed into place when done), training work dirs
    <local>/locks/    a lock per version being built (store/locks.py)
    <local>/prefect/  PREFECT_HOME of the local Prefect server

The commit: on a local root a version is built in tmp/ and renamed into place; on a URL root
(object stores have no rename) it is written at its final prefix and its manifest, written
last, is the commit marker: no manifest, no version. A retry first clears what a failed
build left there, so retrying is idempotent.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import StringConstraints

from pipeline.errors import DataError
from pipeline.stage import StageResult
from pipeline.store.fs import Folder, cache_base, is_url, locate
from pipeline.store.integrity import (
    VerifyMode,
    check_mode,
    hash_names,
    remember_verified,
    verify_files,
)
from pipeline.store.locks import LockHeld, describe, exclusive_lock, host_tag, pid_alive

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


def fingerprint_files(paths: Sequence[str | Path]) -> str:
    """Content fingerprint of external inputs (user WARC or document files, local paths or
    URLs): names, sizes and sha256, so the same files give the same id wherever they live.
    Files are hashed in parallel, a folder at a time."""
    located = [locate(path) for path in paths]
    by_folder: dict[Folder, list[str]] = {}
    for folder, name in located:
        by_folder.setdefault(folder, []).append(name)
    digests: dict[tuple[Folder, str], tuple[int, str]] = {}
    for folder, names in by_folder.items():
        sizes = []
        for name in names:
            try:
                sizes.append(folder.size(name))
            except OSError as exc:
                reason = exc.strerror or "no such file"
                raise DataError(
                    f"{folder.url_of(name)}: cannot read input file ({reason})"
                ) from None
        try:
            hashes = hash_names(folder, names)
        except OSError as exc:
            where = exc.filename or folder.url
            raise DataError(f"{where}: cannot read input file ({exc.strerror or exc})") from None
        for name, size, digest in zip(names, sizes, hashes, strict=True):
            digests[folder, name] = (size, digest)
    return short_hash([[name, *digests[folder, name]] for folder, name in located])


def cache_dir(url: str) -> Path:
    """Machine-local state of a URL root: $LLMFORGE_CACHE (default ~/.cache/llmforge)/<hash>."""
    return (cache_base() / hashlib.sha256(url.encode()).hexdigest()[:12]).resolve()


@dataclass(frozen=True)
class Storage:
    """Names under one storage root. Nothing touches the filesystem until a method is called.

    `root` is where versions and runs live (a local path or a URL); `local` is this machine's
    state for that root (locks, tmp/, prefect/): the root itself when it is local.
    """

    root: Folder
    local: Path
    # How reuse checks a committed version against its manifest (run.verify): "sha256" hashes
    # every file, "size" only compares sizes (pipeline/store/integrity.py).
    verify: VerifyMode = "sha256"

    @classmethod
    def at(cls, root: str | os.PathLike[str] | Folder, verify: str = "sha256") -> Storage:
        mode = check_mode(verify)
        text = root.url if isinstance(root, Folder) else str(root)
        if is_url(text) and not text.startswith("file://"):
            folder = Folder(text)
            return cls(folder, cache_dir(folder.url), mode)
        path = Path(text.removeprefix("file://")).expanduser().resolve()
        return cls(Folder(path), path, mode)

    @property
    def versions(self) -> Folder:
        return self.root / "versions"

    @property
    def runs(self) -> Folder:
        return self.root / "runs"

    @property
    def tmp_dir(self) -> Path:
        return self.local / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.local / "locks"

    @property
    def prefect_home(self) -> Path:
        return self.local / "prefect"

    def _checked(self, folder: Folder, parent: Folder) -> Folder:
        """`folder`, after checking that it resolves under `parent` (local roots: symlinks)."""
        if folder.is_local:
            inside(folder.local_path(), parent.local_path())
        return folder

    def version_folder(self, stage: str, version_id: str) -> Folder:
        """versions/<stage>/<version_id>, after checking both names and where it resolves."""
        parent = self.versions / check_stage_name(stage)
        return self._checked(parent / check_version_id(version_id), parent)

    def run_folder(self, run_id: str) -> Folder:
        """runs/<run_id>, after checking the id and that the folder resolves under runs/."""
        return self._checked(self.runs / check_run_id(run_id), self.runs)

    def report_folder(self, run_id: str) -> Folder:
        return self.run_folder(run_id) / "report"

    def lock_path(self, stage: str, version_id: str) -> Path:
        """The lock a process holds while it builds this version (removed when it is done)."""
        check_stage_name(stage)
        check_version_id(version_id)
        return self.locks_dir / f"{stage}-{version_id}.lock"

    def has_version(self, stage: str, version_id: str) -> bool:
        """Committed: its manifest exists (one metadata call; nothing is downloaded)."""
        return self.version_folder(stage, version_id).is_file(MANIFEST)

    def manifest(self, stage: str, version_id: str) -> dict[str, Any]:
        return self.version_folder(stage, version_id).read_json(MANIFEST)

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
    folder: Folder
    manifest: dict[str, Any]
    reused: bool

    @property
    def path(self) -> Path:
        """The version's local path (local roots only; raises ValueError on a URL root)."""
        return self.folder.local_path()

    def summary(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "version_id": self.version_id,
            "path": self.folder.url,
            "reused": self.reused,
            "counts": self.manifest.get("counts", {}),
        }


def file_entries(folder: Folder) -> list[dict[str, Any]]:
    """path, bytes and sha256 of every file below `folder` but the manifest: one listing, then
    each file streamed through the hash (no local copy of a remote file)."""
    sizes = {name: size for name, size in folder.sizes().items() if name != MANIFEST}
    names = list(sizes)
    return [
        {"path": name, "bytes": sizes[name], "sha256": digest}
        for name, digest in zip(names, hash_names(folder, names), strict=True)
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
    return _checked_version(storage, plan.stage, plan.version_id)


def load_version(storage: Storage, stage: str, version_id: str) -> Version:
    """A committed version by id, checked against its manifest (`storage.verify`) before any
    use; a clear error if it is missing (deleted or never built) or changed since its commit."""
    if not storage.has_version(stage, version_id):
        raise DataError(f"{stage} version {version_id} not found under {storage.versions}")
    return _checked_version(storage, stage, version_id)


def _checked_version(storage: Storage, stage: str, version_id: str) -> Version:
    """A version known to be committed, its files checked against its manifest."""
    folder = storage.version_folder(stage, version_id)
    manifest = folder.read_json(MANIFEST)
    verify_files(folder, manifest, storage.verify, rebuild_hint(stage))
    return Version(stage, version_id, folder, manifest, True)


def build_version(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Folder], StageResult],
    replace: bool = False,
    work_dir: Path | None = None,
    local: bool = False,
) -> Version:
    """Return the version for `plan`, computing it if it is not committed yet.

    `compute` writes into the Folder it is given: on a local root a temp dir renamed into place
    (the rename is the commit); on a URL root the version's final prefix, cleared first, whose
    manifest is written last (the commit marker). Either way a reader sees no version or a
    complete one. While building, the process holds the version's lock (`<local>/locks/`): a
    second process on this machine planning the same version waits, then reuses the committed
    copy. Without the lock (another machine sharing a local root) the first rename wins and the
    other copy is discarded (same inputs, same output); two machines building one version on a
    URL root at once are not guarded against (run one driver per root).

    A `work_dir` (training, a local folder) survives a failure so the work can resume there;
    its files are renamed (local root) or uploaded (URL root) into the version when it is done.
    `local`: `compute` needs a local folder (it writes with libraries that want paths); on a URL
    root it gets a temp folder, uploaded the same way and removed however the build ends.
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
        if storage.root.is_local:
            return _build_local(storage, plan, compute, replace, work_dir)
        if work_dir is None and local:
            scratch = storage.new_tmp_dir(plan.stage)
            try:
                return _build_remote(storage, plan, compute, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return _build_remote(storage, plan, compute, work_dir)


def _manifest(
    plan: VersionPlan, result: StageResult, files: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    return {
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


def _build_local(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Folder], StageResult],
    replace: bool,
    work_dir: Path | None,
) -> Version:
    tmp = work_dir or storage.new_tmp_dir(plan.stage)
    tmp.mkdir(parents=True, exist_ok=True)
    replaced: Path | None = None
    started = time.time()
    try:
        result = compute(Folder(tmp))
        files = file_entries(Folder(tmp))
        manifest = _manifest(plan, result, files, started)
        Folder(tmp).write_json(MANIFEST, manifest)
        final = storage.version_folder(plan.stage, plan.version_id)
        final_path = final.local_path()
        final_path.parent.mkdir(parents=True, exist_ok=True)
        if replace and final_path.exists():
            # --force: move the old copy aside first so readers never see a mix of both.
            replaced = storage.new_tmp_dir(f"{plan.stage}-replaced")
            os.rename(final_path, replaced / plan.version_id)
        try:
            os.rename(tmp, final_path)
        except OSError:
            if not storage.has_version(plan.stage, plan.version_id):
                raise
            return load_version(storage, plan.stage, plan.version_id)
        remember_verified(final)  # just hashed into the manifest: no need to hash it again
        return Version(plan.stage, plan.version_id, final, manifest, False)
    finally:
        for leftover in (None if work_dir else tmp, replaced):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _build_remote(
    storage: Storage,
    plan: VersionPlan,
    compute: Callable[[Folder], StageResult],
    work_dir: Path | None,
) -> Version:
    final = storage.version_folder(plan.stage, plan.version_id)

    def clear() -> None:
        # Whatever is there is a failed build's leftover (no manifest) or, with --force, the
        # old version: un-commit it (manifest first, so no reader sees a mix), then clear it.
        final.remove(MANIFEST)
        final.remove()

    started = time.time()
    if work_dir is None:
        clear()  # shards are written in place (Dask workers write them): the old copy goes now
        result = compute(final)
        files = file_entries(final)
    else:
        work_dir.mkdir(parents=True, exist_ok=True)
        result = compute(Folder(work_dir))
        files = file_entries(Folder(work_dir))  # hashed here, where reading is cheap
        clear()  # only now: a failed or stopped training leaves the old version in place
        final.put_tree(work_dir)
    manifest = _manifest(plan, result, files, started)
    final.write_json(MANIFEST, manifest)  # the commit marker, written last
    remember_verified(final)
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return Version(plan.stage, plan.version_id, final, manifest, False)
