"""gc: old runs go, versions only they used go (transitively), shared and rerun ones stay."""

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import DataError
from pipeline.stage import StageResult
from pipeline.store.fs import Folder
from pipeline.store.gc import collect_garbage, format_report, human_bytes
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage, Version, VersionPlan, build_version

CHAIN = ["crawl", "extract", "filter", "dedup", "tokenize", "train", "evaluate"]
SEEDS = ["https://example.com/", "https://example.org/docs/"]


def build(storage: Storage, stage: str, config: dict, inputs: list[dict], size: int) -> Version:
    """A version like a real stage's: a data file of `size` bytes and a manifest linking inputs."""

    def compute(out: Folder) -> StageResult:
        name = "checkpoint.pt" if stage == "train" else "data/part-00000.parquet"
        out.write_bytes(name, b"x" * size)
        extra = {"seeds": SEEDS, "warc_files": ["warc/crawl-00000.warc.gz"]}
        return StageResult(10, 8, {f"{stage}_short": 2}, extra if stage == "crawl" else {})

    return build_version(storage, VersionPlan(stage, config, inputs, "code1"), compute)


def build_chain(
    storage: Storage,
    overrides: dict[str, dict] | None = None,
    until: str = "evaluate",
    source: dict | None = None,
) -> dict[str, Version]:
    """crawl -> ... -> `until`, or extract from WARC files when `source` is given."""
    overrides = overrides or {}
    versions: dict[str, Version] = {}
    stages = CHAIN[CHAIN.index("extract" if source else "crawl") : CHAIN.index(until) + 1]
    for i, stage in enumerate(stages):
        config = {"seeds": SEEDS, "max_pages": 5} if stage == "crawl" else {"k": 1}
        config.update(overrides.get(stage, {}))
        if stage == "crawl":
            inputs = [{"source": "seeds", "snapshot": ""}]
        elif i == 0:
            inputs = [source]
        else:
            upstream = ["train", "tokenize"] if stage == "evaluate" else [stages[i - 1]]
            inputs = [{"stage": s, "version_id": versions[s].version_id} for s in upstream]
        versions[stage] = build(storage, stage, config, inputs, size=100 * (i + 1))
    return versions


def make_run(
    storage: Storage,
    run_id: str,
    versions: dict[str, Version],
    age_s: float = 0,
    status: str = "completed",
    reruns: list[Version] = (),
    config: dict | None = None,
) -> RunRecord:
    record = RunRecord.create(storage, config or {}, run_id=run_id)
    started = datetime.fromtimestamp(time.time() - age_s, UTC)
    record.data["started_at"] = started.isoformat(timespec="seconds")
    for version in versions.values():
        record.add_version(version.summary())
    record.data["reruns"] = [{"stage": v.stage, "version_id": v.version_id} for v in reruns]
    if "train" in versions:  # like flows/model.py: a symlink into the train version
        link = record.folder.local_path("checkpoint.pt")
        link.symlink_to(versions["train"].path / "checkpoint.pt")
        record.add_artifacts({"checkpoint.pt": str(link)})
    record.data["status"] = status
    record.save()
    return record


def set_age(path: Path, age_s: float) -> None:
    """Make everything under `path` look last written `age_s` ago."""
    when = time.time() - age_s
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def version_bytes(v: Version) -> int:
    return v.manifest["bytes_total"] + (v.path / "manifest.json").stat().st_size


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def three_runs(tmp_path):
    """A: lr 1; B: new filter (so new dedup..evaluate); C: B's data, new train config."""
    storage = Storage.at(tmp_path)
    a = build_chain(storage)
    b = build_chain(storage, {"filter": {"k": 2}})
    c = build_chain(storage, {"filter": {"k": 2}, "train": {"lr": 3e-4}})
    for name, versions, age in (("run-a", a, 300), ("run-b", b, 200), ("run-c", c, 100)):
        make_run(storage, name, versions, age_s=age)
    return storage, a, b, c


def test_keep_last_deletes_only_what_older_runs_used(three_runs):
    storage, a, b, c = three_runs
    run_bytes = {
        r: storage.run_folder(r).local_path("run.json").stat().st_size for r in ("run-a", "run-b")
    }
    only_old = [a[s] for s in ("filter", "dedup", "tokenize", "train", "evaluate")]
    only_old += [b["train"], b["evaluate"]]
    expected = sorted((v.stage, v.version_id, version_bytes(v)) for v in only_old)
    report = collect_garbage(storage, keep_last=1)

    assert sorted(report.deleted_versions) == expected
    assert sorted(report.deleted_runs) == sorted(run_bytes.items())  # symlinks not followed
    assert report.freed_bytes == sum(b for *_, b in expected) + sum(run_bytes.values())
    assert report.kept_runs == 1 and report.kept_versions == len(CHAIN)
    for version in c.values():  # crawl/extract shared by all, filter..tokenize by B and C
        assert (version.path / "manifest.json").is_file()
    for version in only_old:
        assert not version.path.exists()
    assert not storage.run_folder("run-a").exists() and storage.run_folder("run-c").is_dir()
    assert list(storage.tmp_dir.iterdir()) == []  # the renamed-away folders are gone too
    again = collect_garbage(storage, keep_last=1)
    assert again.deleted_versions == [] and again.freed_bytes == 0


