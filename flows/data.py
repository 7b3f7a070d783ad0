"""One Prefect subflow per data stage: plan the version, reuse it or build it, publish counts.

The business logic is in `pipeline/`; these flows only decide reuse, map shards to tasks and
publish what a person watching the UI wants to see.
"""

from __future__ import annotations

import functools
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
from pipeline.stage import scalar_extras
from pipeline.store.versions import Storage, Version, build_version, find_version


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
    rows += [{"metric": k, "value": v} for k, v in scalar_extras(counts).items()]
    return rows


def run_data_stage(
    name: str,
    config: PipelineConfig,
    upstream: Version | None,
    force: bool = False,
    earlier: list[dict[str, Any]] | None = None,
) -> Version:
    """Reuse the stage's version if it exists (checked against its manifest: run.verify),
    else build it with one task per shard.

    `earlier` (`{stage, version_id}` refs) are versions of this stage from earlier runs that
    it also reads (weekly dedup); they enter the version id by id and are found through the
    storage here, so the id is the same under any storage root.
    """
    logger = get_run_logger()
    stage = stages.by_name(name)
    storage = Storage.at(config.run.storage_root, config.run.verify)
    section = config.stage_config(name)
    source, inputs = stages.resolve_source(name, config, upstream)
    if stage.earlier is not None and earlier:
        versions = [stages.load_version(storage, ref) for ref in earlier]
        # A rerun of the same input reuses its own version instead of finding every
        # document "seen before" in it.
        versions = [v for v in versions if v.manifest.get("inputs", [])[:1] != inputs[:1]]
        inputs = [*inputs, *(stages.version_input(v) for v in versions)]
        source = stage.earlier(source, versions)
    plan = stages.plan(name, section, inputs)
    version = None if force else find_version(storage, plan)
    if version is not None:
        reuse_version(name, version.version_id, version.folder.url)
        logger.info("%s: reusing version %s", name, version.version_id)
    else:
        logger.info("%s: building version %s", name, plan.version_id)
        if stage.reuse is not None:
            source = stage.reuse(storage, plan, section, source) or source
        progress = Progress(f"{name}-progress", f"{name} version {plan.version_id}")
        if stage.progress is not None:
            source = stage.progress(section, progress.update)
        pmap = prefect_map(config.run, progress)
        version = build_version(
            storage,
            plan,
            lambda out: stages.execute(name, section, source, out, pmap),
            replace=force,
        )
        progress.update(1, 1, force=True)
    publish_asset(storage, version, config)
    counts = version.manifest["counts"]
    logger.info(
        "%s: %s docs in, %s out, drops %s",
        name,
        counts["docs_in"],
        counts["docs_out"],
        counts["drops"] or "none",
    )
    create_table_artifact(
        key=f"{name}-counts",
        table=counts_table(version),
        description=f"{name} version {version.version_id}"
        + (" (reused)" if version.reused else ""),
    )
    if counts["docs_out"] == 0:
        raise EmptyStageError(name, counts["drops"])
    return version


@functools.cache
def _stage_flow(stage: str):
    def body(
        config: PipelineConfig,
        upstream: dict[str, Any] | None = None,
        force: bool = False,
        earlier: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        storage = Storage.at(config.run.storage_root, config.run.verify)
        previous = stages.load_version(storage, upstream) if upstream else None
        return run_data_stage(stage, config, previous, force, earlier).summary()

    body.__name__ = f"{stage}_flow"
    body.__doc__ = f"The {stage} stage as its own node in the Prefect UI."
    return flow(name=stage, log_prints=False, validate_parameters=True)(body)


def stage_flow(stage: str, config: PipelineConfig, run_id: str | None = None):
    """The data stage's subflow with the task runner the config asks for (threads or Dask),
    named `RUN_ID-stage` in the UI, so that searching the UI for a run id finds its stages."""
    options: dict[str, Any] = {"task_runner": task_runner(config.run)}
    if run_id is not None:
        options["flow_run_name"] = f"{run_id}-{stage}"  # run ids hold no braces: no template
    return _stage_flow(stages.by_name(stage).name).with_options(**options)
