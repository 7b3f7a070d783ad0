"""A storage root given as a URL (here fsspec's in-process `memory://`, an object store in all
that matters: no rename, no local path): versions commit with their manifest written last,
everything is read where it lives, and version ids do not depend on the root."""

import contextlib
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.errors import DataError
from pipeline.stage import StageResult
from pipeline.store import gc
from pipeline.store.integrity import IntegrityError, clear_cache
from pipeline.store.runs import RunRecord, list_runs
from pipeline.store.versions import Storage, VersionPlan, build_version, find_version, load_version

PLAN = VersionPlan("filter", {"k": 1}, [{"stage": "extract", "version_id": "0" * 16}], "c1")
SHARDS = {"data/part-00000.parquet": b"a" * 100, "data/part-00001.parquet": b"b" * 50}


def write_shards(out) -> StageResult:
    for name, data in SHARDS.items():
        out.write_bytes(name, data)
    return StageResult(docs_in=3, docs_out=2, drops={"short": 1})


@pytest.fixture
def url(tmp_path, monkeypatch):
    """A fresh memory:// root (the memory filesystem is one per process), and a private cache."""
    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache"))
    root = f"memory://llmforge-test-{uuid.uuid4().hex[:8]}"
    yield root
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def test_versions_and_runs_live_at_the_url_never_in_the_local_cache(url, tmp_path):
    storage = Storage.at(url)
    assert storage.root.url == url.replace("memory://", "memory:///")
    version = build_version(storage, PLAN, write_shards)
    record = RunRecord.create(storage, {"run": {"name": "x"}}, run_id="r1")
    record.add_version(version.summary())
    assert version.folder.list() == [*SHARDS, "manifest.json"]
    assert storage.runs.list() == ["r1/run.json"]
    assert version.summary()["path"] == version.folder.url
    with pytest.raises(ValueError, match="not a local folder"):
        version.path  # noqa: B018 - old callers fail loudly, never on a stale cache
    # Only machine-local state (the lock folder) is in the cache; no version, no run.
    cached = [p.relative_to(storage.local).parts[0] for p in storage.local.rglob("*")]
    assert set(cached) <= {"locks"}


def test_has_version_reads_no_file_and_a_fresh_machine_reuses_by_streaming(
    url, tmp_path, monkeypatch
):
    calls = []
    build_version(Storage.at(url), PLAN, lambda out: calls.append(1) or write_shards(out))

    def no_download(self, *args, **kwargs):
        raise AssertionError("has_version downloaded a file")

    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "another-machine"))
    storage = Storage.at(url)
    with monkeypatch.context() as patched:
        for method in ("cat_file", "get_file", "open", "_open"):
            patched.setattr(MemoryFileSystem, method, no_download)
        assert storage.has_version("filter", PLAN.version_id)
        assert not storage.has_version("filter", "1" * 16)
    clear_cache()
    again = build_version(storage, PLAN, lambda out: calls.append(1) or write_shards(out))
    assert again.reused and calls == [1]
    assert not (tmp_path / "another-machine").exists() or not list(
        (tmp_path / "another-machine").rglob("*.parquet")
    )


def test_a_build_that_stops_leaves_no_version_and_a_retry_leaves_no_leftovers(url):
    """The manifest is the commit marker: written last, after every shard."""
    storage = Storage.at(url)

    def crash(out):
        out.write_bytes("data/part-00000.parquet", b"half")
        out.write_bytes("data/part-00007.parquet", b"from a wider run")
        raise RuntimeError("machine lost")

    with pytest.raises(RuntimeError, match="machine lost"):
        build_version(storage, PLAN, crash)
    folder = storage.version_folder("filter", PLAN.version_id)
    assert folder.list() == ["data/part-00000.parquet", "data/part-00007.parquet"]  # partial
    assert not storage.has_version("filter", PLAN.version_id)
    assert find_version(storage, PLAN) is None
    with pytest.raises(DataError, match="not found"):
        load_version(storage, "filter", PLAN.version_id)

    version = build_version(storage, PLAN, write_shards)
    assert not version.reused
    assert folder.list() == [*SHARDS, "manifest.json"]  # part-00007 of the failed try is gone
    assert [f["path"] for f in version.manifest["files"]] == list(SHARDS)
    clear_cache()
    assert load_version(storage, "filter", PLAN.version_id).manifest == version.manifest


def test_the_manifest_is_written_after_every_shard(url, monkeypatch):
    storage = Storage.at(url)
    written = []
    real = MemoryFileSystem.pipe_file

    def spy(self, path, *args, **kwargs):
        written.append(path.rsplit("/", 1)[-1])
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "pipe_file", spy)
    build_version(storage, PLAN, write_shards)
    assert written[-1] == "manifest.json" and written.count("manifest.json") == 1


