"""Rerun one stage of a recorded run, on exactly the upstream version that run used.

Like Metaflow's `resume --origin-run-id`: the run record names the upstream version, so the
stage reads the same data even if newer versions exist. With an unchanged config the stage's
version is reused unless `force` recomputes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from flows.data import stage_flow
from flows.executor import shutdown_pool
from pipeline import stages
from pipeline.config import PipelineConfig
from pipeline.errors import DataError
from pipeline.store.runs import RunRecord
from pipeline.store.versions import RunId, Storage, check_run_id


def recorded_earlier(storage: Storage, recorded: dict[str, Any] | None) -> list[dict[str, str]]:
    """The earlier versions of its own stage that the recorded version also read (weekly
    dedup): its manifest's inputs after the upstream one, those naming a version."""
    if not recorded:
        return []
    manifest = storage.manifest(recorded["stage"], recorded["version_id"])
    return [
        {"stage": entry["stage"], "version_id": entry["version_id"]}
        for entry in manifest.get("inputs", [])[1:]
        if entry.get("stage") == recorded["stage"] and "version_id" in entry
    ]


@flow(name="llmforge-rerun-stage", log_prints=False, flow_run_name="{run_id}-rerun-{stage}")
def rerun_stage_flow(
    stage: str, config: PipelineConfig, run_id: RunId, force: bool = False
) -> dict[str, Any]:
    """Run `stage` again for run `run_id`; the rerun is appended to its run.json.

    The upstream version it reads is checked against its manifest first (run.verify), like
    any reuse; `force` recomputes the stage even if its version exists or fails that check.
    """
    check_run_id(run_id)
    storage = Storage.at(config.run.storage_root, config.run.verify)
    record = RunRecord.load(storage, run_id)
    upstream_stage = stages.upstream(stage)
    upstream = record.data["versions"].get(upstream_stage) if upstream_stage else None
    # Extract from WARC files or other tools' documents reads no crawl version.
    needs_upstream = upstream_stage is not None and stages.runs(upstream_stage, config)
    if needs_upstream and upstream is None:
        raise DataError(f"run {run_id} has no '{upstream_stage}' version to rerun '{stage}' on")
    try:
        if stages.is_model(stage):
            from flows.model import run_model_stage

            summary = run_model_stage(stage, config, record.data["versions"], run_id, force)
        else:
            earlier = recorded_earlier(storage, record.data["versions"].get(stage))
            summary = stage_flow(stage, config, run_id)(config, upstream, force, earlier)
    finally:
        shutdown_pool()
    record.data.setdefault("reruns", []).append(
        {
            "stage": stage,
            "version_id": summary["version_id"],
            "reused": summary["reused"],
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    record.save()
    return summary
