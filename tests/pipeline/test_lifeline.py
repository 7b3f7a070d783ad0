"""pipeline/lifeline.py: children end with their parent, and SIGTERM runs cleanups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.lifeline import POLL_S

ROOT = Path(__file__).resolve().parents[2]

# A parent that starts a child tied to it by `mode`, prints the child's pid, and sleeps.
PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, sys, time
from pipeline.lifeline import die_with_parent
how = die_with_parent(int(sys.argv[1]), creating_thread_outlives_child=sys.argv[2] == "pdeathsig")
assert how == sys.argv[2], how
print("tied", flush=True)
time.sleep(120)
''', str(os.getpid()), sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "tied"
print(child.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"  # a zombie is dead: the container's init may never reap it


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("mode", ["poll", "pdeathsig"])
def test_child_dies_when_its_parent_is_killed(mode):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()  # SIGKILL: no cleanup of any kind in the parent
        parent.wait()
        deadline = time.monotonic() + POLL_S + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        parent.kill()
        parent.wait()


# A command with a multiprocessing child, a `finally` block and an atexit hook.
COMMAND = """
import atexit, multiprocessing, sys, time
from pipeline.lifeline import exit_on_signals

def work():
    time.sleep(120)

if __name__ == "__main__":
    exit_on_signals()
    atexit.register(lambda: print("atexit", flush=True))
    worker = multiprocessing.get_context("spawn").Process(target=work)
    worker.start()
    try:
        print(worker.pid, flush=True)  # inside `try`: the test signals as soon as it reads this
        time.sleep(120)
    finally:
        print("finally", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_kills_workers_and_runs_cleanups(signum, tmp_path):
    script = tmp_path / "command.py"
    script.write_text(COMMAND)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        worker = int(proc.stdout.readline())
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signum
        assert out.split() == ["finally", "atexit"]
        assert not alive(worker)
    finally:
        proc.kill()
        proc.wait()
