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


def _cli(*args, env, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_status_lists_the_servers_of_every_root_and_stop_all_stops_them(tmp_path):
    """Two storage roots, two servers: both listed wherever `status` runs, both stopped."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["LLMFORGE_CACHE"] = str(tmp_path / "cache")  # this test's registry only
    roots = [tmp_path / "root-a", tmp_path / "root-b"]
    try:
        for root in roots:
            started = _cli("server", "start", "--storage", str(root), env=env)
            assert started.returncode == 0, started.stderr[-3000:]
        servers = [json.loads((root / "prefect" / "server.json").read_text()) for root in roots]
        status = _cli("server", "status", env=env)
        lines = status.stdout.splitlines()
        for root, server in zip(roots, servers, strict=True):
            (line,) = [line for line in lines if f"root {root} " in line]
            assert (
                line.startswith(f"running: {server['ui_url']} ") and f"pid {server['pid']}" in line
            )
        stop = _cli("server", "stop", "--all", env=env)
        assert "stopped 2 server(s)" in stop.stdout, stop.stdout + stop.stderr
        for server in servers:
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{server['api_url']}/health", timeout=2)
        assert not any((root / "prefect" / "server.json").exists() for root in roots)
        assert "no local server is running" in _cli("server", "status", env=env).stdout
    finally:
        for root in roots:  # whatever failed above, leave no server behind
            _cli("server", "stop", "--storage", str(root), env=env)


def test_status_prunes_servers_that_are_gone(tmp_path, monkeypatch):
    from flows.server import list_servers, registry_dir

    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    entry = {
        "pid": int(gone.stdout),  # exited: no such process now
        "api_url": "http://127.0.0.1:9/api",  # the discard port: nothing answers
        "ui_url": "http://127.0.0.1:9",
        "root": str(tmp_path / "root"),
        "started": "2026-12-05T00:00:00+00:00",
    }
    registry_dir().mkdir(parents=True)
    (registry_dir() / f"{entry['pid']}.json").write_text(json.dumps(entry))
    alive = {**entry, "pid": os.getpid()}  # this process stands in for a server still starting
    (registry_dir() / f"{os.getpid()}.json").write_text(json.dumps(alive))
    assert list_servers() == [{**alive, "up": False}]
    assert [p.name for p in registry_dir().iterdir()] == [f"{os.getpid()}.json"]


def test_runs_show_links_the_flow_run_on_the_server_that_answers_now(tmp_path):
    """A run recorded under a server on one port, shown after the root's server came back on
    another: the link follows the server (same database, new port)."""
    import http.server
    import threading

    from pipeline.store.runs import RunRecord
    from pipeline.store.versions import Storage

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    storage = Storage.at(tmp_path)
    record = RunRecord.create(storage, {}, "linked-run")
    record.data["prefect"] = {
        "flow_run_id": "3816cf66-94da-4e54-bdfb-a4081200dc58",
        "flow_run_url": "http://127.0.0.1:9/runs/flow-run/3816cf66-94da-4e54-bdfb-a4081200dc58",
    }
    record.finish("completed")
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        storage.prefect_home.mkdir(parents=True, exist_ok=True)
        state = {"pid": os.getpid(), "api_url": f"{url}/api", "ui_url": url}
        (storage.prefect_home / "server.json").write_text(json.dumps(state))
        shown = _cli("runs", "show", "linked-run", "--storage", str(tmp_path), env=dict(os.environ))
        server.shutdown()
    assert shown.returncode == 0, shown.stderr
    assert f"Prefect UI: {url}/runs/flow-run/3816cf66-94da-4e54-bdfb-a4081200dc58" in shown.stdout
    assert "127.0.0.1:9/" not in shown.stdout
