"""Per-shard work as Prefect tasks: one task per shard (never per document), CPU outside the GIL.

Locally each shard task runs on Prefect's thread pool and hands its CPU work to a shared
process pool, so both cores are busy while every shard still shows as a task run in the UI.
With `executor = "dask"` the shard tasks run on a Dask cluster through prefect-dask's
DaskTaskRunner and call the stage function directly in the Dask worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.monitor import Progress
from pipeline.config import RunSettings
from pipeline.lifeline import pool_worker
from pipeline.stage import ParallelMap
from pipeline.store.fs import is_url

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

_pool: ProcessPoolExecutor | None = None
_pool_workers = 0


def process_pool(workers: int) -> ProcessPoolExecutor:
    """One pool per process, reused by every stage: spawning workers costs ~1 s each.

    Workers die with this process however it dies (pipeline/lifeline.py), noticed by a polling
    thread: they are started from Prefect's task threads, whose end would fire Linux's
    thread-bound parent-death signal while this process still uses them."""
    global _pool, _pool_workers
    if _pool is None or _pool_workers != workers:
        shutdown_pool()
        # spawn, not fork: the parent runs Prefect's threads and event loops.
        _pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=pool_worker,
            initargs=(os.getpid(),),
        )
        _pool_workers = workers
    return _pool


def shutdown_pool() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


@task(cache_policy=NO_CACHE, persist_result=False)
def run_shard(fn: Callable[[Any], Any], item: Any, workers: int) -> Any:
    """One unit of a stage's per-shard work; `workers == 0` runs it right here (Dask)."""
    if workers == 0:
        return fn(item)
    return process_pool(workers).submit(fn, item).result()


def task_runner(settings: RunSettings) -> TaskRunner:
    """The task runner for data stages: threads locally, a Dask cluster when configured."""
    if settings.executor == "dask":
        try:
            import dask
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise RuntimeError(
                "executor 'dask' needs prefect-dask: pip install prefect-dask"
            ) from None
        # Non-daemonic workers may start children: extraction's killable sandbox process.
        dask.config.set({"distributed.worker.daemon": False})
        if settings.dask_address:
            if not is_url(settings.storage_root):
                # Workers on other machines write where the tasks say: under this path.
                log.warning(
                    "run.storage_root %r is a local path while run.dask_address points to a "
                    "cluster: workers on other machines need it at the same path (a shared "
                    "mount), or use a URL root (s3://...) that every machine reaches",
                    settings.storage_root,
                )
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.workers)


def prefect_map(settings: RunSettings, progress: Progress | None = None) -> ParallelMap:
    """A ParallelMap that submits one Prefect task per item to the current flow's runner.

    Every call (a stage may map several phases) advances `progress` as its shards finish.
    """
    pool_workers = 0 if settings.executor == "dask" else settings.workers

    def pmap(fn: Callable[[T], R], items: Sequence[T], name: str = "shard") -> list[R]:
        futures = [
            run_shard.with_options(task_run_name=f"{name}-{index:05d}").submit(
                fn, item, pool_workers
            )
            for index, item in enumerate(items)
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            future.wait()
            if progress is not None:
                progress.update(done, len(futures), force=done == len(futures))
        return [future.result() for future in futures]

    return pmap
