"""The data half on a 2-worker Dask LocalCluster gives exactly the local run's output."""

import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.config import load_config
from tests.flows.conftest import crawl_warcs

STAGES = ["extract", "filter", "dedup", "tokenize"]


def _files(manifest):
    return {f["path"]: f["sha256"] for f in manifest["files"] if f["path"] != "manifest.json"}


@pytest.fixture(scope="module")
def warc_dir(prefect_api, sample_site, tmp_path_factory):
    base_url, _ = sample_site
    scratch = tmp_path_factory.mktemp("crawl-once")
    return crawl_warcs(scratch / "storage", base_url, scratch / "warcs", "crawl-once")


def _run(root, warc_dir, executor, run_id):
    config = load_config(
        None,
        [
            f'run.storage_root="{root}"',
            "run.until=tokenize",
            f"run.executor={executor}",
            "run.workers=2",
            "source.kind=warc",
            f"source.warc_paths=['{warc_dir}']",
            "tokenize.val_fraction=0.1",
        ],
    )
    return pipeline_flow(config, run_id)


@pytest.mark.slow
def test_dask_run_equals_local_run(prefect_api, warc_dir, tmp_path):
    local = _run(tmp_path / "local", warc_dir, "local", "local")
    on_dask = _run(tmp_path / "dask", warc_dir, "dask", "dask")
    assert list(on_dask["versions"]) == STAGES
    for stage in STAGES:
        a, b = local["versions"][stage], on_dask["versions"][stage]
        assert a["version_id"] == b["version_id"], stage
        assert a["counts"]["docs_out"] == b["counts"]["docs_out"] > 0, stage
        manifest_a = tmp_path / "local" / "versions" / stage / a["version_id"] / "manifest.json"
        manifest_b = tmp_path / "dask" / "versions" / stage / b["version_id"] / "manifest.json"
        import json

        files_a = _files(json.loads(manifest_a.read_text()))
        files_b = _files(json.loads(manifest_b.read_text()))
        assert files_a == files_b, stage


def test_a_cluster_with_a_local_storage_root_is_warned_about(caplog):
    """Workers on other machines get the tasks' paths: a local root needs a shared mount."""
    from flows.executor import task_runner
    from pipeline.config import RunSettings

    cluster = {"executor": "dask", "dask_address": "tcp://10.0.0.5:8786"}
    with caplog.at_level("WARNING", logger="flows.executor"):
        task_runner(RunSettings(storage_root="s3://bucket/llmforge", **cluster))
        assert not caplog.records
        task_runner(RunSettings(storage_root="storage", **cluster))
    assert "shared mount" in caplog.text and "'storage'" in caplog.text
