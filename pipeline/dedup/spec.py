"""The dedup stage as the pipeline sees it: the filter version's documents, and (weekly runs)
the dedup versions of earlier runs, which enter the version id by id, never by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.dedup.config import DedupConfig
from pipeline.dedup.stage import run as run_dedup
from pipeline.document_stage import open_documents, reading_documents, resolve_documents
from pipeline.stage import ParallelMap, Stage, StageResult


def earlier(source: Any, versions: list[Any]) -> tuple[Any, list[str]]:
    """Pair the documents with the folders of earlier versions to dedup against."""
    return source, [v.folder.url for v in versions]


def run(
    config: DedupConfig, source: tuple[Path, list[str] | None], out: Any, pmap: ParallelMap
) -> StageResult:
    """`dedup.against` (folders, for `llmforge stage dedup` and Python callers) plus the
    earlier versions the run resolved through its storage."""
    documents, against = source
    if against:
        config = config.model_copy(update={"against": [*config.against, *against]})
    return run_dedup(config, documents, out, pmap)


STAGE = Stage(
    name="dedup",
    config=DedupConfig,
    code=(
        "pipeline/dedup/*.py",
        "pipeline/documents.py",
        "pipeline/document_stage.py",
        "pipeline/stage.py",
    ),
    libraries=("datasketch",),
    resolve=resolve_documents("dedup"),
    run=reading_documents(run),
    standalone=open_documents,
    earlier=earlier,
)