def test_dry_run_deletes_nothing_and_reports_the_same(three_runs):
    storage = three_runs[0]
    before = listing(storage.local)
    dry = collect_garbage(storage, keep_last=1, dry_run=True)
    assert listing(storage.local) == before
    assert dry.dry_run and "would delete run run-a" in format_report(dry)
    real = collect_garbage(storage, keep_last=1)
    assert (dry.deleted_versions, dry.deleted_runs, dry.freed_bytes) == (
        real.deleted_versions,
        real.deleted_runs,
        real.freed_bytes,
    )


def test_keep_all_runs_deletes_only_orphans(three_runs):
    storage, a, _, _ = three_runs
    orphan = build(storage, "filter", {"k": 99}, [{"stage": "extract", "version_id": "x"}], 7)
    expected = [("filter", orphan.version_id, version_bytes(orphan))]
    report = collect_garbage(storage)
    assert report.deleted_runs == [] and report.kept_runs == 3
    assert report.deleted_versions == expected and not orphan.path.exists()
    assert a["evaluate"].path.is_dir()


def test_inputs_are_followed_down_to_the_crawl(tmp_path):
    storage = Storage.at(tmp_path)
    versions = build_chain(storage)
    make_run(storage, "only-eval", {"evaluate": versions["evaluate"]})
    report = collect_garbage(storage, keep_last=1)
    assert report.deleted_versions == [] and report.kept_versions == len(CHAIN)


def test_version_referenced_only_by_a_rerun_is_kept(tmp_path):
    storage = Storage.at(tmp_path)
    first = build_chain(storage)
    token_ref = [{"stage": "tokenize", "version_id": first["tokenize"].version_id}]
    rerun = build(storage, "train", {"lr": 1e-3}, token_ref, 50)
    unused = build(storage, "train", {"lr": 1e-4}, token_ref, 60)
    make_run(storage, "run-1", first, reruns=[rerun])
    expected = [("train", unused.version_id, version_bytes(unused))]
    report = collect_garbage(storage, keep_last=1)
    assert report.deleted_versions == expected
    assert (rerun.path / "checkpoint.pt").is_file()


def test_running_pipeline_keeps_its_run_and_fresh_versions(tmp_path):
    storage = Storage.at(tmp_path)
    old = build_chain(storage, until="filter")
    for version in old.values():
        set_age(version.path, 7200)
    make_run(storage, "stale", old, age_s=7200, status="running")
    make_run(storage, "killed", {}, age_s=3 * 86400, status="running")
    make_run(storage, "live", {}, age_s=60, status="running")
    # Committed by "live" a moment ago, not in its run.json yet.
    fresh = build(storage, "crawl", {"seeds": ["https://new.example/"]}, [], 10)
    report = collect_garbage(storage, keep_last=0)
    assert sorted(r for r, _ in report.deleted_runs) == ["killed"]  # stale started 2 h ago
    assert report.kept_runs == 2 and fresh.path.is_dir() and old["filter"].path.is_dir()
    make_run(storage, "stale", old, age_s=7200, status="failed")
    report = collect_garbage(storage, keep_last=0)
    assert sorted(r for r, _ in report.deleted_runs) == ["stale"]
    assert sorted(s for s, _, _ in report.deleted_versions) == ["crawl", "extract", "filter"]
    assert fresh.path.is_dir()


def test_tmp_leftovers(tmp_path):
    storage = Storage.at(tmp_path)
    versions = build_chain(storage, until="tokenize")
    make_run(storage, "run-1", versions)
    referenced = versions["tokenize"].version_id
    entries = {
        "filter-0123456789ab": 2 * 3600,  # stopped stage: old
        "dedup-ba9876543210": 60,  # running stage: young
        "crawl-aaaaaaaaaaaa": 2 * 3600,  # running long: old folder, fresh file below
        "train-00000000000000aa": 2 * 3600,  # work dir, resumable for a day
        "train-00000000000000bb": 2 * 86400,  # work dir, abandoned
        f"tokenize-{referenced}": 2 * 86400,  # work dir of a referenced version
    }
    for name, age in entries.items():
        (storage.tmp_dir / name / "sub").mkdir(parents=True)
        (storage.tmp_dir / name / "sub" / "part.bin").write_bytes(b"y" * 11)
        set_age(storage.tmp_dir / name, age)
    (storage.tmp_dir / "crawl-aaaaaaaaaaaa" / "sub" / "part.bin").touch()
    report = collect_garbage(storage)
    assert report.deleted_tmp == [("filter-0123456789ab", 11), ("train-00000000000000bb", 11)]
    assert sorted(p.name for p in storage.tmp_dir.iterdir()) == sorted(
        set(entries) - {"filter-0123456789ab", "train-00000000000000bb"}
    )


def test_unreadable_run_stops_gc(tmp_path):
    storage = Storage.at(tmp_path)
    versions = build_chain(storage, until="extract")
    make_run(storage, "good", versions)
    storage.run_folder("broken").write_bytes("run.json", "{not json")
    with pytest.raises(DataError, match="run 'broken'"):
        collect_garbage(storage, keep_last=1)
    assert versions["crawl"].path.is_dir()
    with pytest.raises(DataError, match="keep_last"):
        collect_garbage(storage, keep_last=-1)


def test_human_bytes():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert human_bytes(3 * 1024**5) == "3072.0 TiB"
