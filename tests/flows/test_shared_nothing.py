"""Scale-out that shares nothing: an S3 store (moto on 127.0.0.1), a Dask scheduler and two
workers that cannot see the driver's disk (tests/flows/scaleout.py), the data half run there
byte-identical to a local run, and torchrun training that reads its tokens from the store."""

import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.store.fs import Folder
from tests.flows.conftest import DATA_HALF, site_config
from tests.flows.scaleout import (
    DaskCluster,
    NodeProcess,
    S3Server,
    driver_folders,
    isolation_problem,
    probe,
    tail,
    try_write,
)
from tests.model.conftest import small_cfg, write_token_dataset

pytestmark = pytest.mark.slow

DATA_STAGES = ["crawl", "extract", "filter", "dedup", "tokenize"]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 on a free port with one bucket; this process's S3 clients point at it."""
    server = S3Server(tmp_path_factory.mktemp("s3-server"))
    try:
        bucket = server.make_bucket()
        with pytest.MonkeyPatch.context() as patch:
            for key, value in server.env.items():
                patch.setenv(key, value)
            yield server, bucket
    finally:
        server.stop()
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # cached clients hold this server's endpoint


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    """The driver folders no node may see (pytest's temp root, the temp dir, the caches)."""
    problem = isolation_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs private mount namespaces: {problem}")
        pytest.skip(f"no private mount namespace here: {problem}")
    return driver_folders(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def cluster(prefect_api, s3, hidden, tmp_path_factory):
    """A scheduler and two workers as separate, isolated processes (Prefect reports to the
    test's server: PREFECT_API_URL is in the environment they inherit)."""
    server, _ = s3
    logs = tmp_path_factory.mktemp("cluster-logs")
    cluster = DaskCluster(2, hidden, {**os.environ, **server.env}, logs)
    yield cluster
    cluster.stop()


def test_nodes_see_the_store_and_nothing_of_the_driver(cluster, s3, hidden, tmp_path):
    _, bucket = s3
    driver_file = tmp_path / "driver-only.txt"
    driver_file.write_text("the driver's")
    with tempfile.NamedTemporaryFile(prefix="llmforge-driver-") as temp:
        paths = [str(driver_file), str(tmp_path)]
        if Path(tempfile.gettempdir()).resolve() in hidden:  # not when it holds this checkout
            paths.append(temp.name)
        assert all(Path(p).exists() for p in paths)  # the driver sees them
        with cluster.client() as client:
            seen = client.run(probe, paths)
            written = client.run(try_write, str(tmp_path / "from-a-worker.txt"))
            read = client.submit(Path.read_text, driver_file, pure=False)
            with pytest.raises(FileNotFoundError):
                read.result(timeout=60)
            store = Folder(f"{bucket}/probe")
            store.write_bytes("hello.txt", b"from the driver")
            fetched = client.submit(store.read_bytes, "hello.txt", pure=False).result(timeout=60)
    assert len(seen) == 2
    for worker in seen.values():
        assert not any(worker["sees"].values()), worker
    assert all(result != "written" for result in written.values()), written
    assert not (tmp_path / "from-a-worker.txt").exists()
    # Each worker has its own home, temp dir and working directory; none is the driver's.
    for key, driver in (("home", Path.home()), ("tmp", tempfile.gettempdir()), ("cwd", Path.cwd())):
        own = {worker[key] for worker in seen.values()}
        assert len(own) == 2 and str(driver) not in own, (key, own)
    assert fetched == b"from the driver"


def _config(root, base_url, *overrides):
    # crawl.max_pages: about half the sample site, and every stage still keeps some.
    return site_config(root, base_url, *DATA_HALF, "crawl.max_pages=30", *overrides)


def _files(manifest):
    return {f["path"]: f["sha256"] for f in manifest["files"] if f["path"] != "manifest.json"}


def _tasks_run(client) -> dict:
    return client.run(lambda dask_worker: dask_worker.state.transition_counter)


def test_data_half_on_s3_and_dask_equals_a_local_run(
    prefect_api, sample_site, s3, cluster, tmp_path, monkeypatch
):
    base_url, _ = sample_site
    _, bucket = s3
    monkeypatch.chdir(tmp_path)  # the driver's working directory: hidden from every node
    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "driver-cache"))
    store = Folder(f"{bucket}/llmforge")
    on_cluster = ["run.executor=dask", f'run.dask_address="{cluster.address}"']
    with cluster.client() as client:
        before = _tasks_run(client)
        remote = pipeline_flow(_config(store.url, base_url, *on_cluster), "on-s3")
        after = _tasks_run(client)
    assert remote["status"] == "completed" and list(remote["versions"]) == DATA_STAGES
    assert all(after[w] > before[w] for w in before), "every worker ran shard tasks"
    assert store.read_json("runs/on-s3/run.json")["status"] == "completed"
    # The data report is written into the store too, and says the run completed.
    assert remote["artifacts"]["report.md"] == store.url_of("runs/on-s3/report/report.md")
    assert "| status | completed |" in store.read_text("runs/on-s3/report/report.md")
    # The store is the only copy: nothing of a version was mirrored into the driver's cache.
    assert not list((tmp_path / "driver-cache").rglob("*.parquet"))

    # The local run reads the same WARC bytes (two crawls differ in their timestamps): the
    # crawl version is copied down from the store under its id, and reused.
    local_root = tmp_path / "local"
    crawl_id = remote["versions"]["crawl"]["version_id"]
    store.get(f"versions/crawl/{crawl_id}", local_root / "versions" / "crawl" / crawl_id)
    local = pipeline_flow(_config(local_root, base_url), "local")
    assert local["versions"]["crawl"]["reused"]
    for stage in DATA_STAGES:
        a, b = local["versions"][stage], remote["versions"][stage]
        assert a["version_id"] == b["version_id"], stage
        here = Folder(local_root / "versions" / stage / a["version_id"])
        there = store / f"versions/{stage}/{b['version_id']}"
        files = _files(here.read_json("manifest.json"))
        assert files and files == _files(there.read_json("manifest.json")), stage
        assert set(here.sizes()) == set(there.sizes()), stage
        for name in files:
            assert here.read_bytes(name) == there.read_bytes(name), (stage, name)


