"""The filter stage: run the configured filters over every shard of a documents dataset.

Each input shard `part-NNNNN.parquet` becomes `data/part-NNNNN.parquet` (kept, cleaned by C4
and redacted by PII), `removed/part-NNNNN.parquet` (the original document plus the first
failing reason) and `attributes/part-NNNNN.parquet` (every signal and verdict per document).

    from pipeline.filters import FilterConfig, run, retune
    result = run(FilterConfig(), Path("extracted/"), Path("filtered.tmp/"))  # or Folder, URL
    # New thresholds, same measurements: re-decide from the stored attributes.
    config = FilterConfig.model_validate({"gopher_quality": {"min_doc_words": 100}})
    result = retune(config, Path("extracted/"), Path("filtered.tmp/attributes"), Path("v2.tmp/"))
"""

from __future__ import annotations

import logging

from pipeline.documents import Source, shard_folder
from pipeline.errors import EmptyStageError
from pipeline.filters.attributes import reuse_problem
from pipeline.filters.config import FilterConfig, signals_config
from pipeline.filters.shard import STAGE, FilterTask, filter_shard
from pipeline.stage import ParallelMap, StageResult, serial_map
from pipeline.store.fs import as_folder

log = logging.getLogger(__name__)


def run(
    config: FilterConfig,
    input_dir: Source,
    out_dir: Source,
    pmap: ParallelMap = serial_map,
    attributes_from: Source | None = None,
) -> StageResult:
    """Filter every shard of `input_dir` into `out_dir`; raises EmptyStageError if none kept.

    With `attributes_from` (an earlier run's `attributes/` folder over the same input), the
    filters decide from its stored signals instead of measuring, when they were measured under
    the same `signals_config`; otherwise it measures again and says why in
    `extra["retune_fallback"]`. Either way the outputs are those of a full run. Every folder
    may be a local path or a URL: tasks carry URLs, each writes its own shards.
    """
    out = as_folder(out_dir)
    folder, names = shard_folder(input_dir)
    wanted = signals_config(config)  # also checks the list files before any work
    extra: dict[str, str] = {"signals": "measured"}
    source = None
    if attributes_from is not None:
        problem = reuse_problem(attributes_from, names, wanted)
        if problem is None:
            source = as_folder(attributes_from)
            extra["signals"] = "stored"
        else:
            log.warning("filter: measuring signals again: %s", problem)
            extra["retune_fallback"] = problem
    tasks = [
        FilterTask(folder.url_of(name), out, config, source.url_of(name) if source else None)
        for name in names
    ]
    shard_results = pmap(filter_shard, tasks, STAGE)
    totals = {key: sum(r.extra[key] for r in shard_results) for key in shard_results[0].extra}
    result = StageResult.from_shards(shard_results, extra={**totals, **extra})
    if result.docs_out == 0:
        raise EmptyStageError(STAGE, result.drops)
    return result


def retune(
    config: FilterConfig,
    input_dir: Source,
    attributes_dir: Source,
    out_dir: Source,
    pmap: ParallelMap = serial_map,
) -> StageResult:
    """`run` deciding from the signals stored in `attributes_dir` (see `run`)."""
    return run(config, input_dir, out_dir, pmap, attributes_from=attributes_dir)
