"""Train and evaluate as subflows: the model is a versioned artifact like any dataset.

The train version id hashes (train config, token dataset version, model code), so a rerun with
unchanged config and data reuses the trained model. Training works in a stable local folder
(`<local>/tmp/train-<version>`) and can resume there after a stop; the finished folder becomes
`versions/train/<version>` (renamed on a local root, uploaded manifest last on a URL root). The
run folder gets links to the artifacts a person looks for.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from flows.assets import publish_asset
from flows.data import reuse_version
from flows.monitor import Progress, evaluation_markdown, loss_markdown, publish_markdown
from model.stages import train_inputs
from pipeline import stages
from pipeline.config import PipelineConfig
from pipeline.errors import DataError
from pipeline.stage import StageResult
from pipeline.store.fs import atomic_path
from pipeline.store.runs import RunRecord
from pipeline.store.versions import (
    RunId,
    Storage,
    Version,
    build_version,
    find_version,
    load_version,
)

TRAIN_ARTIFACTS = ("checkpoint.pt", "metrics.jsonl", "loss_curve.png", "train.json")
EVAL_ARTIFACTS = ("eval.json", "samples.txt")


def _model_result(summary: dict[str, Any]) -> StageResult:
    """Model stages count no documents; their results go in the manifest's extra."""
    return StageResult(docs_in=0, docs_out=0, extra=summary)


def _link_artifacts(record: RunRecord, version: Version, names: tuple[str, ...]) -> None:
    """List a version's files in run.json; in a local run folder also symlink them there (a
    URL root has no symlinks: the artifact is the file's URL)."""
    links = {}
    for name in names:
        if not version.folder.is_file(name):
            continue
        if not record.folder.is_local:
            links[name] = version.folder.url_of(name)
            continue
        run_dir = record.folder.local_path()
        link = run_dir / name
        with atomic_path(link) as tmp:
            tmp.symlink_to(os.path.relpath(version.path / name, run_dir))
        links[name] = str(link)
    record.add_artifacts(links)


def train_version(
    config: PipelineConfig, tokens: Version, force: bool = False, resume: bool = True
) -> Version:
    """Reuse or train the model for `tokens` (resuming an interrupted run of the same plan)."""
    from model.sizing import describe_plan
    from model.train import train

    logger = get_run_logger()
    storage = Storage.at(config.run.storage_root, config.run.verify)
    plan = stages.plan("train", config.train, train_inputs(config, tokens))
    version = None if force else find_version(storage, plan)
    if version is not None:
        reuse_version("train", version.version_id, version.folder.url)
        return version
    work = storage.work_dir("train", plan.version_id)
    can_resume = resume and not force and (work / "checkpoint.pt").exists()
    logger.info(
        "train: %s version %s on tokens %s",
        "resuming" if can_resume else "building",
        plan.version_id,
        tokens.version_id,
    )

    progress = Progress("train-progress", f"train version {plan.version_id}")
    total = {"steps": config.train.max_steps}  # until the run's plan says how many

    def log(row: dict[str, Any]) -> None:
        if "plan" in row:
            total["steps"] = row["plan"]["steps"]
            logger.info("train plan: %s (%s)", describe_plan(row["plan"]), row["plan"]["reason"])
            return
        if "step" in row:
            progress.update(row["step"], total["steps"])
        if "val_loss" in row:
            bpb = row.get("val_bpb")
            shown = "n/a" if bpb is None else f"{bpb:.4f}"
            step, loss = row.get("step"), row["val_loss"]
            logger.info("step %s: val bpb %s, val loss %.4f", step, shown, loss)
        elif "loss" in row:
            logger.info(
                "step %s: loss %.4f, lr %.2e, %.0f tokens/s",
                row.get("step"),
                row["loss"],
                row.get("lr", 0),
                row.get("tokens_per_s", 0),
            )

    # One training at a time per limit name (one GPU): a second scheduled run waits here.
    with concurrency(config.run.train_concurrency_limit, occupy=1, strict=False):
        version = build_version(
            storage,
            plan,
            lambda out: _model_result(
                train(
                    config.train,
                    tokens.folder.url,
                    out.local_path(),
                    can_resume,
                    log,
                    storage_root=config.run.storage_root,
                )
            ),
            replace=force,
            work_dir=work,
        )
    progress.update(1, 1, force=True)
    with (
        version.folder.fetch("metrics.jsonl") as metrics,
        version.folder.fetch("loss_curve.png") as curve,
    ):
        markdown = loss_markdown(metrics, curve)
    publish_markdown("train-loss", markdown, f"train version {version.version_id}")
    return version


