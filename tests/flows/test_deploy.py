"""`llmforge serve`: deployments registered and served; a stage rerun through the API completes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.config import load_config
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage

REPO = Path(__file__).resolve().parents[2]


ALL_STAGES = ("crawl", "extract", "filter", "dedup", "tokenize", "train", "evaluate")


def _deployments(api_url):
    response = httpx.post(f"{api_url}/deployments/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return {d["name"]: d for d in response.json()}


@pytest.fixture(scope="module")
def served(prefect_api, sample_site, tmp_path_factory):
    base_url, _ = sample_site
    root = tmp_path_factory.mktemp("served-storage")
    overrides = [
        f'run.storage_root="{root}"',
        "run.until=filter",
        "run.name=weekly",
        f"crawl.seeds=['{base_url}/']",
        "crawl.delay_seconds=0",
        "crawl.allow_private_addresses=true",  # the sample site is on 127.0.0.1
    ]
    record = pipeline_flow(load_config(None, overrides), "run-to-serve")
    log = (root / "serve.log").open("w")
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "serve",
        *[arg for o in overrides for arg in ("--set", o)],
        "--set",
        'schedule.cron="0 3 * * 1"',
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_API_URL": prefect_api["api_url"]},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            deployments = _deployments(prefect_api["api_url"])
            if {"weekly", *ALL_STAGES} <= set(deployments):  # serve registers them one by one
                break
            assert process.poll() is None, (root / "serve.log").read_text()[-2000:]
            time.sleep(1)
        else:
            pytest.fail("deployments never registered: " + (root / "serve.log").read_text()[-2000:])
        yield root, record, deployments
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_serve_registers_pipeline_with_schedule_and_one_deployment_per_stage(prefect_api, served):
    _, _, deployments = served
    for stage in ALL_STAGES:
        assert deployments[stage]["parameters"]["stage"] == stage
        schema = deployments[stage]["parameter_openapi_schema"]["properties"]
        assert {"run_id", "overrides", "force"} <= set(schema)  # the UI form's fields
    schedules = deployments["weekly"]["schedules"]
    assert schedules and schedules[0]["schedule"]["cron"] == "0 3 * * 1"
    limit = httpx.get(f"{prefect_api['api_url']}/v2/concurrency_limits/llmforge-train", timeout=30)
    assert limit.status_code == 200 and limit.json()["limit"] == 1


@pytest.mark.slow
def test_stage_deployment_run_through_the_api_completes(prefect_api, served):
    from prefect.deployments import run_deployment

    root, record, _ = served
    child = run_deployment(
        "llmforge-stage/filter",
        parameters={
            "run_id": "run-to-serve",
            "overrides": ["filter.gopher_quality.min_doc_words=70"],
        },
        timeout=240,
        as_subflow=False,
    )
    assert child.state is not None and child.state.is_completed(), child.state
    reruns = RunRecord.load(Storage.at(root), "run-to-serve").data["reruns"]
    assert [r["stage"] for r in reruns] == ["filter"]
    assert reruns[0]["version_id"] != record["versions"]["filter"]["version_id"]


@pytest.mark.slow
def test_prefect_yaml_deploys_through_work_pools(prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api["api_url"]}
    prefect = str(Path(sys.executable).with_name("prefect"))
    for pool in ("llmforge-data", "llmforge-gpu"):
        subprocess.run(
            [prefect, "work-pool", "create", pool, "--type", "process"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    deploy = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    response = httpx.post(
        f"{prefect_api['api_url']}/deployments/filter", json={"limit": 200}, timeout=30
    ).json()
    pools = {d["name"]: d["work_pool_name"] for d in response if d["work_pool_name"]}
    assert pools["gpu"] == "llmforge-gpu" and pools["weekly"] == "llmforge-data"
    assert {"crawl", "filter", "evaluate"} <= set(pools)


def test_prefect_yaml_lists_every_stage():
    """prefect.yaml's stage deployments are the stage list (`python -m flows.deploy`)."""
    from flows.deploy import prefect_yaml

    text = (REPO / "prefect.yaml").read_text()
    assert prefect_yaml(text) == text
    assert prefect_yaml(text.replace("name: dedup,", "name: dedupe,")) == text
