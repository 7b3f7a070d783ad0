"""The small interface every stage shares: the `Stage` record, results with counts, and a
parallel-map hook.

Each wing (`pipeline/crawl/`, `extract/`, `filters/`, `dedup/`, `tokenize/`, and `model/` for
train and evaluate) exports one `Stage`; `pipeline/stages.py` lists them in order, and the
flows, CLI, reruns, lineage and report loop over that list. Its `run` is a plain function
`run(config, source, out, pmap) -> StageResult` writing into `out` (a `store.fs.Folder`). Per-shard
work goes through `pmap(fn, items, name)`, which the caller supplies: `serial_map` in a REPL
or test, a process pool locally, mapped Prefect tasks in `flows/` (one task per shard), or a
Dask cluster. `fn` must be a picklable module-level function taking one item.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pipeline.lifeline import pool_worker

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Stage:
    """Everything the rest of the project needs to know about one stage.

    A stage reads the version of the stage before it in `pipeline/stages.py`'s list (its
    upstream), so inserting a stage there is one line. Hooks that most stages leave as None
    carry the few special cases (crawl progress, filter re-deciding from stored signals, dedup
    against earlier weeks) so flows never test a stage's name.
    """

    name: str  # also its section of the run config (`[filter]`) and its versions/ folder
    config: type  # its config model (pydantic), defined in its own package
    # Its own code, globs relative to the repository root: editing them changes its version id.
    code: tuple[str, ...]
    # Distributions whose version shapes its output (trafilatura, tiktoken, torch, ...).
    libraries: tuple[str, ...] = ()
    # (run config, upstream Version | None) -> (what it reads, how that enters the version id)
    resolve: Callable[[Any, Any], tuple[Any, list[dict[str, Any]]]] | None = None
    # (config section, source, out folder, pmap) -> StageResult
    run: Callable[..., StageResult] | None = None
    # Cheap checks on the run config before any work (seeds, paths, BPE files): one line each.
    check: Callable[[Any], None] | None = None
    # Whether a run config runs this stage at all (None: always; crawl: source.kind = "crawl").
    active: Callable[[Any], bool] | None = None
    # (input path, `source` section) -> what `llmforge stage NAME --input PATH` reads
    # (None, and no `command`: the stage needs --run).
    standalone: Callable[[Path, Any], Any] | None = None
    kind: str = "data"  # "data" (documents/tokens: flows/data.py) or "model" (flows/model.py)
    # Optional hooks, None for most stages:
    # (config section, update(done, total)) -> source: a stage that reports its own progress.
    progress: Callable[[Any, Callable[[int, int], None]], Any] | None = None
    # (storage, plan, config section, source) -> source | None: reuse stored work of an earlier
    # version with the same output (filter: signals measured under other thresholds).
    reuse: Callable[[Any, Any, Any, Any], Any] | None = None
    # (source, earlier versions of this stage) -> source: the stage also reads its own
    # versions of earlier runs (dedup, with run.dedup_against_previous_runs).
    earlier: Callable[[Any, list[Any]], Any] | None = None
    # Model stages run `llmforge stage NAME --input --output` themselves:
    # (run config, input, output, options) -> manifest; `options` names the CLI options they
    # take (train: resume, evaluate: tokens); `check_input(input, tokens)` checks token input.
    command: Callable[[Any, Path, Path, dict[str, Any]], dict[str, Any]] | None = None
    options: tuple[str, ...] = ()
    check_input: Callable[[Path, Path | None], None] | None = None
    # counts["extra"] -> one line for the CLI (None: docs in/out and drops).
    describe: Callable[[dict[str, Any]], str] | None = None


def version_input(version: Any) -> dict[str, str]:
    """How an upstream version enters a version id: by stage and id, never by path."""
    return {"stage": version.stage, "version_id": version.version_id}


def source_input(paths: Sequence[Path]) -> dict[str, str]:
    """External inputs (user WARC files, a documents folder) enter the id by content."""
    from pipeline.store.versions import fingerprint_files

    return {"source": "files", "fingerprint": fingerprint_files(list(paths))}


@dataclass
class ShardResult:
    """What one unit of per-shard work did: counts in and out, drops per reason."""

    shard: str
    docs_in: int = 0
    docs_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific counters (tokens, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageResult:
    """What a whole stage did; becomes the counts part of the version's manifest.json."""

    docs_in: int
    docs_out: int
    drops: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_shards(
        cls, results: Sequence[ShardResult], extra: dict[str, Any] | None = None
    ) -> StageResult:
        drops: Counter[str] = Counter()
        for result in results:
            drops.update(result.drops)
        return cls(
            docs_in=sum(r.docs_in for r in results),
            docs_out=sum(r.docs_out for r in results),
            drops=dict(sorted(drops.items())),
            extra=extra or {},
            shards=[r.to_dict() for r in results],
        )


def scalar_extras(counts: dict[str, Any]) -> dict[str, Any]:
    """A manifest's stage-specific counters that are single values (numbers, strings), for
    one-line summaries; lists of files or samples stay in the manifest."""
    return {
        k: v for k, v in (counts.get("extra") or {}).items() if isinstance(v, int | float | str)
    }


class ParallelMap(Protocol):
    def __call__(self, fn: Callable[[T], R], items: Sequence[T], name: str = ...) -> list[R]: ...


def serial_map(fn: Callable[[T], R], items: Sequence[T], name: str = "") -> list[R]:
    """Run each item in this process: REPLs, tests, debugging."""
    return [fn(item) for item in items]


def process_map(workers: int | None = None) -> ParallelMap:
    """A ParallelMap over a local process pool: CPU-bound shards run outside the GIL."""
    workers = workers or os.cpu_count() or 1

    def pmap(fn: Callable[[T], R], items: Sequence[T], name: str = "") -> list[R]:
        if workers <= 1 or len(items) <= 1:
            return serial_map(fn, items, name)
        # Workers die with this process, however it dies (pipeline/lifeline.py).
        with ProcessPoolExecutor(
            max_workers=min(workers, len(items)),
            initializer=pool_worker,
            initargs=(os.getpid(),),
        ) as pool:
            return list(pool.map(fn, items))

    return pmap
