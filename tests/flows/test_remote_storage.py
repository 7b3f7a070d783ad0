"""A storage root given as an fsspec URL (file://): versions and runs live in the shared store,
read and written there; the machine-local cache ($LLMFORGE_CACHE) never holds a copy.

Store-level behaviour on a non-local filesystem (memory://: manifest-last commits, has_version
reading nothing) is in tests/pipeline/test_store_url.py."""

import json

import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.store.runs import list_runs
from pipeline.store.versions import Storage
from tests.flows.conftest import site_config

STAGES = ["crawl", "extract", "filter", "dedup", "tokenize"]


@pytest.mark.slow
def test_url_root_holds_versions_and_runs_and_another_machine_reuses_them(
    prefect_api, sample_site, tmp_path, monkeypatch
):
    base_url, _ = sample_site
    shared = tmp_path / "shared-root"
    url = f"file://{shared}"
    config = site_config(url, base_url, "run.until=tokenize", "tokenize.val_fraction=0.1")
    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache-a"))
    first = pipeline_flow(config, "remote-first")
    for stage in STAGES:
        version = shared / "versions" / stage / first["versions"][stage]["version_id"]
        manifest = json.loads((version / "manifest.json").read_text())
        for entry in manifest["files"]:
            assert (version / entry["path"]).is_file(), (stage, entry["path"])
    assert (
        json.loads((shared / "runs" / "remote-first" / "run.json").read_text())["status"]
        == "completed"
    )

    # Another machine: an empty cache, the same shared store. Everything is reused from it.
    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache-b"))
    again = pipeline_flow(config, "remote-again")
    assert all(v["reused"] for v in again["versions"].values())
    tokens = Storage.at(url).version_folder("tokenize", again["versions"]["tokenize"]["version_id"])
    assert tokens.local_path().is_relative_to(shared) and tokens.is_dir("train")
    assert again["versions"]["tokenize"]["path"] == tokens.url  # the store's, not a cache path
    # No whole-version download: nothing of a version or a run is copied into any cache.
    copied = [p for p in tmp_path.glob("cache-*/**/*") if p.is_file()]
    assert not [p for p in copied if "versions" in p.parts or "runs" in p.parts], copied

    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache-c"))
    assert {r["run_id"] for r in list_runs(Storage.at(url))} == {"remote-first", "remote-again"}
