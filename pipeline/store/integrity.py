"""Check a committed version's files against its manifest before anything reuses it.

    verify_files(folder, manifest, mode="sha256", rebuild="rebuild it with --force")

A version's manifest lists every file with its size and sha256 (written at commit). Reuse
trusts the folder only if it still matches: no file missing, none added, every size equal and,
in the default `sha256` mode, every hash equal. `size` mode only stats the files: it catches
truncation, a partial copy or a replaced shard of another size, and misses an edit that keeps
the size (a flipped byte). A mismatch is one DataError line naming the file and what differs.

Hashing reads in 1 MiB chunks on a thread pool: hashlib releases the GIL on large buffers, so
threads hash files in parallel. Results are cached per process, keyed by the folder and every
file's (size, mtime, inode), so one run checks each version once, and a file changed since
(even by this process) is checked again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pipeline.errors import DataError

VerifyMode = Literal["sha256", "size"]
VERIFY_MODES: tuple[str, ...] = ("sha256", "size")
MANIFEST = "manifest.json"
CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib drops the GIL, small in memory
# Threads for hashing: enough to keep a few disks busy; a 2-core machine gets 2.
MAX_HASH_THREADS = 8


class IntegrityError(DataError):
    """A committed version no longer matches its manifest."""


def file_sha256(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_files(paths: Sequence[Path], workers: int | None = None) -> list[str]:
    """sha256 of each file, in order, on up to `workers` threads (default: one per core)."""
    workers = min(len(paths), workers or os.cpu_count() or 1, MAX_HASH_THREADS)
    if workers <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(workers, thread_name_prefix="sha256") as pool:
        return list(pool.map(file_sha256, paths))


def check_mode(mode: str) -> VerifyMode:
    if mode not in VERIFY_MODES:
        raise DataError(f"verify mode '{mode}': expected one of {', '.join(VERIFY_MODES)}")
    return mode  # type: ignore[return-value]


# folder -> (mode it passed, stat signature when it passed). Per process, never persisted.
_verified: dict[str, tuple[str, tuple]] = {}
_verified_lock = threading.Lock()


def clear_cache() -> None:
    """Forget what this process verified (benchmarks and tests)."""
    with _verified_lock:
        _verified.clear()


def _present_files(folder: Path) -> dict[str, os.stat_result]:
    """Every regular file under `folder` except the manifest, by posix relative path."""
    found: dict[str, os.stat_result] = {}
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(current, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if rel == MANIFEST:
                continue
            try:
                info = os.stat(full)
            except FileNotFoundError:
                continue
            found[rel] = info
    return found


def remember_verified(folder: Path) -> None:
    """Record a version this process has just hashed and committed as verified, so reading it
    back in the same run costs a stat per file, not a second hash."""
    with _verified_lock:
        _verified[str(folder)] = ("sha256", _signature(_present_files(folder)))


def _signature(present: dict[str, os.stat_result]) -> tuple:
    return tuple(
        (rel, info.st_size, info.st_mtime_ns, info.st_ino) for rel, info in sorted(present.items())
    )


def verify_files(folder: Path, manifest: dict[str, Any], mode: str, rebuild: str) -> None:
    """Raise IntegrityError unless `folder` holds exactly the manifest's files, unchanged;
    `rebuild` (how to fix it) ends the error line."""
    mode = check_mode(mode)
    entries = manifest.get("files")
    if not isinstance(entries, list):
        raise IntegrityError(f"{folder / MANIFEST}: lists no files to check; {rebuild}")
    listed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rel = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or ".." in parts:
            raise IntegrityError(f"{folder / MANIFEST}: bad file path {rel!r}; {rebuild}")
        listed[rel] = entry

    present = _present_files(folder)
    signature = _signature(present)
    key = str(folder)
    with _verified_lock:
        cached = _verified.get(key)
    if cached is not None and cached[1] == signature and (cached[0] == "sha256" or mode == "size"):
        return

    for rel, entry in listed.items():
        if rel not in present:
            raise IntegrityError(f"{folder / rel}: missing (listed in {MANIFEST}); {rebuild}")
        if present[rel].st_size != entry.get("bytes"):
            raise IntegrityError(
                f"{folder / rel}: {present[rel].st_size} bytes, {MANIFEST} says "
                f"{entry.get('bytes')} (changed after commit); {rebuild}"
            )
    for rel in present:
        if rel not in listed:
            raise IntegrityError(
                f"{folder / rel}: not listed in {MANIFEST} (added after commit); {rebuild}"
            )
    if mode == "sha256":
        names = list(listed)
        digests = hash_files([folder / rel for rel in names])
        for rel, digest in zip(names, digests, strict=True):
            if digest != listed[rel].get("sha256"):
                raise IntegrityError(
                    f"{folder / rel}: sha256 differs from {MANIFEST} (changed after commit); "
                    f"{rebuild}"
                )
    with _verified_lock:
        _verified[key] = (mode, signature)
