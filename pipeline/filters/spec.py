"""The filter stage as the pipeline sees it: the extract version's documents (or other tools'
files) through the configured filters; new thresholds re-decide from stored signals."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.document_stage import open_documents, reading_documents, resolve_documents
from pipeline.filters.config import FilterConfig, signals_config, thresholds_only_change
from pipeline.filters.stage import run as run_filters
from pipeline.stage import ParallelMap, Stage, StageResult
from pipeline.store.versions import short_hash

log = logging.getLogger(__name__)


def resolve(config: Any, upstream: Any) -> tuple[Any, list[dict[str, str]]]:
    """The upstream documents; user blocklist files enter the id by content, not by path."""
    documents, inputs = resolve_documents("filter")(config, upstream)
    lists = {"source": "filter-lists", "fingerprint": short_hash(signals_config(config.filter))}
    return documents, [*inputs, lists]


def retune_donor(storage: Any, plan: Any, config: FilterConfig) -> Any:
    """An earlier filter version that differs only in thresholds, if any, checked against its
    manifest before use (a `Version`).

    Re-deciding from stored signals gives the same output as a full run (tested in
    tests/pipeline/test_filters_attributes.py), so the new version keeps its planned id and
    only skips recomputing the signals.
    """
    from pipeline.store.versions import MANIFEST, load_version

    folder = storage.versions / plan.stage
    for name in folder.list(f"*/{MANIFEST}"):
        manifest = folder.read_json(name)
        if manifest["inputs"][:1] != plan.inputs[:1]:
            continue
        if manifest["code_version"] != plan.code_version:
            continue
        if thresholds_only_change(FilterConfig.model_validate(manifest["config"]), config):
            return load_version(storage, plan.stage, name.split("/", 1)[0])
    return None


def reuse(storage: Any, plan: Any, config: FilterConfig, source: Any) -> Any:
    """`(documents, attributes)` when an earlier version's stored signals can decide."""
    donor = retune_donor(storage, plan, config)
    if donor is None:
        return None
    log.info("filter: re-deciding from stored signals of %s", donor.folder)
    return source, donor.folder / "attributes"


def run(
    config: FilterConfig, source: tuple[Path, Path | None], out: Any, pmap: ParallelMap
) -> StageResult:
    documents, attributes_from = source
    return run_filters(config, documents, out, pmap, attributes_from=attributes_from)


STAGE = Stage(
    name="filter",
    config=FilterConfig,
    code=(
        "pipeline/filters/*.py",
        "pipeline/filters/data/*",
        "pipeline/documents.py",
        "pipeline/document_stage.py",
        "pipeline/stage.py",
        "pipeline/langid.py",
        "pipeline/contamination.py",
    ),
    libraries=("py3langid",),
    resolve=resolve,
    run=reading_documents(run, languages=True),  # only the language filter uses languages
    standalone=open_documents,
    reuse=reuse,
)
