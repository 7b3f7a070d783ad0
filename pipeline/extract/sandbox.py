"""Run a function on one item at a time with a per-item timeout, in a long-lived child process.

HTML extraction is the step where one pathological page can hang a worker for minutes. Like
datatrove's `ExtractorSandbox` (FineWeb), the work runs in a child process fed through a pipe:
on timeout the child is killed and a fresh one is started for the next item, so a stuck page
costs `timeout` seconds and nothing else. The child lives across items, so the per-item cost is
one pickle round trip, not a process start.

    with Sandbox(functools.partial(extract_html, config=cfg), timeout=1.0) as sandbox:
        title, text = sandbox(html, url)  # SandboxTimeout / SandboxError on failure
        sandbox.submit(next_html, next_url)  # the same in two steps: the caller works
        ...                                  # (reads the next page) while the child extracts
        title, text = sandbox.result()

Where no child can be started (inside a daemonic worker, e.g. a multiprocessing.Pool or some
Dask setups) the function runs in-process instead, with SIGALRM as the timeout on the main
thread and no timeout elsewhere; one warning per process says so.

The child dies with its parent, however the parent dies (pipeline/lifeline.py): on Linux by the
kernel's parent-death signal, which is sent when the thread that started the child ends; that
thread is the one using the sandbox, and it closes the sandbox before it moves on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.lifeline import die_with_parent

log = logging.getLogger(__name__)

# Generous: the child only unpickles `fn` (importing its module) before it says it is ready.
_STARTUP_TIMEOUT_S = 60.0
_warned = False  # the in-process fallback is announced once per process


class SandboxTimeout(Exception):
    """The item took longer than the timeout; the child was killed."""


class SandboxError(Exception):
    """The function raised, or the child died; the message names the cause in one line."""


class _Alarm(BaseException):
    """Raised by SIGALRM in in-process mode; a BaseException so `except Exception` can't eat it."""


def _child_main(conn: Any, fn: Callable[..., Any], parent_pid: int) -> None:
    """Child loop: receive an args tuple, send back ("ok", result) or ("error", message)."""
    # A page can keep the child busy for a long time: it must not outlive a killed parent.
    die_with_parent(parent_pid, creating_thread_outlives_child=True)
    # No logging in the child: forked, it would write through the parent's handlers (some, like
    # Prefect's, ship records via threads that do not exist here); failures travel back through
    # the pipe instead. Ctrl-C is the parent's business.
    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Leave the objects inherited from the parent out of garbage collection: collecting them
    # would write to every page that holds one, copying it (fork is copy-on-write). Cut the
    # child's page faults by ~30% and its CPU time by a few % on bench/extract.py's pages.
    gc.freeze()
    conn.send(("ready", None))
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):  # parent went away
            return
        if args is None:
            return
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def _context() -> multiprocessing.context.BaseContext:
    # fork (as datatrove does): the child inherits the imported extractor, starts in
    # milliseconds and needs no `if __name__ == "__main__"` guard in the caller's script. It only
    # runs Python + lxml, never the thread pools (pyarrow, torch) a parent may hold locks in.
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")  # macOS/Windows: fork is unsafe or absent


class Sandbox:
    """Calls `fn(*args)` in a child process with a timeout per call; see the module docstring.

    `fn` must be picklable (a module-level function or a functools.partial of one); it is sent
    once, when the child starts. `mode` is "process", "alarm" or "none" once started.
    """

    def __init__(self, fn: Callable[..., Any], timeout: float):
        self.fn = fn
        self.timeout = timeout
        self.mode: str | None = None
        self.restarts = 0
        self._proc: Any = None
        self._conn: Any = None
        self._pending: tuple[Any, ...] | None = None  # args submitted, result not yet taken
        self._send_error: OSError | SandboxError | None = None
        self._deadline = 0.0  # time.monotonic() by which the pending call must answer

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, *args: Any) -> Any:
        self.submit(*args)
        return self.result()

    def submit(self, *args: Any) -> None:
        """Start `fn(*args)` and return at once; `result()` waits for it. One call at a time:
        the caller can prepare its next item while the child works on this one."""
        if self._pending is not None:
            raise RuntimeError("Sandbox.submit: take the previous call's result() first")
        if self.mode is None:
            self._start()
        self._pending, self._send_error = args, None
        if self.mode != "process":
            return  # run by result(), under SIGALRM
        try:
            if self._proc is None:
                self.restarts += 1
                self._start_child()
            self._deadline = time.monotonic() + self.timeout  # the idle child starts at once
            self._conn.send(args)
        except (OSError, SandboxError) as exc:  # no child to take it: reported by result()
            self._send_error = exc

    def result(self) -> Any:
        """The submitted call's value; SandboxTimeout / SandboxError as the module says."""
        args, self._pending = self._pending, None
        if args is None:
            raise RuntimeError("Sandbox.result: nothing submitted")
        if self.mode != "process":
            return self._call_in_process(args)
        try:
            if self._send_error is not None:
                raise self._send_error
            if not self._conn.poll(max(0.0, self._deadline - time.monotonic())):
                self._kill()
                raise SandboxTimeout(f"no result after {self.timeout:g} s")
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            raise SandboxError(f"sandbox process died (exit code {code}): {exc!r}") from None
        if status == "error":
            raise SandboxError(value)
        return value

    def close(self) -> None:
        """Stop the child: ask politely, then kill."""
        self._pending = None
        if self._proc is None:
            return
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=1.0)
        self._kill()

    def _start(self) -> None:
        try:
            self._start_child()
            self.mode = "process"
        except (AssertionError, OSError, RuntimeError, SandboxError) as exc:
            # AssertionError: "daemonic processes are not allowed to have children".
            on_main = threading.current_thread() is threading.main_thread()
            self.mode = "alarm" if on_main and hasattr(signal, "setitimer") else "none"
            how = "SIGALRM timeout" if self.mode == "alarm" else "NO timeout (not on main thread)"
            global _warned
            level, _warned = (logging.DEBUG if _warned else logging.WARNING), True
            log.log(level, "sandbox: no child process (%s); running in-process, %s", exc, how)

    def _start_child(self) -> None:
        ctx = _context()
        parent_conn, child_conn = ctx.Pipe()
        args = (child_conn, self.fn, os.getpid())
        proc = ctx.Process(target=_child_main, args=args, daemon=True)
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        try:
            ready = parent_conn.poll(_STARTUP_TIMEOUT_S) and parent_conn.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            raise SandboxError("sandbox process did not start")

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._proc.close()
            self._conn.close()
        self._proc = self._conn = None

    def _call_in_process(self, args: tuple[Any, ...]) -> Any:
        if self.mode == "none":
            return self._guarded(args)

        def on_alarm(signum: int, frame: Any) -> None:
            raise _Alarm

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            return self._guarded(args)
        except _Alarm:
            raise SandboxTimeout(f"no result after {self.timeout:g} s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _guarded(self, args: tuple[Any, ...]) -> Any:
        try:
            return self.fn(*args)
        except Exception as exc:
            raise SandboxError(f"{type(exc).__name__}: {exc}") from None
