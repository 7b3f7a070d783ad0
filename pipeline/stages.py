"""The stage registry: what each stage reads, which code it runs, and how its version is planned.

The only place that knows the chain crawl → extract → filter → dedup → tokenize → train →
evaluate. `flows/` and the CLI call `plan(...)` and `execute(...)`; nothing else wires stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.errors import DataError
from pipeline.stage import ParallelMap, StageResult, serial_map
from pipeline.store.fs import Folder, as_folder
from pipeline.store.versions import (
    Version,
    VersionPlan,
    code_version,
    fingerprint_files,
    short_hash,
)

COMMON_CODE = ["pipeline/documents.py", "pipeline/stage.py"]


@dataclass(frozen=True)
class StageSpec:
    name: str
    upstream: str | None  # the stage whose version this one reads (None: external source)
    code: tuple[str, ...]  # source globs whose content is part of the version id

    def code_version(self) -> str:
        return code_version([*COMMON_CODE, *self.code])


SPECS: dict[str, StageSpec] = {
    spec.name: spec
    for spec in [
        StageSpec("crawl", None, ("pipeline/crawl/*.py",)),
        StageSpec(
            "extract",
            "crawl",
            (
                "pipeline/extract/*.py",
                "pipeline/langid.py",
            ),
        ),
        StageSpec(
            "filter",
            "extract",
            (
                "pipeline/filters/*.py",
                "pipeline/filters/data/*.txt",
                "pipeline/langid.py",
                "pipeline/contamination.py",
            ),
        ),
        StageSpec("dedup", "filter", ("pipeline/dedup/*.py",)),
        StageSpec("tokenize", "dedup", ("pipeline/tokenize/*.py",)),
        StageSpec("train", "tokenize", ("model/*.py",)),
        StageSpec("evaluate", "train", ("model/*.py", "pipeline/contamination.py")),
    ]
}
DATA_STAGES = ("crawl", "extract", "filter", "dedup", "tokenize")


def spec(stage: str) -> StageSpec:
    try:
        return SPECS[stage]
    except KeyError:
        raise DataError(f"unknown stage '{stage}' (stages: {', '.join(SPECS)})") from None


def config_dict(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")


def plan(stage: str, config: BaseModel, inputs: list[dict[str, str]]) -> VersionPlan:
    """The version a stage would produce from `config` and `inputs`, without running it."""
    return VersionPlan(stage, config_dict(config), inputs, spec(stage).code_version())


def version_input(version: Version) -> dict[str, str]:
    return {"stage": version.stage, "version_id": version.version_id}


def source_input(paths: list[Path]) -> dict[str, str]:
    """External inputs (user WARC files, a documents folder) enter the id by content."""
    return {"source": "files", "fingerprint": fingerprint_files(paths)}


def _run_crawl(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
    from pipeline import crawl

    return crawl.crawl(config, out_dir, on_progress=source)


def _run_extract(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
    from pipeline import extract
    from pipeline.extract import sources

    if isinstance(source, sources.SourceFiles):  # source.kind = "documents": read, not extract
        return sources.ingest(source.config, source.files, out_dir, pmap)
    return extract.run(config, list(source), out_dir, pmap)


# The document columns each stage reads from its input shards (checked before any work).
INPUT_COLUMNS: dict[str, list[str] | None] = {
    "filter": None,
    "dedup": None,
    "tokenize": ["id", "text"],
}


def check_documents(stage: str, folder: Path) -> list[Path]:
    """The input shards of `stage`, each checked to hold the document columns it reads: a
    wrong input fails here in one line naming the file and the column, before any work."""
    from pipeline.documents import DOCUMENT_SCHEMA, check_shard, list_shards

    shards = list_shards(folder)
    for shard in shards:
        check_shard(shard, DOCUMENT_SCHEMA, INPUT_COLUMNS[stage])
    return shards


Runner = Callable[[Any, Any, Path, ParallelMap], StageResult]


def with_documents(stage: str, run: Runner) -> Runner:
    """Run a document stage on a documents folder, converting external files first."""

    def runner(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
        import shutil

        from pipeline.extract import sources

        documents, rest = source if isinstance(source, tuple) else (source, None)
        converted = None
        if isinstance(documents, sources.SourceFiles):
            converted = Path(out_dir) / ".input"
            read = documents.config
            if stage != "filter":  # only the language filter uses languages
                read = read.model_copy(update={"detect_language": False})
            sources.ingest(read, documents.files, converted, pmap)
            documents = converted / "data"
        check_documents(stage, documents)
        try:
            return run(config, (documents, rest), out_dir, pmap)
        finally:
            if converted is not None:
                shutil.rmtree(converted, ignore_errors=True)

    return runner


def _run_filter(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
    from pipeline import filters

    documents, attributes_from = source
    return filters.run(config, documents, out_dir, pmap, attributes_from=attributes_from)


def _run_dedup(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
    from pipeline import dedup

    return dedup.run(config, source[0], out_dir, pmap)


def _run_tokenize(config: Any, source: Any, out_dir: Path, pmap: ParallelMap) -> StageResult:
    from pipeline import tokenize

    return tokenize.run(config, source[0], out_dir, pmap)


RUNNERS: dict[str, Runner] = {
    "crawl": _run_crawl,
    "extract": _run_extract,
    "filter": with_documents("filter", _run_filter),
    "dedup": with_documents("dedup", _run_dedup),
    "tokenize": with_documents("tokenize", _run_tokenize),
}


def execute(
    stage: str,
    config: BaseModel,
    source: Any,
    out_dir: Path | Folder,
    pmap: ParallelMap = serial_map,
) -> StageResult:
    """Run one data stage into `out_dir`.

    `source` is what the stage reads: for crawl an optional progress callback; for extract a
    list of WARC files or `sources.SourceFiles`; otherwise the documents folder
    (`<version>/data`) of the upstream stage, or `sources.SourceFiles` (Parquet/JSONL from
    other tools), converted into `out_dir/.input` first and deleted after.
    """
    if isinstance(out_dir, Folder) and out_dir.is_local:
        out_dir = out_dir.local_path()  # runners that still take a Path (build_version: Folder)
    return RUNNERS[stage](config, source, out_dir, pmap)


def documents_dir(version: Path | Folder) -> Path | Folder:
    """Where a document stage's kept documents live inside its version (a local path when the
    version is local)."""
    if isinstance(version, Folder):
        return version.local_path("data") if version.is_local else version / "data"
    return version / "data"


def warc_files_of(version: Path | Folder) -> list[Path] | list[str]:
    """The WARC files a crawl version wrote: local paths, or URLs on a URL root."""
    folder = as_folder(version) / "warc"
    names = folder.list("*.warc.gz")
    if folder.is_local:
        return [folder.local_path(name) for name in names]
    return [folder.url_of(name) for name in names]


def snapshot_label(snapshot: str, now: datetime | None = None) -> str:
    """`source.snapshot` with strftime codes filled in: "%G-W%V" gives one crawl per ISO week."""
    return (now or datetime.now(UTC)).strftime(snapshot) if "%" in snapshot else snapshot


def resolve_source(
    stage: str,
    config: Any,
    upstream: Version | None,
) -> tuple[Any, list[dict[str, str]]]:
    """What `stage` reads and how that input enters its version id.

    `config` is the whole PipelineConfig; `upstream` the version of `spec(stage).upstream`
    (None for crawl, and for extract when the source is existing WARC files).
    """
    if stage == "crawl":
        return None, [{"source": "seeds", "snapshot": snapshot_label(config.source.snapshot)}]
    if stage == "extract" and config.source.kind == "documents":
        return documents_source(config.source)
    if stage == "extract" and config.source.kind == "warc":
        from pipeline.extract.warc import list_warc_files

        if not config.source.warc_paths:
            raise DataError("config error: source.warc_paths: empty while source.kind = 'warc'")
        files = [f for p in config.source.warc_paths for f in list_warc_files(Path(p))]
        return files, [source_input(files)]
    if upstream is None:
        raise DataError(f"stage '{stage}' needs the output of '{spec(stage).upstream}'")
    if stage == "extract":
        return warc_files_of(upstream.folder), [version_input(upstream)]
    if stage == "filter":
        from pipeline.filters import signals_config

        # User blocklist files enter the id by content, not by path.
        lists = {"source": "filter-lists", "fingerprint": short_hash(signals_config(config.filter))}
        return documents_dir(upstream.folder), [version_input(upstream), lists]
    return documents_dir(upstream.folder), [version_input(upstream)]


def documents_source(source: Any, fingerprint: bool = True) -> tuple[Any, list[dict[str, str]]]:
    """`source.kind = "documents"`: the files, checked, and how they enter the version id
    (their content, and the settings that change what is read from them)."""
    from pipeline.extract import sources

    if not source.paths:
        raise DataError("config error: source.paths: empty while source.kind = 'documents'")
    files = sources.list_source_files(source.paths)
    settings = sources.reading_config(source)
    sources.check_files(files, settings)
    reading = settings.model_dump(mode="json", exclude={"paths"})
    # One input entry: lineage shows it as `<- source {source: documents, ...}`, the paths
    # being in the run's config.
    entry = {
        "source": "documents",
        "fingerprint": fingerprint_files(files) if fingerprint else "",
        "settings": short_hash(reading),
    }
    return sources.SourceFiles(tuple(files), settings), [entry]


def retune_donor(storage: Any, plan: VersionPlan, config: BaseModel) -> Version | None:
    """An earlier filter version that differs only in thresholds, if any (checked against its
    manifest before use): its stored attributes are re-decided instead of recomputed.

    Re-deciding from stored signals gives the same output as a full run (tested in
    tests/pipeline/test_filters_attributes.py), so the new version keeps its planned id and
    only skips recomputing the signals.
    """
    from pipeline.filters import FilterConfig, thresholds_only_change
    from pipeline.store.versions import MANIFEST
    from pipeline.store.versions import load_version as load

    folder = storage.versions / "filter"
    for name in folder.list(f"*/{MANIFEST}", files_only=False):
        manifest = folder.read_json(name)
        if manifest["inputs"][:1] != plan.inputs[:1]:
            continue
        if manifest["code_version"] != plan.code_version:
            continue
        if thresholds_only_change(FilterConfig.model_validate(manifest["config"]), config):
            return load(storage, "filter", name.split("/", 1)[0])
    return None


def load_version(storage: Any, ref: dict[str, Any]) -> Version:
    """A version from a summary dict (`{"stage": ..., "version_id": ...}`), as flows pass them."""
    from pipeline.store.versions import load_version as load

    return load(storage, ref["stage"], ref["version_id"])


def standalone_source(stage: str, input_path: Path, reading: Any = None) -> Any:
    """What `llmforge stage NAME --input PATH` reads: WARC file(s), a documents folder, or
    any Parquet/JSONL file or folder with a text column (`sources.SourceFiles`, read with
    `reading`: the `source` section's DocumentsConfig keys)."""
    if stage == "extract":
        from pipeline.extract.warc import list_warc_files

        return list_warc_files(input_path)
    if stage in ("filter", "dedup", "tokenize"):
        from pipeline.documents import SHARD_GLOB, is_document_shard
        from pipeline.extract import sources

        if not input_path.exists():
            raise DataError(f"{input_path}: no such file or directory")
        # Accept a version directory (documents under data/) as well as a bare shard folder.
        folder = documents_dir(input_path) if (input_path / "data").is_dir() else input_path
        shards = [folder] if folder.is_file() else sorted(folder.glob(SHARD_GLOB))
        if shards and all(is_document_shard(shard) for shard in shards):
            return folder
        settings = sources.reading_config(reading)
        files = sources.list_source_files([str(input_path)])
        sources.check_files(files, settings)
        return sources.SourceFiles(tuple(files), settings)
    raise DataError(f"stage '{stage}' cannot run on --input (use --run RUN_ID)")


def run_standalone(
    stage: str,
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

    source = standalone_source(stage, input_path, reading)
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
            plan(stage, config, [source_input(files)]),
            lambda out: execute(stage, config, source, out, pmap),
        )
        if output_path.exists():
            output_path.rmdir()  # empty (checked above): the rename needs it gone
        version.path.rename(output_path)
    finally:
        shutil.rmtree(work.local, ignore_errors=True)
    return version.manifest


def without_same_input(config: Any, upstream: Version) -> Any:
    """Drop earlier dedup versions built from this very input from `dedup.against`.

    A rerun of the same week must reuse its own dedup version, not find every document
    "seen before" in it.
    """
    from pipeline.store.versions import MANIFEST

    kept = []
    for path in config.dedup.against:
        manifest = Folder(path).read_json(MANIFEST)
        if manifest.get("inputs", [{}])[0].get("version_id") != upstream.version_id:
            kept.append(path)
    config = config.model_copy(deep=True)
    config.dedup.against = kept
    return config


def preflight(config: Any, stages: list[str]) -> None:
    """Check the cheap things before any work starts, so bad input fails in one line at once:
    seed URLs, WARC paths, document files and their text column, the tokenizer's BPE files,
    the HellaSwag file."""
    if "crawl" in stages:
        from pipeline.crawl.crawler import load_seeds

        load_seeds(config.crawl)
    if "extract" in stages and config.source.kind == "warc":
        resolve_source("extract", config, None)
    if "extract" in stages and config.source.kind == "documents":
        documents_source(config.source, fingerprint=False)  # paths and text columns only
    if "tokenize" in stages:
        from pipeline.tokenize.tokenizer import get_encoding

        get_encoding(config.tokenize.encoding)
    path = config.evaluate.hellaswag_path
    if "evaluate" in stages and path and not Path(path).is_file():
        raise DataError(f"{path}: no such file (evaluate.hellaswag_path)")


def stages_to_run(config: Any) -> list[str]:
    """The chain a run executes: from crawl (or extract, for WARC and document sources) to
    `run.until`."""
    from pipeline.config import STAGES

    first = "crawl" if config.source.kind == "crawl" else "extract"
    return list(STAGES[STAGES.index(first) : STAGES.index(config.run.until) + 1])


def check_input(stage: str, input_path: Path, tokens: Path | None = None) -> None:
    """Check a model stage's token input before any work: one line naming the file and the
    column if it is not a token dataset (train reads `input_path`, evaluate `tokens`)."""
    from pipeline.tokenize.tokenizer import check_token_dataset

    if stage == "train":
        check_token_dataset(input_path, ("train", "val"))
    elif stage == "evaluate" and tokens is not None:
        check_token_dataset(tokens, ("val",))