def test_torchrun_trains_from_the_store(s3, hidden, tmp_path):
    """Two gloo ranks in an isolated node read a token dataset that exists only in the store."""
    server, bucket = s3
    docs = [[(5 * i + j) % 97 for j in range(40 + i % 13)] for i in range(120)]  # ~5,500 tokens
    local = write_token_dataset(tmp_path / "tokens", docs, docs[:12], version_id="tiny-tokens")
    version = Folder(f"{bucket}/llmforge/versions/tokenize/tiny-tokens")
    version.put_tree(local, last=("manifest.json",))  # the manifest last: the commit marker
    assert any(h == tmp_path or h in tmp_path.parents for h in hidden)  # the local copy is not
    sets = small_cfg(max_steps=6, warmup_steps=2, eval_interval=3, checkpoint_interval=3)
    sets = sets.model_dump(exclude_defaults=True) | {"batch_size": 2, "eval_tokens": 256}
    train = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "model.train_cli"]
    train += ["--tokens", version.url, "--out", "run"]
    train += [f"--set={key}={json.dumps(value)}" for key, value in sets.items()]
    report = [
        sys.executable,
        "-c",
        "from tests.flows.scaleout import training_report as r; r('run')",
    ]
    script = f"{shlex.join(train)} && {shlex.join(report)}"
    env = {**os.environ, **server.env, "OMP_NUM_THREADS": "1"}
    node = NodeProcess("torchrun", ["sh", "-c", script], hidden, env, tmp_path)
    try:
        node.process.wait(timeout=240)
    finally:
        node.stop()
    log = node.log.read_text()
    assert node.process.returncode == 0, tail(node.log)
    summary, report_line = [json.loads(line) for line in log.splitlines() if line.startswith("{")][
        -2:
    ]
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert report_line["checkpoint_step"] == 6 and report_line["checkpoint_ranks"] == 2
    assert "checkpoint.pt" in report_line["files"]
    losses = report_line["losses"]
    assert len(losses) == 6 and all(map(math.isfinite, losses)) and losses[-1] < losses[0]
