"""The stages in order, and what is generic about them: lookup, version plans, code versions.

Each stage's knowledge lives in its own package (`pipeline/<wing>/spec.py`, `model/stages.py`);
a stage reads the version of the one before it here. Flows, CLI, reruns, deployments, lineage
and the report loop over `STAGES` (read it as `stages.STAGES` at call time), so adding a stage
is its package plus one line below.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from model.stages import EVALUATE, TRAIN
from pipeline import crawl, dedup, extract, filters, tokenize
from pipeline.errors import DataError
from pipeline.stage import ParallelMap, Stage, StageResult, serial_map, source_input
from pipeline.stage import version_input as version_input  # flows plan with it
from pipeline.store import versions as store_versions
from pipeline.store.versions import Version, VersionPlan, short_hash

ROOT = Path(__file__).resolve().parents[1]  # Stage.code globs are relative to the repository

STAGES: list[Stage] = [
    crawl.STAGE,
    extract.STAGE,
    filters.STAGE,
    dedup.STAGE,
    tokenize.STAGE,
    TRAIN,
    EVALUATE,
]


def names(kind: str | None = None) -> list[str]:
    """The stage names in order (only those of `kind`, "data" or "model", if given)."""
    return [stage.name for stage in STAGES if kind is None or stage.kind == kind]


def by_name(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise DataError(f"unknown stage '{name}' (stages: {', '.join(names())})")


def upstream(name: str) -> str | None:
    """The stage whose version `name` reads: the one before it in the list."""
    index = names().index(by_name(name).name)
    return STAGES[index - 1].name if index else None


def is_model(name: str) -> bool:
    """True for model stages (train, evaluate); False for data stages and unknown names (a run
    record may name a stage this code no longer has)."""
    return any(stage.name == name and stage.kind == "model" for stage in STAGES)


def library_version(distribution: str) -> str:
    """The installed version of a distribution ("absent" when not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def files_version(patterns: tuple[str, ...]) -> str:
    """Hash of the files matching `patterns` (globs relative to ROOT): names and contents."""
    digest = hashlib.sha256()
    for path in sorted({p for pattern in patterns for p in ROOT.glob(pattern) if p.is_file()}):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def code_version(stage: Stage) -> str:
    """Hash of the stage's own files and of the versions of the libraries that shape its
    output: a trafilatura or tiktoken upgrade rebuilds, an unrelated edit does not (Prefect's
    TASK_SOURCE would hash one function's text; a stage depends on whole modules)."""
    libraries = {name: library_version(name) for name in stage.libraries}
    return short_hash({"files": files_version(stage.code), "libraries": libraries})


def plan(name: str, config: BaseModel, inputs: list[dict[str, str]]) -> VersionPlan:
    """The version a stage would produce from `config` and `inputs`, without running it.

    The config dumps with context `version_id`: a config may leave out what enters the id
    through `inputs` by content instead (train.init_from: the base model's hash).
    """
    dumped = config.model_dump(mode="json", context={"version_id": True})
    return VersionPlan(name, dumped, inputs, code_version(by_name(name)))


def resolve_source(
    name: str, config: Any, upstream_version: Version | None
) -> tuple[Any, list[dict[str, str]]]:
    """What stage `name` reads and how that input enters its version id (`config` is the
    whole PipelineConfig; `upstream_version` the version of the stage before it, or None)."""
    stage = by_name(name)
    if stage.resolve is None:
        raise DataError(f"stage '{name}' is not a data stage")
    return stage.resolve(config, upstream_version)


def execute(
    name: str, config: BaseModel, source: Any, out: Any, pmap: ParallelMap = serial_map
) -> StageResult:
    """Run one data stage into `out` on what its resolve (or standalone) gave."""
    stage = by_name(name)
    if stage.run is None:
        raise DataError(f"stage '{name}' is not a data stage")
    return stage.run(config, source, out, pmap)


def runs(name: str, config: Any) -> bool:
    """Whether a run with `config` runs stage `name` at all (a crawl only for source.kind =
    "crawl"), whatever its `run.until`."""
    stage = by_name(name)
    return stage.active is None or stage.active(config)


def stages_to_run(config: Any) -> list[str]:
    """The chain a run executes: the stages it runs, up to `run.until`."""
    chosen = names()[: names().index(by_name(config.run.until).name) + 1]
    return [name for name in chosen if runs(name, config)]


def preflight(config: Any, chosen: list[str]) -> None:
    """Check the cheap things before any work starts, so bad input fails in one line at once:
    seed URLs, WARC paths, document files and their text column, the tokenizer's BPE files,
    the HellaSwag file."""
    for name in chosen:
        stage = by_name(name)
        if stage.check is not None:
            stage.check(config)


def check_input(name: str, input_path: Path, tokens: Path | None = None) -> None:
    """Check a model stage's token input before any work: one line naming the file and the
    column if it is not a token dataset (train reads `input_path`, evaluate `tokens`)."""
    stage = by_name(name)
    if stage.check_input is not None:
        stage.check_input(input_path, tokens)


def load_version(storage: Any, ref: dict[str, Any]) -> Version:
    """A version from a summary dict (`{"stage": ..., "version_id": ...}`), as flows pass them."""
    return store_versions.load_version(storage, ref["stage"], ref["version_id"])


def standalone_source(name: str, input_path: Path, reading: Any = None) -> Any:
    """What `llmforge stage NAME --input PATH` reads: WARC file(s), a documents folder, or
    any Parquet/JSONL file or folder with a text column (`sources.SourceFiles`, read with
    `reading`: the `source` section's DocumentsConfig keys)."""
    stage = by_name(name)
    if stage.standalone is None:
        raise DataError(f"stage '{name}' cannot run on --input (use --run RUN_ID)")
    return stage.standalone(input_path, reading)


def run_standalone(
    name: str,
    config: BaseModel,
    input_path: Path,
    output_path: Path,
    pmap: ParallelMap,
    reading: Any = None,
) -> dict[str, Any]:
    """Run one stage from a path into a path, committed atomically like a version.

    `reading` (the config's `source` section) says how to read inputs that are not document
    shards (text column, column names); see pipeline/extract/sources.py.
    """
    import shutil

    from pipeline.documents import list_shards
    from pipeline.extract.sources import SourceFiles
    from pipeline.store.versions import Storage, build_version, standalone_work_root

    source = standalone_source(name, input_path, reading)
    if isinstance(source, SourceFiles):
        files = list(source.files)
    else:
        files = source if isinstance(source, list) else list_shards(source)
    if output_path.exists() and any(output_path.iterdir()):
        raise DataError(f"{output_path}: output folder exists and is not empty")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    work = Storage.at(standalone_work_root(output_path))  # unique per command (pid + random)
    try:
        version = build_version(
            work,
            plan(name, config, [source_input(files)]),
            lambda out: execute(name, config, source, out, pmap),
        )
        if output_path.exists():
            output_path.rmdir()  # empty (checked above): the rename needs it gone
        version.path.rename(output_path)
    finally:
        shutil.rmtree(work.local, ignore_errors=True)
    return version.manifest
