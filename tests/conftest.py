"""Shared test setup: offline tiktoken, a hermetic Prefect home, paths to ../shared/data."""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMFORGE_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: one torch/OpenMP thread each (before torch is
    # imported), or every worker's thread pool spins on every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Before any prefect import: never talk to a user's server, keep state out of ~/.prefect.
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="llmforge-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"


def load_bench(name: str) -> ModuleType:
    """A benchmark script (`bench/<name>.py`, not a package) imported as module `bench_<name>`,
    so tests can check the functions the benchmark measures with."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skipped where it is absent, but CI must have it."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} missing: CI needs ../shared beside the checkout")
        pytest.skip(f"{path} not present")
    return path


def llmforge(
    *args: str,
    cwd: Path = REPO,
    env: dict | None = None,
    timeout: float = 300,
    input: str | None = None,
):
    """Run `python -m flows.cli ARGS` as a user would, this checkout first on the path;
    `input` is its stdin (default: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
