"""What every stage that reads document shards shares (filter, dedup, tokenize, and any new
one): its input from the upstream version, from `--input PATH`, and the column check.

A document stage's `run` gets the upstream documents folder, or `sources.SourceFiles`
(Parquet/JSONL from other tools), which `reading_documents` converts first; a hook may pair
the folder with more (`(documents, extra)`: filter's stored signals, dedup's earlier versions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.stage import ParallelMap, StageResult, version_input
from pipeline.store.fs import Folder, as_folder

# run(config, (documents folder, extra or None), out, pmap)
DocumentRun = Callable[[Any, tuple[Folder, Any], Any, ParallelMap], StageResult]


def documents_dir(version: Any) -> Folder:
    """Where a document stage's kept documents live inside its version."""
    return version.folder / "data"


def resolve_documents(name: str) -> Callable[[Any, Any], tuple[Folder, list[dict[str, str]]]]:
    """The usual resolve: the upstream version's documents, entering the id by version id."""

    def resolve(config: Any, upstream: Any) -> tuple[Folder, list[dict[str, str]]]:
        if upstream is None:
            raise DataError(f"stage '{name}' needs the output of the stage before it")
        return documents_dir(upstream), [version_input(upstream)]

    return resolve


def open_documents(input_path: Path, reading: Any = None) -> Any:
    """What `llmforge stage NAME --input PATH` reads: a documents folder (or a version folder
    holding one under data/), or any Parquet/JSONL file or folder with a text column
    (`sources.SourceFiles`, read with `reading`: the `source` section's DocumentsConfig keys)."""
    from pipeline.documents import SHARD_GLOB, is_document_shard
    from pipeline.extract import sources

    if not input_path.exists():
        raise DataError(f"{input_path}: no such file or directory")
    folder = input_path / "data" if (input_path / "data").is_dir() else input_path
    shards = [folder] if folder.is_file() else sorted(folder.glob(SHARD_GLOB))
    if shards and all(is_document_shard(shard) for shard in shards):
        return folder
    settings = sources.reading_config(reading)
    files = sources.list_source_files([str(input_path)])
    sources.check_files(files, settings)
    return sources.SourceFiles(tuple(files), settings)


def check_documents(folder: Folder | Path, columns: Sequence[str] | None = None) -> list[Any]:
    """The input shards, each checked to hold the document columns the stage reads: a wrong
    input fails here in one line naming the file and the column, before any work."""
    from pipeline.documents import DOCUMENT_SCHEMA, check_shard, list_shards

    shards = list_shards(folder)
    for shard in shards:
        check_shard(shard, DOCUMENT_SCHEMA, list(columns) if columns is not None else None)
    return shards


def reading_documents(
    run: DocumentRun, columns: Sequence[str] | None = None, languages: bool = False
) -> Callable[[Any, Any, Any, ParallelMap], StageResult]:
    """`run` on a documents folder, converting external files first (into `out/.input`,
    deleted after; with `languages` detected, which only the language filter needs)."""

    def runner(config: Any, source: Any, out: Any, pmap: ParallelMap) -> StageResult:
        from pipeline.extract import sources

        documents, extra = source if isinstance(source, tuple) else (source, None)
        converted = None
        if isinstance(documents, sources.SourceFiles):
            converted = as_folder(out) / ".input"
            read = documents.config
            if not languages:
                read = read.model_copy(update={"detect_language": False})
            sources.ingest(read, documents.files, converted, pmap)
            documents = converted / "data"
        documents = as_folder(documents)
        check_documents(documents, columns)
        try:
            return run(config, (documents, extra), out, pmap)
        finally:
            if converted is not None:
                converted.remove()

    return runner
