"""Filter, dedup and tokenize through `store.fs.Folder`: an in-process `memory://` filesystem
stands in for an object store that Dask workers on other machines share instead of a disk.

The chain into memory must write exactly the files, byte for byte, that it writes into local
folders, and the shard tasks it ships must name only URLs (what a remote worker can reach),
never a path of the driver's disk.
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import pytest

from pipeline.dedup import BandTask, DedupConfig, IndexTask, SignTask, WriteTask
from pipeline.dedup import run as dedup
from pipeline.filters import FilterConfig, FilterTask
from pipeline.filters import run as filter_run
from pipeline.stage import serial_map
from pipeline.store.fs import Folder
from pipeline.tokenize import TokenizeConfig
from pipeline.tokenize import run as tokenize
from pipeline.tokenize.tokenizer import TokenizeTask
from tests.pipeline.test_filters import CLEAN, GERMAN, write_shard

STAGES = ("filter", "retuned", "dedup", "again", "tokens")
TASKS = (FilterTask, SignTask, IndexTask, BandTask, WriteTask, TokenizeTask)


def write_input(folder: Path) -> None:
    """Three shards: kept pages, exact and near copies, pages the filters drop, one empty."""
    near = CLEAN.replace("winter storms", "autumn gales")
    other = "\n".join(line.replace("lighthouse", "windmill") for line in CLEAN.splitlines()[::-1])
    write_shard(folder / "part-00000.parquet", [CLEAN, GERMAN, "Too short.", other])
    write_shard(folder / "part-00001.parquet", [CLEAN + "\n", near, other + " Also this."])
    write_shard(folder / "part-00002.parquet", [])


def run_chain(source: Folder | Path, root: Folder, pmap=serial_map) -> None:
    """filter, re-tune from its attributes, dedup, dedup again against the first, tokenize;
    every output folder under root."""
    filter_run(FilterConfig(), source, root / "filter", pmap)
    stored = root / "filter" / "attributes"
    retuned = filter_run(FilterConfig(), source, root / "retuned", pmap, attributes_from=stored)
    assert retuned.extra["signals"] == "stored"
    dedup(DedupConfig(), root / "filter" / "data", root / "dedup", pmap)
    again = DedupConfig(against=[(root / "dedup").url])
    dedup(again, root / "filter" / "data", root / "again", pmap)
    tokenize(TokenizeConfig(val_fraction=0.3), root / "dedup", root / "tokens", pmap)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """(local root, memory root, every task the memory run shipped, the driver's tmp dir)."""
    tmp = tmp_path_factory.mktemp("stage_io")
    write_input(tmp / "input")
    local = Folder(tmp / "local")
    run_chain(tmp / "input", local)

    memory = Folder(f"memory://stage-io-{uuid.uuid4().hex}")
    (memory / "input").put_tree(tmp / "input")
    shipped = []

    def recording_map(fn, items, name=""):
        shipped.extend(items)
        return serial_map(fn, items, name)

    run_chain(memory / "input", memory, recording_map)
    yield local, memory, shipped, tmp
    memory.remove()


def test_memory_run_writes_the_same_bytes_as_a_local_run(chains):
    local, memory, _, _ = chains
    for stage in STAGES:
        names = local.list(f"{stage}/**")
        assert names, stage
        assert memory.list(f"{stage}/**") == names
        for name in names:
            assert memory.read_bytes(name) == local.read_bytes(name), name
    assert not memory.exists("dedup/work") and not local.exists("dedup/work")


def test_shard_tasks_carry_urls_not_driver_paths(chains):
    _, memory, shipped, tmp = chains
    assert {type(task) for task in shipped} == set(TASKS)
    for task in shipped:
        data = pickle.dumps(task)
        assert memory.url.encode() in data, task
        assert str(tmp).encode() not in data, task
        assert pickle.loads(data) == task
