"""Reuse checks a committed version against its manifest: edits after the fact are caught."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.stage import StageResult
from pipeline.store import integrity
from pipeline.store.integrity import IntegrityError, clear_cache
from pipeline.store.runs import RunRecord, earlier_versions
from pipeline.store.versions import Storage, VersionPlan, build_version, find_version, load_version

PLAN = VersionPlan("filter", {"k": 1}, [{"stage": "extract", "version_id": "0" * 16}], "c1")


def compute(out):
    """Two real Parquet shards, as a document stage writes them."""
    for i in range(2):
        table = pa.table({"id": [f"d{i}-{j}" for j in range(50)], "text": ["words " * 40] * 50})
        with out.output(f"data/part-{i:05d}.parquet") as path:
            pq.write_table(table, path)
    return StageResult(docs_in=100, docs_out=100)


@pytest.fixture
def built(tmp_path):
    clear_cache()  # a fresh process: nothing verified yet
    storage = Storage.at(tmp_path)
    version = build_version(storage, PLAN, compute)
    clear_cache()
    return storage, version.path / "data" / "part-00001.parquet"


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_an_intact_version_is_reused(built):
    storage, _ = built
    assert find_version(storage, PLAN).reused


def test_a_same_size_edit_is_caught_by_sha256(built):
    storage, shard = built
    flip_a_byte(shard)
    with pytest.raises(IntegrityError) as error:
        find_version(storage, PLAN)
    message = one_line(error)
    assert str(shard) in message and "sha256 differs" in message
    assert "--force" in message and "llmforge stage filter --run RUN_ID --force" in message


def test_a_size_change_is_caught_in_both_modes(built):
    storage, shard = built
    size = shard.stat().st_size
    with open(shard, "ab") as handle:
        handle.write(b"extra")
    for mode in ("sha256", "size"):
        with pytest.raises(IntegrityError) as error:
            find_version(Storage.at(storage.root, verify=mode), PLAN)
        message = one_line(error)
        assert (
            str(shard) in message and f"says {size}" in message and f"{size + 5} bytes" in message
        )


def test_size_mode_misses_a_same_size_edit_by_design(built):
    """Documented trade-off (README, run.verify): sizes only, no hashing."""
    storage, shard = built
    flip_a_byte(shard)
    assert find_version(Storage.at(storage.root, verify="size"), PLAN).reused
    with pytest.raises(IntegrityError):
        find_version(Storage.at(storage.root, verify="sha256"), PLAN)


def test_missing_and_added_files_are_caught(built):
    storage, shard = built
    extra = shard.with_name("part-00099.parquet")
    extra.write_bytes(shard.read_bytes())
    with pytest.raises(IntegrityError, match="part-00099.parquet: not listed in manifest.json"):
        load_version(Storage.at(storage.root, verify="size"), "filter", PLAN.version_id)
    extra.unlink()
    shard.unlink()
    with pytest.raises(IntegrityError, match="part-00001.parquet: missing"):
        load_version(storage, "filter", PLAN.version_id)


def test_force_rebuilds_a_corrupted_version(built):
    storage, shard = built
    flip_a_byte(shard)
    rebuilt = build_version(storage, PLAN, compute, replace=True)
    assert not rebuilt.reused
    clear_cache()
    assert find_version(storage, PLAN).reused


def test_a_corrupted_earlier_dedup_version_is_not_compared_against(tmp_path):
    storage = Storage.at(tmp_path)
    plan = VersionPlan("dedup", {}, [{"stage": "filter", "version_id": "1" * 16}], "c1")
    version = build_version(storage, plan, compute)
    record = RunRecord.create(storage, {"run": {"name": "weekly"}}, run_id="week-1")
    record.add_version(version.summary())
    record.finish("completed")
    assert earlier_versions(storage, "weekly", "dedup", "week-2") == [version.folder]
    flip_a_byte(version.path / "data" / "part-00000.parquet")
    clear_cache()
    with pytest.raises(IntegrityError, match="part-00000.parquet: sha256 differs"):
        earlier_versions(storage, "weekly", "dedup", "week-2")


def test_one_process_hashes_a_version_once(built, monkeypatch):
    storage, shard = built
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p, *a: hashed.append(p) or real(p, *a))
    load_version(storage, "filter", PLAN.version_id)
    assert len(hashed) == 2  # both shards, once
    load_version(storage, "filter", PLAN.version_id)
    find_version(storage, PLAN)
    load_version(Storage.at(storage.root, verify="size"), "filter", PLAN.version_id)
    assert len(hashed) == 2  # cached: a stat per file, no hashing
    flip_a_byte(shard)  # a change after the check is still seen (mtime and size key the cache)
    later = shard.stat().st_mtime_ns + 10**9  # an edit a second later (mtime ticks are coarse)
    os.utime(shard, ns=(later, later))
    with pytest.raises(IntegrityError):
        load_version(storage, "filter", PLAN.version_id)


def test_a_version_just_built_is_not_hashed_again(tmp_path, monkeypatch):
    clear_cache()
    storage = Storage.at(tmp_path)
    build_version(storage, PLAN, compute)
    hashed = []
    monkeypatch.setattr(integrity, "file_sha256", lambda p, *a: hashed.append(p))
    assert load_version(storage, "filter", PLAN.version_id).reused
    assert hashed == []


def test_a_bad_verify_mode_is_one_line(tmp_path):
    with pytest.raises(Exception, match="verify mode 'md5': expected one of sha256, size"):
        Storage.at(tmp_path, verify="md5")
