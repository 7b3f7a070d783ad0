"""The store's guards as a person meets them: bad run ids, racing stage commands, stale runs."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.store.integrity import clear_cache
from pipeline.store.locks import host_tag
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage, load_version
from tests.conftest import llmforge, shared_data

REPO = Path(__file__).resolve().parents[2]

HOLD_OUTPUT = """
import sys, pathlib
from pipeline.store.versions import output_lock
with output_lock(pathlib.Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def start_llmforge(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def snapshot(folder):
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, dirs, files in os.walk(folder)
        for n in dirs + files
    )


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_run_ids_fail_in_one_line_and_touch_nothing(tmp_path):
    root = tmp_path / "a" / "b" / "storage"
    (root / "runs").mkdir(parents=True)
    # Where runs/../../x points: the old code showed this record and wrote a report beside it.
    outside = tmp_path / "a" / "x"
    outside.mkdir(parents=True)
    (outside / "run.json").write_text('{"run_id": "x", "status": "completed", "versions": {}}')
    config = tmp_path / "config.toml"
    config.write_text(f'[run]\nstorage_root = "{root}"\n')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = snapshot(tmp_path)
    for args in (
        ("runs", "show", "../../x", "--storage", str(root)),
        ("runs", "report", "../../x", "--storage", str(root)),
        ("runs", "lineage", "../../x", "--storage", str(root)),
        ("stage", "filter", "--run", "../../x", "--config", str(config)),
    ):
        line = one_error_line(llmforge(*args, cwd=cwd))
        assert "invalid run id '../../x'" in line, args
    assert snapshot(tmp_path) == before


def test_the_stage_deployment_form_refuses_a_bad_run_id():
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    from flows.deploy import stage_flow_for_deployment
    from flows.pipeline_flow import pipeline_flow
    from flows.rerun import rerun_stage_flow

    schema = parameter_schema(stage_flow_for_deployment).model_dump()
    assert "pattern" in schema["properties"]["run_id"]  # the UI form validates it
    good = {"stage": "filter", "run_id": "20261122-001500-3fa2c1"}
    assert stage_flow_for_deployment.validate_parameters(good)["run_id"] == good["run_id"]
    for flow, params in (
        (stage_flow_for_deployment, {"stage": "filter", "run_id": "../../x"}),
        (rerun_stage_flow, {"stage": "filter", "config": {}, "run_id": "a/../../b"}),
        (pipeline_flow, {"run_id": "../x"}),
    ):
        with pytest.raises(ParameterTypeError):
            flow.validate_parameters(params)


def test_a_second_stage_command_on_a_held_output_says_who_holds_it(tmp_path):
    warc = shared_data("warc", "commoncrawl-whirlwind", "whirlwind.warc.gz")
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(output)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_error_line(
            llmforge("stage", "extract", "--input", str(warc), "--output", str(output))
        )
        assert f"{output}: another command is writing this output (pid {holder.pid}" in line
        assert not output.exists()
    finally:
        holder.communicate("\n", timeout=30)
    # A work folder left by a `stage` command that was killed is removed by the next one.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".out.work-{host_tag()}-{dead.pid}-0a0b0c0d.llmforge"
    (leftover / "tmp").mkdir(parents=True)
    done = llmforge("stage", "extract", "--input", str(warc), "--output", str(output))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"removed {leftover}" in done.stdout.replace("\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, no work folder


@pytest.mark.slow
def test_two_stage_commands_racing_for_one_output(tmp_path):
    """Both start at once: one writes the output, the other fails in one line (never on a
    temp file of its own, as before: 'not a readable Parquet file')."""
    warc = shared_data("warc", "commoncrawl-whirlwind", "whirlwind.warc.gz")
    output = tmp_path / "out"
    args = ("stage", "extract", "--input", str(warc), "--output", str(output))
    racers = [start_llmforge(*args), start_llmforge(*args)]
    results = [(r.wait(timeout=300), *r.communicate()) for r in racers]
    assert sorted(rc for rc, _, _ in results) == [0, 1], results
    _, _, stderr = next(r for r in results if r[0] == 1)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert (
        "another command is writing this output" in lines[0]
        or "output folder exists and is not empty" in lines[0]
    ), lines[0]
    assert (output / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_runs_list_shows_a_killed_run_as_interrupted(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from pipeline.store.runs import RunRecord\n"
        "from pipeline.store.versions import Storage\n"
        "RunRecord.create(Storage.at(sys.argv[1]), {}, run_id='killed-run')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    listed = llmforge("runs", "list", "--storage", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "killed-run" in line)
    assert "interrupted" in row and "running" not in row


@pytest.mark.slow
def test_run_refuses_an_edited_version_in_one_line_and_force_rebuilds_it(prefect_api, tmp_path):
    warc = shared_data("warc", "commoncrawl-whirlwind", "whirlwind.warc.gz")
    root = tmp_path / "storage"
    sets = [
        "--set",
        'source.kind="warc"',
        "--set",
        f"source.warc_paths=['{warc}']",
        "--set",
        "run.until=extract",
        "--set",
        f'run.storage_root="{root}"',
    ]
    env = {"PREFECT_API_URL": prefect_api["api_url"]}
    # Left by a killed run: its record says "running" and its temp folder is still there.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = RunRecord.create(Storage.at(root), {}, run_id="killed-run")
    stale.data["process"]["pid"] = dead.pid
    stale.save()
    leftover = root / "tmp" / f"extract-{host_tag()}-{dead.pid}-0a0b0c0d"
    leftover.mkdir(parents=True)
    first = llmforge("run", *sets, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert RunRecord.load(Storage.at(root), "killed-run").data["status"] == "interrupted"
    assert not leftover.exists()
    assert f"cleaned: removed tmp/{leftover.name}" in first.stdout + first.stderr
    (shard,) = root.glob("versions/extract/*/data/part-*.parquet")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # an edit that keeps the size
    shard.write_bytes(bytes(data))

    refused = llmforge("run", *sets, env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {shard}: sha256 differs from manifest.json"), last
    assert "llmforge run --force" in last

    forced = llmforge("run", "--force", *sets, env=env)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert shard.read_bytes() != bytes(data)  # rebuilt from the WARC
    clear_cache()
    assert load_version(Storage.at(root), "extract", shard.parents[1].name).reused


def test_verify_comes_from_the_environment_then_set_then_the_flag(monkeypatch):
    from flows.cli import _config, _verify_sets

    assert _config(None, None).run.verify == "sha256"
    monkeypatch.setenv("LLMFORGE_VERIFY", "size")
    assert _config(None, None).run.verify == "size"
    assert _config(None, ['run.verify="sha256"']).run.verify == "sha256"
    assert _config(None, ["run.verify=sha256", *_verify_sets("size")]).run.verify == "size"
    with pytest.raises(Exception, match="run.verify"):
        _config(None, _verify_sets("md5"))
