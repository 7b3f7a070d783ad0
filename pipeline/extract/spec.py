"""The extract stage as the pipeline sees it: WARC files (a crawl version's, or the user's), or
documents other tools wrote (`source.kind = "documents"`), into document shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.extract import extractor, sources
from pipeline.extract.extractor import ExtractConfig
from pipeline.extract.warc import WarcFile, list_warc_files, warc_files_in
from pipeline.stage import ParallelMap, Stage, StageResult, source_input, version_input
from pipeline.store.versions import fingerprint_files, short_hash


def warc_files_of(version: Any) -> list[WarcFile]:
    """The WARC files a crawl version wrote, read through the store; documents record them
    relative to the storage root, so extract writes the same bytes under any root."""
    return warc_files_in(version.folder / "warc", f"versions/crawl/{version.version_id}/warc")


def documents_source(source: Any, fingerprint: bool = True) -> tuple[Any, list[dict[str, str]]]:
    """`source.kind = "documents"`: the files, checked, and how they enter the version id
    (their content, and the settings that change what is read from them)."""
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


def resolve(config: Any, upstream: Any) -> tuple[Any, list[dict[str, str]]]:
    """WARC files of the crawl version, or (source.kind "warc"/"documents") the user's files."""
    if config.source.kind == "documents":
        return documents_source(config.source)
    if config.source.kind == "warc":
        if not config.source.warc_paths:
            raise DataError("config error: source.warc_paths: empty while source.kind = 'warc'")
        files = [f for p in config.source.warc_paths for f in list_warc_files(p)]
        return files, [source_input(files)]
    if upstream is None:
        raise DataError("stage 'extract' needs the output of 'crawl'")
    return warc_files_of(upstream), [version_input(upstream)]


def check(config: Any) -> None:
    """WARC paths, document files and their text column, before any work."""
    if config.source.kind == "warc":
        resolve(config, None)
    elif config.source.kind == "documents":
        documents_source(config.source, fingerprint=False)  # paths and text columns only


def run(config: ExtractConfig, source: Any, out: Any, pmap: ParallelMap) -> StageResult:
    """Extract WARC files, or read other tools' documents (`sources.SourceFiles`)."""
    if isinstance(source, sources.SourceFiles):
        return sources.ingest(source.config, source.files, out, pmap)
    return extractor.run(config, list(source), out, pmap)


def standalone(input_path: Path, reading: Any = None) -> list[Path]:
    """`llmforge stage extract --input` reads a WARC file or a folder of them."""
    return list_warc_files(input_path)


STAGE = Stage(
    name="extract",
    config=ExtractConfig,
    code=(
        "pipeline/extract/*.py",
        "pipeline/documents.py",
        "pipeline/stage.py",
        "pipeline/langid.py",
    ),
    libraries=("trafilatura", "py3langid", "lxml"),
    resolve=resolve,
    run=run,
    check=check,
    standalone=standalone,
)
