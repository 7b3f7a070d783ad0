"""Deployments: the pipeline on an optional cron schedule, and one deployment per stage.

`llmforge serve` serves them from this machine (`prefect.serve`); `prefect.yaml` describes the
same for `prefect deploy` with work pools, training on its own pool (a GPU machine). A stage
deployment reruns that stage of a recorded run: its form asks for the run id, `--set`-style
overrides and whether to force a recompute.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.deployments.runner import EntrypointType
from prefect.exceptions import ObjectNotFound

from flows.rerun import rerun_stage_flow
from pipeline import stages
from pipeline.config import PipelineConfig, StageName, config_from_dict
from pipeline.store.runs import RunRecord
from pipeline.store.versions import RunId, Storage, check_run_id


@flow(name="llmforge-stage", log_prints=False)
def stage_flow_for_deployment(
    stage: StageName,  # type: ignore[valid-type]
    run_id: RunId,  # a pattern in the form's schema: the UI refuses `../../x` before any run
    overrides: list[str] | None = None,
    force: bool = False,
    storage_root: str = "storage",
) -> dict[str, Any]:
    """Rerun one stage of run `run_id` with its recorded config plus `overrides` (key=value)."""
    check_run_id(run_id)  # also when called without parameter validation
    record = RunRecord.load(Storage.at(storage_root), run_id)
    config = config_from_dict(record.data["config"], overrides)
    get_run_logger().info("rerunning %s of run %s (force=%s)", stage, run_id, force)
    return rerun_stage_flow(stage, config, run_id, force)


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit training holds, if the server lacks it."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )


def build_deployments(config: PipelineConfig) -> list[Any]:
    """The pipeline deployment (with the config's schedule) and one per stage."""
    from flows.pipeline_flow import pipeline_flow

    schedule: dict[str, Any] = {}
    if config.schedule.cron:
        from prefect.client.schemas.schedules import CronSchedule

        schedule["schedule"] = CronSchedule(
            cron=config.schedule.cron, timezone=config.schedule.timezone
        )
    deployments = [
        pipeline_flow.to_deployment(
            name=config.run.name,
            parameters={"config": config.model_dump(mode="json")},
            description="The whole pipeline with this configuration.",
            # One run at a time per configuration: a slow week never overlaps the next.
            concurrency_limit=1,
            entrypoint_type=EntrypointType.MODULE_PATH,
            **schedule,
        )
    ]
    storage_root = Storage.at(config.run.storage_root).root.url  # the URL, never a cache path
    for stage in stages.names():
        deployments.append(
            stage_flow_for_deployment.to_deployment(
                name=stage,
                parameters={"stage": stage, "storage_root": storage_root},
                description=f"Rerun the {stage} stage of a recorded run.",
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


YAML_MARKER = "  # One stage deployment per stage of pipeline/stages.py"
YAML_STORAGE_ROOT = "/srv/llmforge/storage"


def prefect_yaml(text: str) -> str:
    """`prefect.yaml` with its stage deployments (the lines after YAML_MARKER's comment) made
    from `stages.STAGES`, so a new stage needs no edit there."""
    head, marker, tail = text.partition(YAML_MARKER)
    if not marker:
        raise ValueError(f"prefect.yaml: no line starting {YAML_MARKER.strip()!r}")
    comment = marker + "".join(tail.splitlines(keepends=True)[:2])  # the comment's 2 lines
    lines = [
        f"  - {{<<: *stage, name: {name}, parameters: {{stage: {name}, "
        f"storage_root: {YAML_STORAGE_ROOT}}}}}\n"
        for name in stages.names()
    ]
    return head + comment + "".join(lines)


def serve_deployments(config: PipelineConfig) -> None:
    """Register and serve every deployment until interrupted (Ctrl-C)."""
    from prefect import serve

    ensure_concurrency_limit(config.run.train_concurrency_limit)
    serve(*build_deployments(config), print_starting_message=True)


if __name__ == "__main__":
    from pathlib import Path

    from pipeline.store.fs import atomic_write

    path = Path(__file__).parents[1] / "prefect.yaml"
    atomic_write(path, prefect_yaml(path.read_text()))