def evaluate_version(
    config: PipelineConfig, trained: Version, tokens: Version, force: bool = False
) -> Version:
    from model.evaluate import evaluate

    storage = Storage.at(config.run.storage_root, config.run.verify)
    inputs = [stages.version_input(trained), stages.version_input(tokens)]
    plan = stages.plan("evaluate", config.evaluate, inputs)
    version = None if force else find_version(storage, plan)
    if version is not None:
        reuse_version("evaluate", version.version_id, version.folder.url)
        return version
    with trained.folder.fetch("checkpoint.pt") as checkpoint:  # a local copy on a URL root
        return build_version(
            storage,
            plan,
            lambda out: _model_result(
                evaluate(config.evaluate, checkpoint, tokens.folder.url, out.local_path())
            ),
            replace=force,
            local=True,  # evaluate writes local files (torch, plain files)
        )


def _versions(storage: Storage, versions: dict[str, Any], *names: str) -> list[Version]:
    found = []
    for name in names:
        if name not in versions:
            raise DataError(f"no '{name}' version recorded for this run")
        found.append(load_version(storage, name, versions[name]["version_id"]))
    return found


@flow(name="train", log_prints=False, flow_run_name="{run_id}-train")
def train_flow(
    config: PipelineConfig, versions: dict[str, Any], run_id: RunId, force: bool = False
) -> dict[str, Any]:
    """Train on the run's token dataset (or reuse the model trained on it before)."""
    storage = Storage.at(config.run.storage_root, config.run.verify)
    (tokens,) = _versions(storage, versions, "tokenize")
    version = train_version(config, tokens, force)
    publish_asset(storage, version, config)
    _link_artifacts(RunRecord.load(storage, run_id), version, TRAIN_ARTIFACTS)
    return version.summary()


def train_via_deployment(
    config: PipelineConfig, versions: dict[str, Any], run_id: str, force: bool = False
) -> dict[str, Any]:
    """Train on another machine: run the `train` deployment (its own work pool) and wait.

    The deployment trains into the shared storage root; its version id is a pure function of
    config and tokens, so this side finds the model without passing results around.
    """
    from prefect.deployments import run_deployment

    storage = Storage.at(config.run.storage_root, config.run.verify)
    (tokens,) = _versions(storage, versions, "tokenize")
    parameters = {
        "config": config.model_dump(mode="json"),
        "versions": versions,
        "run_id": run_id,
        "force": force,
    }
    child = run_deployment(config.run.train_deployment, parameters=parameters, timeout=None)
    if not child.state or not child.state.is_completed():
        ended = child.state.name if child.state else "without a state"
        raise RuntimeError(f"train deployment {config.run.train_deployment} ended {ended}")
    plan = stages.plan("train", config.train, train_inputs(config, tokens))
    version = load_version(storage, "train", plan.version_id)
    _link_artifacts(RunRecord.load(storage, run_id), version, TRAIN_ARTIFACTS)
    return version.summary()


@flow(name="evaluate", log_prints=False, flow_run_name="{run_id}-evaluate")
def evaluate_flow(
    config: PipelineConfig, versions: dict[str, Any], run_id: RunId, force: bool = False
) -> dict[str, Any]:
    """Val loss, perplexity, bits per byte, samples (and HellaSwag, lm_eval when configured);
    an `evaluation` artifact shows the numbers."""
    storage = Storage.at(config.run.storage_root, config.run.verify)
    tokens, trained = _versions(storage, versions, "tokenize", "train")
    version = evaluate_version(config, trained, tokens, force)
    publish_asset(storage, version, config)
    _link_artifacts(RunRecord.load(storage, run_id), version, EVAL_ARTIFACTS)
    evaluation = version.manifest.get("counts", {}).get("extra", {})
    markdown = evaluation_markdown(evaluation, version.version_id)
    publish_markdown("evaluation", markdown, f"evaluate version {version.version_id}")
    return version.summary()


MODEL_STAGE_FLOWS = {"train": train_flow, "evaluate": evaluate_flow}


def run_model_stage(
    stage: str, config: PipelineConfig, versions: dict[str, Any], run_id: str, force: bool = False
) -> dict[str, Any]:
    """Run a model stage of run `run_id` (train through `run.train_deployment` if set)."""
    if stage == "train" and config.run.train_deployment:
        return train_via_deployment(config, versions, run_id, force)
    if stage not in MODEL_STAGE_FLOWS:
        raise DataError(f"stage '{stage}' has no model flow (flows/model.py)")
    return MODEL_STAGE_FLOWS[stage](config, versions, run_id, force)
