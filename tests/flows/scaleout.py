"""A cluster that shares nothing with the driver, on one machine: the shared-nothing tests' harness.

- `S3Server`: moto in server mode on 127.0.0.1, the only storage driver and workers share.
- `NodeProcess`: a Dask scheduler or worker started as its own process, inside a private mount
  namespace (`unshare --mount`) where the driver's folders (pytest's temp root, the system temp
  dir, the llmforge caches) are covered by empty read-only tmpfs mounts; its working directory,
  `TMPDIR` and `HOME` are a fresh tmpfs of its own. A driver path that leaks into a task fails
  there at once (no such file, or a read-only file system) instead of working by accident.
- `DaskCluster`: one scheduler and N such workers (`--nthreads 1`, no nanny: the worker process
  itself runs the tasks, non-daemonic, so extraction can start its sandbox child).

Every process is tied to the test process (pipeline/lifeline.py) and runs in its own session,
so `stop()` ends it and whatever it started, and a killed pytest leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from flows.server import free_port

REPO = Path(__file__).resolve().parents[2]
BUCKET = "llmforge-test"
STARTUP_S = 90  # moto and a Dask worker import ~1 s of modules each; 2 shared cores are slow
# Environment a node must not inherit: it names the driver's own folders (and so does any
# variable whose value lies in a hidden folder, such as torch's TORCHINDUCTOR_CACHE_DIR, which
# importing torch._dynamo sets in the driver).
DRIVER_ONLY_ENV = ("LLMFORGE_CACHE", "PREFECT_HOME", "TMPDIR", "TEMP", "TMP", "PWD", "OLDPWD")


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"not listening on 127.0.0.1:{port} after {timeout:.0f} s: {tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def module_command(module: str, *args: str) -> list[str]:
    """`python -m module args`, ended when the test process ends however it ends."""
    return [sys.executable, "-m", "pipeline.lifeline", str(os.getpid()), "-m", module, *args]


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process's session (it and its children), then SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their leader too
    process.wait()


class S3Server:
    """moto's S3 on 127.0.0.1 with one bucket; `env` is what every client needs."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "moto.log"
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # botocore's own setting, so s3fs, boto3 and the aws CLI all use it; s3fs also
            # reads FSSPEC_S3_ENDPOINT_URL, but only when fsspec is imported after it is set.
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                module_command("moto.server", "-H", "127.0.0.1", "-p", str(self.port)),
                cwd=log_dir,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.process, self.log, STARTUP_S)
        except RuntimeError:
            stop(self.process)
            raise

    def filesystem(self):
        """An s3fs filesystem on this server (not fsspec's cached instance)."""
        import s3fs

        return s3fs.S3FileSystem(
            key="testing",
            secret="testing",
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def make_bucket(self, name: str = BUCKET) -> str:
        self.filesystem().mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        stop(self.process)


def needed_paths() -> list[Path]:
    """What a node must still see: this checkout, the Python installation, shared data."""
    paths = [REPO, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        paths.append(Path(os.environ["TIKTOKEN_CACHE_DIR"]))
    return [p.resolve() for p in paths]


def driver_folders(*extra: Path) -> list[Path]:
    """The driver's folders a node must not see: the system temp dir (pytest's temp root and
    every driver temp file live there by default), the llmforge caches, and `extra` (the
    test's storage roots). A folder that holds this checkout or Python itself cannot be
    covered, so it is left out; then `extra` must name the driver's folders one by one."""
    candidates = [Path(tempfile.gettempdir()), Path.home() / ".cache" / "llmforge", *extra]
    if os.environ.get("LLMFORGE_CACHE"):
        candidates.append(Path(os.environ["LLMFORGE_CACHE"]))
    needed = needed_paths()
    hidden: list[Path] = []
    for path in sorted({p.resolve() for p in candidates if p.is_dir()}, key=lambda p: len(p.parts)):
        if any(n == path or path in n.parents for n in needed):
            continue
        if any(h == path or h in path.parents for h in hidden):
            continue  # already covered by a folder above it
        hidden.append(path)
    return hidden


def isolation_problem() -> str | None:
    """Why private mount namespaces cannot be made here (None: they can)."""
    trial = f"mount -t tmpfs trial {shlex.quote(tempfile.gettempdir())}"
    try:
        done = subprocess.run(
            [*unshare_prefix(), "sh", "-c", trial],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare: {exc}"
    return None if done.returncode == 0 else f"unshare --mount: {done.stderr.strip()}"


def unshare_prefix() -> list[str]:
    """A private mount namespace; an unprivileged user also gets a user namespace (as root in
    it), which lets it mount tmpfs."""
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", "--propagation", "private", *user]


def isolated(command: list[str], node: Path, hidden: Iterable[Path]) -> list[str]:
    """`command` in a private mount namespace: each hidden folder covered by an empty read-only
    tmpfs; `node` a fresh tmpfs holding the process's home/, tmp/ and work/ (its cwd)."""
    hidden = [str(p) for p in hidden]
    lines = ["set -e"]
    lines += [
        f"mount -t tmpfs -o size=1m,mode=0755 llmforge-hidden {shlex.quote(p)}" for p in hidden
    ]
    q = shlex.quote(str(node))
    lines += [
        f"mkdir -p {q}",
        f"mount -t tmpfs -o mode=0700 llmforge-node {q}",
        f"mkdir {q}/home {q}/tmp {q}/work",
    ]
    lines += [f"mount -o remount,ro {shlex.quote(p)}" for p in hidden]
    lines += [
        f"cd {q}/work",
        f"export HOME={q}/home TMPDIR={q}/tmp PREFECT_HOME={q}/home/.prefect",
        'exec "$@"',
    ]
    return [*unshare_prefix(), "sh", "-c", "\n".join(lines), "sh", *command]


class NodeProcess:
    """One process of the cluster, isolated from the driver's disk (see `isolated`)."""

    def __init__(self, name: str, command: list[str], hidden: list[Path], env: dict, logs: Path):
        self.name = name
        self.node = Path(tempfile.gettempdir()) / f"llmforge-{name}-{secrets.token_hex(4)}"
        self.log = logs / f"{name}.log"
        clean = {
            key: value
            for key, value in env.items()
            if key not in DRIVER_ONLY_ENV and not any(value.startswith(str(h)) for h in hidden)
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                isolated(command, self.node, hidden),
                cwd="/",
                env={**clean, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        stop(self.process)
        with contextlib.suppress(OSError):
            self.node.rmdir()  # the empty mount point, where the temp dir was not hidden


class DaskCluster:
    """A scheduler and `workers` single-threaded workers, each a `NodeProcess`."""

    def __init__(self, workers: int, hidden: list[Path], env: dict, logs: Path):
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.nodes: list[NodeProcess] = []
        env = {**env, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        try:
            scheduler = module_command(
                "distributed.cli.dask_scheduler",
                *("--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"),
            )
            self.nodes.append(NodeProcess("scheduler", scheduler, hidden, env, logs))
            wait_for_port(self.port, self.nodes[0].process, self.nodes[0].log, STARTUP_S)
            for index in range(workers):
                worker = module_command(
                    "distributed.cli.dask_worker",
                    self.address,
                    *("--nthreads", "1", "--no-nanny", "--no-dashboard"),
                    *("--host", "127.0.0.1", "--name", f"worker-{index}"),
                )
                self.nodes.append(NodeProcess(f"worker-{index}", worker, hidden, env, logs))
            self.wait_for_workers(workers)
        except BaseException:
            self.stop()
            raise

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=STARTUP_S) as client:
            try:
                client.wait_for_workers(count, timeout=STARTUP_S)
            except TimeoutError:
                logs = "\n".join(f"{n.name}: {tail(n.log, 1500)}" for n in self.nodes)
                raise RuntimeError(f"{count} Dask workers did not join: {logs}") from None

    @contextlib.contextmanager
    def client(self) -> Iterator:
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=STARTUP_S) as client:
            yield client

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def probe(paths: list[str]) -> dict:
    """Run on a worker: what it sees of the driver's paths, and where its own folders are."""
    return {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "home": str(Path.home()),
        "tmp": tempfile.gettempdir(),
        "sees": {path: os.path.exists(path) for path in paths},
    }


def try_write(path: str) -> str:
    """Run on a worker: write a file into a driver folder; the error it meets, or "written"."""
    try:
        Path(path).write_text("from a worker")
    except OSError as exc:
        return type(exc).__name__
    return "written"


def training_report(out: str) -> None:
    """Run in a node after training: print what the driver cannot see (the run folder is in
    the node's own tmpfs) as one JSON line."""
    import json

    from model.checkpoint import load_checkpoint

    run = Path(out)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    state = load_checkpoint(run / "checkpoint.pt")
    report = {
        "files": sorted(p.name for p in run.iterdir()),
        "losses": [row["loss"] for row in rows if "loss" in row],
        "checkpoint_step": state["step"],
        "checkpoint_world_size": state["world_size"],
        "checkpoint_ranks": len(state["ranks"]),
    }
    print(json.dumps(report))
