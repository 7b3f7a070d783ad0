"""Versioned storage: ids from content, atomic commits, reuse, and nothing half-written."""

import json

import pytest

from pipeline.stage import StageResult
from pipeline.store.versions import Storage, VersionPlan, build_version, find_version, load_version


def _plan(threshold: float = 0.1, upstream: str = "abc") -> VersionPlan:
    return VersionPlan(
        "filter", {"threshold": threshold}, [{"stage": "extract", "version_id": upstream}], "c1"
    )


def _compute(calls: list):
    def compute(out):
        calls.append(out)
        out.write_bytes("data/part-00000.parquet", b"x" * 10)
        return StageResult(docs_in=3, docs_out=2, drops={"gopher_short_doc": 1})

    return compute


def test_version_id_depends_on_config_inputs_and_code():
    assert _plan().version_id == _plan().version_id
    assert _plan(0.2).version_id != _plan().version_id
    assert _plan(upstream="def").version_id != _plan().version_id
    other_code = VersionPlan("filter", {"threshold": 0.1}, _plan().inputs, "c2")
    assert other_code.version_id != _plan().version_id


def test_build_commits_manifest_and_reuses(tmp_path):
    storage = Storage.at(tmp_path)
    calls: list = []
    first = build_version(storage, _plan(), _compute(calls))
    assert not first.reused and len(calls) == 1
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["counts"] == {
        "docs_in": 3,
        "docs_out": 2,
        "drops": {"gopher_short_doc": 1},
        "extra": {},
    }
    assert manifest["files"][0]["path"] == "data/part-00000.parquet"
    assert manifest["files"][0]["bytes"] == 10 and len(manifest["files"][0]["sha256"]) == 64
    again = build_version(storage, _plan(), _compute(calls))
    assert again.reused and len(calls) == 1 and again.path == first.path
    assert list((tmp_path / "tmp").iterdir()) == []


def test_failed_compute_leaves_nothing_visible(tmp_path):
    storage = Storage.at(tmp_path)

    def boom(out):
        out.write_bytes("data/part-00000.parquet", b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        build_version(storage, _plan(), boom)
    assert find_version(storage, _plan()) is None
    assert not storage.version_folder("filter", _plan().version_id).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_replace_recomputes_atomically(tmp_path):
    storage = Storage.at(tmp_path)
    calls: list = []
    build_version(storage, _plan(), _compute(calls))
    replaced = build_version(storage, _plan(), _compute(calls), replace=True)
    assert len(calls) == 2 and not replaced.reused
    assert load_version(storage, "filter", _plan().version_id).manifest["counts"]["docs_out"] == 2
    assert list((tmp_path / "tmp").iterdir()) == []
