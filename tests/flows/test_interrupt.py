"""Ctrl-C (SIGINT to the whole process group): pool workers leave it to the parent, a run
records "interrupted" (not "failed") and the CLI says so in one line with exit code 130."""

import signal

import pytest

from pipeline.stage import process_map
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage
from tests.flows.conftest import DATA_HALF, site_config


def _sigint_handler(_: int) -> bool:
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_pool_workers_leave_ctrl_c_to_the_parent():
    """A worker that took SIGINT too would print its own KeyboardInterrupt traceback."""
    assert process_map(2)(_sigint_handler, [0, 1, 2, 3]) == [True] * 4


def test_an_interrupted_run_is_recorded_interrupted(
    prefect_api, sample_site, tmp_path, monkeypatch
):
    import flows.pipeline_flow as pipeline_flow_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_flow_module, "stage_flow", lambda *a: interrupted)
    base_url, _ = sample_site
    config = site_config(tmp_path, base_url, *DATA_HALF)
    with pytest.raises(KeyboardInterrupt):
        pipeline_flow_module.pipeline_flow(config, "interrupted-run")
    record = RunRecord.load(Storage.at(tmp_path), "interrupted-run")
    assert record.data["status"] == "interrupted", record.data
    assert record.data["error"] == "interrupted (Ctrl-C)" and record.data["finished_at"]


def test_the_log_filter_drops_prefects_crash_report_of_a_ctrl_c():
    import logging

    from flows.logs import HideKnownTracebacks

    crash = logging.LogRecord(
        "prefect.flow_runs", logging.ERROR, __file__, 1,
        "Crash detected! Execution was interrupted by an unexpected exception: KeyboardInterrupt",
        None, None,
    )  # fmt: skip
    other = logging.LogRecord("prefect", logging.ERROR, __file__, 1, "ValueError: x", None, None)
    assert not HideKnownTracebacks().filter(crash) and HideKnownTracebacks().filter(other)
