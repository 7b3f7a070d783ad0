"""Weekly runs: an unchanged week reuses everything; old pages are not admitted again."""

import shutil

import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.config import load_config
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import SampleSiteConfig, generate_site
from tests.flows.conftest import crawl_warcs


@pytest.fixture(scope="module")
def weeks(prefect_api, sample_site, tmp_path_factory):
    """Week 1 holds site A's pages; week 3 holds site A's pages again plus site B's."""
    scratch = tmp_path_factory.mktemp("weekly-crawls")
    week1, week3 = scratch / "week1", scratch / "week3"
    crawl_warcs(scratch / "s1", sample_site[0], week1, "site-a")
    shutil.copytree(week1, week3)
    site_b = scratch / "site-b"
    generate_site(site_b, SampleSiteConfig(seed=11))
    with serve_site(site_b) as base_url:
        crawl_warcs(scratch / "s2", base_url, week3, "site-b")
    return week1, week3


def _week(root, warcs, run_id):
    config = load_config(
        None,
        [
            f'run.storage_root="{root}"',
            "run.name=weekly",
            "run.until=tokenize",
            "run.dedup_against_previous_runs=true",
            "source.kind=warc",
            f"source.warc_paths=['{warcs}']",
            "tokenize.val_fraction=0.1",
        ],
    )
    return pipeline_flow(config, run_id)


@pytest.mark.slow
def test_weekly_runs_reuse_unchanged_weeks_and_skip_old_pages(weeks, tmp_path):
    week1, week3 = weeks
    first = _week(tmp_path, week1, "w1")
    assert first["status"] == "completed" and "tokenize" in first["versions"]

    again = _week(tmp_path, week1, "w1-again")  # the same week rerun: all reused
    assert all(v["reused"] for v in again["versions"].values())

    third = _week(tmp_path, week3, "w3")
    dedup = third["versions"]["dedup"]["counts"]
    previous = {k: v for k, v in dedup["drops"].items() if k.endswith("_previous")}
    # Every page of site A that week 1 kept is now a duplicate of an earlier version.
    assert sum(previous.values()) >= first["versions"]["dedup"]["counts"]["docs_out"]
    assert dedup["docs_out"] > 0 and third["versions"]["tokenize"]["counts"]["docs_out"] > 0
    first_ids = set()
    import pyarrow.parquet as pq

    for shard in (
        tmp_path / "versions" / "dedup" / first["versions"]["dedup"]["version_id"] / "data"
    ).glob("*.parquet"):
        first_ids |= set(pq.read_table(shard, columns=["id"])["id"].to_pylist())
    kept_now = set()
    for shard in (tmp_path / "versions" / "dedup" / dedup_id(third) / "data").glob("*.parquet"):
        kept_now |= set(pq.read_table(shard, columns=["id"])["id"].to_pylist())
    assert not (first_ids & kept_now)

    nothing_new = _week(tmp_path, week1, "w4")  # only old pages, in a new run: nothing to do
    assert nothing_new["status"] == "completed" and "tokenize" not in nothing_new["versions"]
    assert "no new documents" in nothing_new["note"]


def dedup_id(record):
    return record["versions"]["dedup"]["version_id"]


@pytest.mark.slow
def test_weekly_version_ids_do_not_depend_on_the_storage_root(weeks, tmp_path):
    """Earlier weeks enter dedup's version id as `{stage, version_id}`, never as paths: the
    same weeks under two storage roots give the same ids, and no manifest names its root."""
    import json

    week1, week3 = weeks
    ids = []
    for root in (tmp_path / "a", tmp_path / "elsewhere" / "b"):
        first = _week(root, week1, "w1")
        third = _week(root, week3, "w3")
        ids.append({stage: v["version_id"] for stage, v in third["versions"].items()})
        manifest = json.loads(
            (root / "versions" / "dedup" / dedup_id(third) / "manifest.json").read_text()
        )
        assert {"stage": "dedup", "version_id": dedup_id(first)} in manifest["inputs"]
        plan = json.dumps([manifest["config"], manifest["inputs"]])
        assert str(tmp_path) not in plan and manifest["config"]["against"] == []
    assert ids[0] == ids[1]
