"""The parent flow: crawl → extract → filter → dedup → tokenize → train → evaluate.

Each stage is its own subflow (its own node in the Prefect UI); the run record
`<storage>/runs/<run_id>/run.json` is written as stages finish, so a failed run still says
how far it got.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from flows.data import stage_flow
from flows.executor import shutdown_pool
from flows.model import run_model_stage
from flows.monitor import evaluation_rows
from pipeline import stages
from pipeline.config import PipelineConfig, config_from_dict
from pipeline.errors import EmptyStageError
from pipeline.report import build_report
from pipeline.store.gc import clean_stale
from pipeline.store.runs import RunRecord, earlier_versions, new_run_id
from pipeline.store.versions import RunId, Storage, check_run_id


def earlier_refs(config: PipelineConfig, storage: Storage, run_id: str) -> dict[str, list]:
    """For each stage that reads its own earlier versions (dedup), those of earlier completed
    runs with the same name (weekly crawls, run.dedup_against_previous_runs), as
    `{stage, version_id}` refs: ids, never paths, so version ids do not depend on the root."""
    if not config.run.dedup_against_previous_runs:
        return {}
    return {
        stage.name: [
            {"stage": stage.name, "version_id": folder.name}
            for folder in earlier_versions(storage, config.run.name, stage.name, run_id)
        ]
        for stage in stages.STAGES
        if stage.earlier is not None
    }


def only_seen_before(error: EmptyStageError) -> bool:
    """True when every dropped document duplicated one of an earlier version."""
    return bool(error.drops) and all(reason.endswith("_previous") for reason in error.drops)


def summary_markdown(record: RunRecord) -> str:
    lines = [
        f"# llmforge run `{record.run_id}`",
        "",
        "| stage | version | reused | docs in | docs out |",
        "|---|---|---|---:|---:|",
    ]
    dropped = []
    for stage, version in record.data["versions"].items():
        counts = version.get("counts", {})
        model_stage = stages.is_model(stage)  # reads no documents: no 0 -> 0
        docs = (
            ["-", "-"] if model_stage else [counts.get("docs_in", "-"), counts.get("docs_out", "-")]
        )
        lines.append(
            f"| {stage} | `{version['version_id']}` | {'yes' if version['reused'] else 'no'} | "
            f"{docs[0]} | {docs[1]} |"
        )
        ranked = sorted(counts.get("drops", {}).items(), key=lambda kv: -kv[1])
        dropped += [f"| {stage} | {reason} | {count} |" for reason, count in ranked]
    if dropped:  # a table of their own: one reason a row, never cut off in a cell
        lines += ["", "## Dropped documents", "", "| stage | reason | docs |", "|---|---|---:|"]
        lines += dropped
    trained = record.data["versions"].get("train", {}).get("counts", {}).get("extra", {})
    if trained.get("plan_summary"):
        lines += ["", "## Training", "", f"- plan: {trained['plan_summary']}"]
        if isinstance(trained.get("final_val_bpb"), int | float):
            lines.append(f"- final val bits per byte: {trained['final_val_bpb']:.4f}")
        if trained.get("sizing_reason"):
            lines.append(f"- preset auto: {trained['sizing_reason']}")
    evaluation = record.data["versions"].get("evaluate", {}).get("counts", {}).get("extra", {})
    if evaluation:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {metric} | {value:.4f} |" for metric, value in evaluation_rows(evaluation)]
        for sample in evaluation.get("samples", [])[:2]:
            lines += ["", f"> **{sample['prompt']}**{sample['completion']}"]
    lines += [
        "",
        "## Artifacts",
        "",
        f"- run directory: `{record.folder}`",
        f"- run record: `{record.url}`",
    ]
    lines += [f"- {name}: `{path}`" for name, path in record.data["artifacts"].items()]
    return "\n".join(lines)


def _named_by_run_id() -> str:
    """The flow run's name in the UI is its run id (searchable); a scheduled run, whose id is
    made inside the flow, starts as "llmforge-run" and is renamed there."""
    return flow_run.parameters.get("run_id") or "llmforge-run"


def _rename_flow_run(name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.get_id(), name=name)


@flow(name="llmforge-pipeline", log_prints=False, flow_run_name=_named_by_run_id)
def pipeline_flow(
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 (a pydantic default, never mutated)
    run_id: RunId | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Run every stage up to `config.run.until`, reusing versions that already exist (each
    checked against its manifest first: run.verify); `force` recomputes every stage.

    `overrides` (`key=value`, as `--set`) apply on top of `config`: deployments keep the
    defaults and change a few keys from the UI form.
    """
    if run_id is not None:
        check_run_id(run_id)
    else:
        run_id = new_run_id()
        _rename_flow_run(run_id)
    if overrides:
        config = config_from_dict(config.model_dump(mode="json"), overrides)
    stages.preflight(config, stages.stages_to_run(config))
    logger = get_run_logger()
    storage = Storage.at(config.run.storage_root, config.run.verify)
    # Runs killed without a chance to record their end, and their temp folders.
    for line in clean_stale(storage):
        logger.info("cleaned: %s", line)
    record = RunRecord.create(storage, config.model_dump(mode="json"), run_id)
    record.data["prefect"] = {
        "flow_run_id": flow_run.get_id(),
        "flow_run_url": url_for("flow-run", obj_id=flow_run.get_id()),
    }
    record.save()
    logger.info("run %s: stages %s", record.run_id, " → ".join(stages.stages_to_run(config)))
    upstream: dict[str, Any] | None = None
    earlier = earlier_refs(config, storage, record.run_id)
    try:
        for stage in stages.stages_to_run(config):
            if stages.is_model(stage):
                versions = record.data["versions"]
                summary = run_model_stage(stage, config, versions, record.run_id, force)
            else:
                try:
                    summary = stage_flow(stage, config, record.run_id)(
                        config, upstream, force, earlier.get(stage)
                    )
                except EmptyStageError as exc:
                    if not only_seen_before(exc):
                        raise
                    # Every new document was seen in an earlier run: nothing new to train on.
                    logger.info("%s: no new documents since earlier runs; stopping here", stage)
                    record = RunRecord.load(storage, record.run_id)
                    record.data["note"] = f"no new documents after {stage}: {exc}"
                    break
            # Subflows may have written to run.json too (artifact links): reload, then add.
            record = RunRecord.load(storage, record.run_id)
            record.add_version(summary)
            upstream = summary
    except KeyboardInterrupt:  # Ctrl-C: finished versions stay, the same command resumes
        record.finish("interrupted", "interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        record.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutdown_pool()
    # Finish first: the report shows the run record as it is, so its status and end time.
    record.finish("completed")
    try:
        report = build_report(storage, record.run_id)
    except BaseException as exc:
        record.finish("failed", f"data report: {type(exc).__name__}: {exc}")
        raise
    record.add_artifacts({"report.html": str(report.html), "report.md": str(report.markdown)})
    logger.info("data report: %s", report.html)
    create_markdown_artifact(
        key="run-summary", markdown=summary_markdown(record), description=record.run_id
    )
    return record.data