def test_version_ids_and_manifest_files_are_equal_across_roots(url, tmp_path):
    roots = [tmp_path / "one", tmp_path / "elsewhere" / "two", url]
    versions = [build_version(Storage.at(root), PLAN, write_shards) for root in roots]
    assert {v.version_id for v in versions} == {PLAN.version_id}
    files = [v.manifest["files"] for v in versions]
    assert files[0] == files[1] == files[2]
    assert [f["path"] for f in files[0]] == list(SHARDS)
    # A downstream plan names its input by id only: equal ids downstream too.
    child = [
        VersionPlan("dedup", {}, [{"stage": v.stage, "version_id": v.version_id}], "c1")
        for v in versions
    ]
    assert len({p.version_id for p in child}) == 1


def test_edits_after_commit_are_caught_on_a_url_root(url):
    storage = Storage.at(url)
    folder = build_version(storage, PLAN, write_shards).folder
    clear_cache()
    folder.write_bytes("data/part-00001.parquet", b"c" * 50)  # same size, other bytes
    assert Storage.at(url, verify="size").has_version("filter", PLAN.version_id)
    assert find_version(Storage.at(url, verify="size"), PLAN).reused  # sizes only, by design
    with pytest.raises(IntegrityError, match="part-00001.parquet: sha256 differs"):
        find_version(storage, PLAN)
    folder.write_bytes("data/part-00001.parquet", b"c" * 49)
    with pytest.raises(IntegrityError, match="49 bytes, manifest.json says 50"):
        find_version(Storage.at(url, verify="size"), PLAN)
    rebuilt = build_version(storage, PLAN, write_shards, replace=True)
    assert not rebuilt.reused
    clear_cache()
    assert find_version(storage, PLAN).reused


def test_work_dir_build_uploads_to_the_url_and_removes_the_work_dir(url, tmp_path):
    storage = Storage.at(url)
    work = storage.work_dir("filter", PLAN.version_id)
    version = build_version(storage, PLAN, write_shards, work_dir=work)
    assert version.folder.list() == [*SHARDS, "manifest.json"]
    assert not work.exists()
    local = build_version(Storage.at(tmp_path), PLAN, write_shards)
    assert version.manifest["files"] == local.manifest["files"]


def test_local_build_on_a_url_root_gets_a_local_folder_and_leaves_nothing(url):
    """`local=True` (evaluate writes with libraries that want paths): compute gets a local
    folder, whose files are uploaded manifest last; the folder goes however the build ends."""
    storage = Storage.at(url)
    given = []

    def compute(out):
        given.append(out)
        assert out.is_local
        return write_shards(out)

    version = build_version(storage, PLAN, compute, local=True)
    assert version.folder.list() == [*SHARDS, "manifest.json"]
    assert not given[0].local_path().exists()

    def fail(out):
        given.append(out)
        write_shards(out)
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        build_version(storage, PLAN, fail, replace=True, local=True)
    assert given[1].is_local and not given[1].local_path().exists()
    assert find_version(storage, PLAN) is not None  # the old version stays until the upload


def test_runs_and_gc_on_a_url_root(url, monkeypatch):
    storage = Storage.at(url)
    kept = build_version(storage, PLAN, write_shards)
    orphan_plan = VersionPlan("filter", {"k": 2}, PLAN.inputs, "c1")
    orphan = build_version(storage, orphan_plan, write_shards)
    record = RunRecord.create(storage, {}, run_id="run-1")
    record.add_version(kept.summary())
    record.finish("completed")
    storage.runs.write_bytes("broken/run.json", "{not json")
    listed = {r["run_id"]: r["status"] for r in list_runs(storage)}
    assert listed == {"run-1": "completed", "broken": "unreadable"}
    with pytest.raises(DataError, match="run 'broken'"):
        gc.collect_garbage(storage)
    storage.runs.remove("broken")

    uncommitted = storage.version_folder("dedup", "2" * 16)
    uncommitted.write_bytes("data/part-00000.parquet", b"a build that stopped")
    orphan_bytes = sum(orphan.folder.sizes().values())  # shards and manifest
    fresh = gc.collect_garbage(storage, dry_run=True)
    assert fresh.deleted_uncommitted == []  # written just now: maybe a build in progress
    monkeypatch.setattr(gc, "TMP_MIN_AGE_S", -1)
    report = gc.collect_garbage(storage)
    assert report.deleted_versions == [("filter", orphan.version_id, orphan_bytes)]
    assert report.deleted_uncommitted == [("dedup", "2" * 16, 20)]
    assert not orphan.folder.exists() and not uncommitted.exists()
    assert storage.has_version("filter", PLAN.version_id) and storage.runs.list() == [
        "run-1/run.json"
    ]
    assert gc.collect_garbage(storage, keep_last=0).deleted_runs[0][0] == "run-1"
    assert storage.runs.list() == [] and not kept.folder.exists()
