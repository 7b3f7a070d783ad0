"""Child processes that end with their parent, however the parent ends (even by SIGKILL).

A killed process's children are not killed with it: they are handed to init and run on, each
holding its memory (pool workers seen alive 49 s after a `kill -9`, ~250 MB each). Two ways to
tie a child to its parent, called first thing in the child:

- `die_with_parent(pid)`: a daemon thread checks every `POLL_S` seconds that the parent is
  still its parent (after the parent dies, `os.getppid()` names init or a subreaper), then
  SIGTERMs this process and, after `GRACE_S`, exits hard. Any platform, any thread.
- `die_with_parent(pid, creating_thread_outlives_child=True)`: on Linux, the kernel's parent-death
  signal (`prctl(PR_SET_PDEATHSIG, SIGKILL)`), at once and with no thread. Linux sends it when
  the *thread* that started the child ends, not the process, so it is only right where that
  thread waits for the child (the extraction sandbox); elsewhere, and on other systems, the
  polling thread is used.

Servers started through a module (Prefect's temporary API server is `python -m uvicorn`) get
the same tie by being run through this module:

    python -m pipeline.lifeline PARENT_PID -m uvicorn ARGS...

And a command that is asked to stop (SIGTERM, SIGHUP) must stop its children itself: Python's
default is to die at once, skipping `finally` blocks and atexit hooks (which stop Prefect's
temporary server). `exit_on_signals()` turns those signals into SystemExit after killing the
process pool's workers (which would otherwise finish their shards first).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import runpy
import signal
import sys
import threading
import time

POLL_S = 0.5  # how soon an orphan notices; the thread costs a wake-up per poll, nothing else
GRACE_S = 5.0  # time to stop cleanly after SIGTERM (a server closes its database)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, *, creating_thread_outlives_child: bool = False) -> str:
    """Tie this process to `parent_pid` (the parent's `os.getpid()`, taken before starting this
    child, so a parent that died already is noticed too). Returns how: "pdeathsig" or "poll"."""
    if creating_thread_outlives_child and sys.platform == "linux" and _set_pdeathsig():
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
        return "pdeathsig"
    thread = threading.Thread(target=_watch, args=(parent_pid,), name="lifeline", daemon=True)
    thread.start()
    return "poll"


def pool_worker(parent_pid: int) -> None:
    """Initializer of process-pool workers: Ctrl-C (SIGINT to the whole process group) is the
    parent's to handle, which stops the pool; a worker that took it too would print its own
    KeyboardInterrupt traceback. Then tied to the parent like every child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def _set_pdeathsig() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(1)  # SIGTERM was handled but did not end us


def exit_on_signals() -> None:
    """In the main thread of a command: on SIGTERM or SIGHUP, kill this process's multiprocessing
    children (pool workers; their own children follow them) and raise SystemExit(128 + signal),
    so `finally` blocks and atexit hooks run. A forked child inheriting the handler dies as if
    it had none."""
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for child in multiprocessing.active_children():
            child.kill()
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def main(argv: list[str]) -> None:
    """`python -m pipeline.lifeline PARENT_PID -m MODULE ARGS...`: run MODULE as `python -m`
    would, tied to PARENT_PID."""
    if len(argv) < 3 or argv[1] != "-m":
        raise SystemExit("usage: python -m pipeline.lifeline PARENT_PID -m MODULE [ARGS...]")
    die_with_parent(int(argv[0]))
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
