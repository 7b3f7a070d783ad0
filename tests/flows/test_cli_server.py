"""`llmforge run` with no PREFECT_API_URL starts its own server and the run is recorded there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cli_run_is_fully_recorded_on_its_local_server(sample_site, tmp_path):
    base_url, _ = sample_site
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    cli = [sys.executable, "-m", "flows.cli"]
    try:
        run = subprocess.run(
            [
                *cli,
                "run",
                "--set",
                f'run.storage_root="{tmp_path}"',
                "--set",
                "run.until=extract",
                "--set",
                f"crawl.seeds=['{base_url}/']",
                "--set",
                "crawl.delay_seconds=0",
                "--set",
                "crawl.allow_private_addresses=true",  # the sample site is on 127.0.0.1
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "temporary server" not in run.stderr
        server = json.loads((tmp_path / "prefect" / "server.json").read_text())
        (record_path,) = tmp_path.glob("runs/*/run.json")
        record = json.loads(record_path.read_text())
        assert record["prefect"]["flow_run_url"].startswith(server["ui_url"])
        assert server["ui_url"] in run.stdout
        flow_run = httpx.get(
            f"{server['api_url']}/flow_runs/{record['prefect']['flow_run_id']}", timeout=30
        )
        assert flow_run.status_code == 200 and flow_run.json()["state_type"] == "COMPLETED"
        tasks = httpx.post(
            f"{server['api_url']}/task_runs/filter", json={"limit": 200}, timeout=30
        ).json()
        assert any(t["name"].startswith("extract-") for t in tasks)
    finally:
        stop = subprocess.run(
            [*cli, "server", "stop", "--storage", str(tmp_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "stopped" in stop.stdout
