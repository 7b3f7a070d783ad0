"""One Prefect subflow per data stage: plan the version, reuse it or build it, publish counts.

The business logic is in `pipeline/`; these flows only decide reuse, map shards to tasks and
publish what a person watching the UI wants to see.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.states import Completed

from flows.assets import publish_asset
from flows.executor import prefect_map, task_runner
from flows.monitor import Progress
from pipeline import stages
from pipeline.config import PipelineConfig
from pipeline.errors import EmptyStageError
from pipeline.store.versions import Storage, Version, build_version, find_version, load_version


@task(name="reuse-version", persist_result=False)
def reuse_version(stage: str, version_id: str, path: str) -> Completed:
    """A visibly skipped stage: the task's state reads `Cached` in the UI."""
    return Completed(name="Cached", message=f"reused {stage} version {version_id} at {path}")


def counts_table(version: Version) -> list[dict[str, Any]]:
    counts = version.manifest.get("counts", {})
    rows = [
        {"metric": "docs in", "value": counts.get("docs_in")},
        {"metric": "docs out", "value": counts.get("docs_out")},
    ]
    rows += [{"metric": f"drop: {k}", "value": v} for k, v in counts.get("drops", {}).items()]
    rows += [
        {"metric": k, "value": v}
        for k, v in counts.get("extra", {}).items()
        if isinstance(v, int | float | str)
    ]
    return rows


def run_data_stage(
    stage: str, config: PipelineConfig, upstream: Version | None, force: bool = False
) -> Version:
    """Reuse the stage's version if it exists (checked against its manifest: run.verify),
    else build it with one task per shard."""
    logger = get_run_logger()
    storage = Storage.at(config.run.storage_root, config.run.verify)
    if stage == "dedup" and config.dedup.against and upstream is not None:
        config = stages.without_same_input(config, upstream)
    source, inputs = stages.resolve_source(stage, config, upstream)
    plan = stages.plan(stage, config.stage_config(stage), inputs)
    version = None if force else find_version(storage, plan)
    if version is not None:
        reuse_version(stage, version.version_id, str(version.path))
        logger.info("%s: reusing version %s", stage, version.version_id)
    else:
        logger.info("%s: building version %s", stage, plan.version_id)
        if stage == "filter" and (donor := stages.retune_donor(storage, plan, config.filter)):
            load_version(storage, "filter", donor.parent.name)  # check before reading it
            logger.info("filter: re-deciding from stored signals in %s", donor)
            source = (source, donor)
        progress = Progress(f"{stage}-progress", f"{stage} version {plan.version_id}")
        if stage == "crawl":
            source = _crawl_progress(progress, config.crawl.max_pages)
        pmap = prefect_map(config.run, progress)
        version = build_version(
            storage,
            plan,
            lambda out: stages.execute(stage, config.stage_config(stage), source, out, pmap),
            replace=force,
        )
        progress.update(1, 1, force=True)
    publish_asset(storage, version, config)
    counts = version.manifest["counts"]
    logger.info(
        "%s: %s docs in, %s out, drops %s",
        stage,
        counts["docs_in"],
        counts["docs_out"],
        counts["drops"] or "none",
    )
    create_table_artifact(
        key=f"{stage}-counts",
        table=counts_table(version),
        description=f"{stage} version {version.version_id}"
        + (" (reused)" if version.reused else ""),
    )
    if counts["docs_out"] == 0:
        raise EmptyStageError(stage, counts["drops"])
    return version


def _crawl_progress(progress: Progress, max_pages: int):
    """Crawl progress: pages stored against what the frontier says is reachable."""

    def update(stored: int, seen: int) -> None:
        progress.update(stored, max(stored, min(max_pages, seen)))

    return update


def _stage_flow(stage: str):
    def body(
        config: PipelineConfig, upstream: dict[str, Any] | None = None, force: bool = False
    ) -> dict[str, Any]:
        storage = Storage.at(config.run.storage_root, config.run.verify)
        previous = stages.load_version(storage, upstream) if upstream else None
        return run_data_stage(stage, config, previous, force).summary()

    body.__name__ = f"{stage}_flow"
    body.__doc__ = f"The {stage} stage as its own node in the Prefect UI."
    return flow(name=stage, log_prints=False, validate_parameters=True)(body)


STAGE_FLOWS = {name: _stage_flow(name) for name in stages.DATA_STAGES}


def stage_flow(stage: str, config: PipelineConfig):
    """The stage's subflow with the task runner the config asks for (threads or Dask)."""
    return STAGE_FLOWS[stage].with_options(task_runner=task_runner(config.run))
