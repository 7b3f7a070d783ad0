"""A local Prefect server under the storage root, started or reused by the CLI.

Prefect's temporary in-process server records only a fraction of task runs and vanishes at
exit (REFERENCE.md: ~70-100 of 1000 task runs recorded), so a local run starts (or reuses) a
real `prefect server start` on 127.0.0.1 with its database in `<local>/prefect/` (the storage
root, or its cache folder for a URL root: pipeline/store/versions.py), and every
run stays viewable in the UI afterwards. With PREFECT_API_URL set, that server is used instead.
That server is detached on purpose: it outlives the command, for later runs and the UI, until
`llmforge server stop`. Each storage root has its own, so every server started is also noted in
a per-user registry (`$LLMFORGE_CACHE/servers/`, default ~/.cache/llmforge/servers/): `llmforge
server status` lists them all and `llmforge server stop --all` stops them all. Prefect's
temporary server (`--no-server`) instead dies with the command, however the command dies
(`tie_temporary_server`).

This module must not import prefect: it sets the environment Prefect reads at import time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

import pipeline
from pipeline.store.fs import atomic_write, cache_base, dumps_json
from pipeline.store.locks import pid_alive
from pipeline.store.versions import Storage

STATE_FILE = "server.json"
# A fresh database takes ~12 s to become healthy on this machine kind (REFERENCE.md);
# allow for a loaded CI machine.
START_TIMEOUT_S = 120.0

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_environment(storage: Storage) -> None:
    """Keep Prefect's home, profile and database in the storage root's machine-local folder
    (`storage.local`: the root itself, or a cache folder for a URL root); no telemetry."""
    os.environ.setdefault("PREFECT_HOME", str(storage.prefect_home))
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def tie_temporary_server() -> None:
    """Make Prefect's temporary server die with this process, even by SIGKILL.

    Prefect starts it as `python -m uvicorn ...` (prefect.server.api.server.
    SubprocessASGIServer) and stops it from an atexit hook, which a SIGKILL skips (and a SIGTERM
    too, unless handled: pipeline.lifeline.exit_on_signals). Here that module's `subprocess`
    is swapped for one that starts uvicorn through `python -m pipeline.lifeline`; other calls
    pass through. Call before Prefect first talks to its API.
    """
    from prefect.server.api import server as prefect_server

    if not isinstance(prefect_server.subprocess, _TiedSubprocess):
        prefect_server.subprocess = _TiedSubprocess()


class _TiedSubprocess:
    """`subprocess`, except that `Popen([python, "-m", "uvicorn", ...])` runs tied to us."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    def Popen(self, args, **kwargs):  # noqa: N802 - stands in for subprocess.Popen
        args = list(args)
        if args[1:3] == ["-m", "uvicorn"]:
            args = [args[0], "-m", "pipeline.lifeline", str(os.getpid()), *args[1:]]
            env = dict(kwargs.get("env") or os.environ)
            root = str(Path(pipeline.__file__).resolve().parents[1])  # pipeline importable there
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            kwargs["env"] = env
        return subprocess.Popen(args, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _state_path(storage: Storage) -> Path:
    return storage.prefect_home / STATE_FILE


def running_server(storage: Storage) -> dict | None:
    """The server this storage root started earlier, if it still answers."""
    path = _state_path(storage)
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if healthy(state["api_url"]) else None


def start_server(storage: Storage) -> dict:
    """Start `prefect server start` detached (it outlives the CLI) and wait until healthy."""
    storage.prefect_home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(storage.prefect_home), **QUIET_ENV}
    env.pop("PREFECT_API_URL", None)
    # `--port` does not reach the UI's settings: without this its JavaScript calls :4200.
    env["PREFECT_UI_API_URL"] = api_url
    prefect_bin = Path(sys.executable).with_name("prefect")
    command = [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log_path = storage.prefect_home / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited early; see {log_path}")
        if healthy(api_url):
            state = {
                "pid": process.pid,
                "api_url": api_url,
                "ui_url": f"http://127.0.0.1:{port}",
                "log": str(log_path),
            }
            atomic_write(_state_path(storage), dumps_json(state))
            _register(state, port, storage)
            return state
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT_S:.0f} s; see {log_path}")


def ensure_server(storage: Storage) -> dict:
    """Use PREFECT_API_URL if set, else reuse or start the local server; export its URL."""
    configure_environment(storage)
    if api_url := os.environ.get("PREFECT_API_URL"):
        return {"api_url": api_url, "ui_url": os.environ.get("PREFECT_UI_URL", ""), "pid": None}
    state = running_server(storage) or start_server(storage)
    os.environ["PREFECT_API_URL"] = state["api_url"]
    os.environ["PREFECT_UI_URL"] = state["ui_url"]
    return state


def stop_server(storage: Storage) -> bool:
    """Stop the server this storage root started; False if none was running."""
    path = _state_path(storage)
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    stopped = _stop(state)
    path.unlink(missing_ok=True)
    return stopped


def _stop(state: dict) -> bool:
    """SIGTERM the server's process group (it runs in its own session) and wait until it no
    longer answers; forget it in the registry. False if it was gone already."""
    pid = state["pid"]
    (registry_dir() / f"{pid}.json").unlink(missing_ok=True)
    try:
        if os.getpgid(pid) != pid:
            return False  # no longer the session leader we started: the pid was reused
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and healthy(state["api_url"], timeout=0.5):
        time.sleep(0.3)
    return True


def registry_dir() -> Path:
    """Where this user's servers are listed, one `<pid>.json` each: machine-local state, like
    the cache of URL storage roots."""
    return cache_base() / "servers"


def _register(state: dict, port: int, storage: Storage) -> None:
    entry = {
        **state,
        "port": port,
        "root": storage.root.url,
        "prefect_home": str(storage.prefect_home),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write(registry_dir() / f"{state['pid']}.json", dumps_json(entry))


def list_servers() -> list[dict]:
    """Every server this user started that is still running, oldest first, each with `up`
    (whether it answers); entries of servers that are gone are pruned."""
    servers = []
    for path in sorted(registry_dir().glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not an entry of ours (entries are written atomically)
        up = healthy(entry["api_url"], timeout=1.0)
        if not up and not pid_alive(entry["pid"]):
            path.unlink(missing_ok=True)
            continue
        servers.append({**entry, "up": up})
    return sorted(servers, key=lambda entry: entry["started"])


def stop_all_servers() -> list[dict]:
    """Stop every server in the registry (and forget each in its root); the ones stopped."""
    stopped = []
    for entry in list_servers():
        if _stop(entry):
            stopped.append(entry)
        state = Path(entry["prefect_home"]) / STATE_FILE
        try:
            if json.loads(state.read_text())["pid"] == entry["pid"]:
                state.unlink()
        except (OSError, json.JSONDecodeError, KeyError):
            pass  # gone already, or another server's now
    return stopped
