"""Who owns what: exclusive file locks and "is that process still alive?" checks.

    with exclusive_lock(root / "locks" / "filter-0123456789abcdef.lock", wait=True):
        ...  # only one process on this machine builds that version at a time

Locks are `fcntl.flock` on a small file that holds the owner's pid, host and start time. The
kernel drops a lock when its process dies, however it dies (SIGKILL included), so a crash
never leaves a lock held. Linux/macOS only; on NFS, Linux emulates flock with POSIX locks.

A process is identified by host name, pid and the pid's start time from /proc (so a recycled
pid is not mistaken for the old process). Whether a process on another host is alive cannot
be told from here: `alive` answers None and callers keep what they cannot judge.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import DataError


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] here is field 3
    except (IndexError, ValueError):
        return None


def this_process() -> dict[str, Any]:
    """What identifies this process to others: host, pid, pid start ticks, and a wall time."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _start_ticks(os.getpid()),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def host_tag(host: str | None = None) -> str:
    """8 hex digits naming a host in file names (tmp/<label>-<host tag>-<pid>-<random>)."""
    return hashlib.sha256((host or socket.gethostname()).encode()).hexdigest()[:8]


def pid_alive(pid: int, pid_start: int | None = None) -> bool:
    """Whether process `pid` on this host is running (and is the one that started at
    `pid_start` ticks, when given and /proc can tell)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    if pid_start is not None:
        now = _start_ticks(pid)
        if now is not None and now != pid_start:
            return False  # the pid was recycled by a newer process
    with contextlib.suppress(OSError):
        # A zombie (exited, not yet reaped by its parent) still answers kill(0).
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state in ("Z", "X"):
            return False
    return True


def alive(owner: dict[str, Any] | None) -> bool | None:
    """True/False for an owner recorded on this host; None when unknown (another host, or
    nothing recorded)."""
    if not owner or not isinstance(owner.get("pid"), int):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    return pid_alive(owner["pid"], owner.get("pid_start"))


def describe(owner: dict[str, Any] | None) -> str:
    """'pid 1234 on host-a since 2026-12-05T01:02:03+00:00' (or 'another process')."""
    if not owner or "pid" not in owner:
        return "another process"
    text = f"pid {owner['pid']}"
    if owner.get("host"):
        text += f" on {owner['host']}"
    if owner.get("since"):
        text += f" since {owner['since']}"
    return text


class LockHeld(DataError):
    """Another process holds the lock (and the caller asked not to wait)."""

    def __init__(self, path: Path, owner: dict[str, Any] | None):
        super().__init__(f"{path}: locked by {describe(owner)}")
        self.path = path
        self.owner = owner


def _read_owner(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        owner = json.loads(data.decode()) if data else None
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


@contextlib.contextmanager
def exclusive_lock(
    path: Path,
    wait: bool = True,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent); the file is removed on release.

    `wait=False` raises LockHeld at once if another process holds it; `wait=True` calls
    `on_wait(owner)` once and blocks until the holder releases or dies. Removing the file on
    release is safe because every acquirer checks, once locked, that `path` still names the
    file it locked, and starts over if not.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                if not wait:
                    raise LockHeld(path, owner) from None
                if on_wait is not None:
                    on_wait(owner)
                    on_wait = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder removed (and maybe someone recreated) it: lock the new file
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(this_process()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
