"""Check a committed version's files against its manifest before anything reuses it.

    verify_files(folder, manifest, mode="sha256", rebuild="rebuild it with --force")

`folder` is a `Folder` (pipeline/store/fs.py): a local version or one on an object store.

A version's manifest lists every file with its size and sha256 (written at commit). Reuse
trusts the folder only if it still matches: no file missing, none added, every size equal and,
in the default `sha256` mode, every hash equal. `size` mode only lists the files (one listing
call): it catches truncation, a partial copy or a replaced shard of another size, and misses an
edit that keeps the size (a flipped byte). A mismatch is one DataError line naming the file and
what differs.

Hashing reads in 1 MiB chunks on a thread pool (remote files are streamed, never copied whole):
hashlib releases the GIL on large buffers, so threads hash files in parallel. Results are cached
per process, keyed by the folder's URL and every file's size and change stamp (mtime and inode
locally, ETag or creation time remotely), so one run checks each version once, and a file
changed since (even by this process) is checked again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from pipeline.errors import DataError
from pipeline.store.fs import Folder

VerifyMode = Literal["sha256", "size"]
VERIFY_MODES: tuple[str, ...] = ("sha256", "size")
MANIFEST = "manifest.json"
CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib drops the GIL, small in memory
# Threads for hashing: enough to keep a few disks busy; a 2-core machine gets 2.
MAX_HASH_THREADS = 8
T = TypeVar("T")


class IntegrityError(DataError):
    """A committed version no longer matches its manifest."""


def file_sha256(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _each(function: Callable[[T], str], items: Sequence[T], workers: int | None) -> list[str]:
    """`function` of each item, in order, on up to `workers` threads (default: one per core)."""
    workers = min(len(items), workers or os.cpu_count() or 1, MAX_HASH_THREADS)
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="sha256") as pool:
        return list(pool.map(function, items))


def check_mode(mode: str) -> VerifyMode:
    if mode not in VERIFY_MODES:
        raise DataError(f"verify mode '{mode}': expected one of {', '.join(VERIFY_MODES)}")
    return mode  # type: ignore[return-value]


# folder URL -> (mode it passed, listing signature when it passed). Per process, never persisted.
_verified: dict[str, tuple[str, tuple]] = {}
_verified_lock = threading.Lock()


def clear_cache() -> None:
    """Forget what this process verified (benchmarks and tests)."""
    with _verified_lock:
        _verified.clear()


def hash_names(folder: Folder, names: Sequence[str], workers: int | None = None) -> list[str]:
    """sha256 of each named file of `folder`, in order, hashed in parallel: a local file is
    read from disk, a remote one streamed (never copied whole)."""

    def one(name: str) -> str:
        return file_sha256(folder.local_path(name)) if folder.is_local else folder.sha256(name)

    return _each(one, names, workers)


def _present_files(folder: Folder) -> dict[str, dict[str, Any]]:
    """Every file below `folder` except the manifest, by relative path (one listing)."""
    return {rel: info for rel, info in folder.infos().items() if rel != MANIFEST}


def _signature(present: dict[str, dict[str, Any]]) -> tuple:
    """What changes when any file changes: size and a change stamp (mtime and inode locally;
    ETag, modification or creation time on object stores and in memory)."""
    stamps = ("mtime", "ino", "ETag", "LastModified", "mtime_ns", "created")
    return tuple(
        (rel, info.get("size"), *(str(info.get(k)) for k in stamps))
        for rel, info in sorted(present.items())
    )


def remember_verified(folder: Folder) -> None:
    """Record a version this process has just hashed and committed as verified, so reading it
    back in the same run costs one listing, not a second hash."""
    with _verified_lock:
        _verified[folder.url] = ("sha256", _signature(_present_files(folder)))


def verify_files(folder: Folder, manifest: dict[str, Any], mode: str, rebuild: str) -> None:
    """Raise IntegrityError unless `folder` holds exactly the manifest's files, unchanged;
    `rebuild` (how to fix it) ends the error line."""
    mode = check_mode(mode)
    where = folder.url_of(MANIFEST)
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise IntegrityError(f"{where}: lists no files to check; {rebuild}")
    listed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rel = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or ".." in parts:
            raise IntegrityError(f"{where}: bad file path {rel!r}; {rebuild}")
        listed[rel] = entry

    present = _present_files(folder)
    signature = _signature(present)
    with _verified_lock:
        cached = _verified.get(folder.url)
    if cached is not None and cached[1] == signature and (cached[0] == "sha256" or mode == "size"):
        return

    for rel, entry in listed.items():
        if rel not in present:
            raise IntegrityError(f"{folder.url_of(rel)}: missing (listed in {MANIFEST}); {rebuild}")
        size = present[rel].get("size")
        if size != entry.get("bytes"):
            raise IntegrityError(
                f"{folder.url_of(rel)}: {size} bytes, {MANIFEST} says "
                f"{entry.get('bytes')} (changed after commit); {rebuild}"
            )
    for rel in present:
        if rel not in listed:
            raise IntegrityError(
                f"{folder.url_of(rel)}: not listed in {MANIFEST} (added after commit); {rebuild}"
            )
    if mode == "sha256":
        names = list(listed)
        for rel, digest in zip(names, hash_names(folder, names), strict=True):
            if digest != listed[rel].get("sha256"):
                raise IntegrityError(
                    f"{folder.url_of(rel)}: sha256 differs from {MANIFEST} (changed after "
                    f"commit); {rebuild}"
                )
    with _verified_lock:
        _verified[folder.url] = (mode, signature)
