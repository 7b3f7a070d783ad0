"""The parent flow end to end against a real Prefect server: records, reuse, recompute, failure."""

from pathlib import Path

import httpx
import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.errors import EmptyStageError
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage
from tests.flows.conftest import DATA_HALF, site_config

DATA_STAGES = ["crawl", "extract", "filter", "dedup", "tokenize"]


def _config(storage_root, base_url, *overrides):
    return site_config(storage_root, base_url, *DATA_HALF, *overrides)


def _api(prefect_api, path, body):
    response = httpx.post(f"{prefect_api['api_url']}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def _child_flow_runs(prefect_api, parent_id):
    """Stage subflow runs of one parent flow run, by flow name, with their task runs."""
    parent_tasks = _api(
        prefect_api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [parent_id]}}, "limit": 200}
    )
    task_ids = [t["id"] for t in parent_tasks]
    children = _api(
        prefect_api,
        "/flow_runs/filter",
        {"flow_runs": {"parent_task_run_id": {"any_": task_ids}}, "limit": 200},
    )
    flows = {f["id"]: f["name"] for f in _api(prefect_api, "/flows/filter", {"limit": 200})}
    result = {}
    for child in children:
        tasks = _api(
            prefect_api,
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [child["id"]]}}, "limit": 200},
        )
        result[flows[child["flow_id"]]] = {"run": child, "tasks": tasks}
    return result


@pytest.fixture(scope="module")
def first_run(prefect_api, sample_site, tmp_path_factory):
    base_url, _ = sample_site
    root = tmp_path_factory.mktemp("storage")
    config = _config(root, base_url)
    return root, base_url, pipeline_flow(config, "run-first")


def test_run_records_every_stage_version(first_run):
    root, _, record = first_run
    assert record["status"] == "completed"
    assert list(record["versions"]) == DATA_STAGES
    assert not any(v["reused"] for v in record["versions"].values())
    on_disk = RunRecord.load(Storage.at(root), "run-first").data
    assert on_disk["versions"] == record["versions"] and on_disk["git_commit"]
    assert on_disk["config"]["run"]["until"] == "tokenize"
    for stage, version in record["versions"].items():
        path = root / "versions" / stage / version["version_id"]
        assert (path / "manifest.json").is_file(), stage
    tokens = record["versions"]["tokenize"]["counts"]["extra"]
    assert tokens["tokens_train"] > 10_000 and tokens["tokenizer"] == "gpt2"
    assert list((root / "tmp").iterdir()) == []
    report = record["artifacts"]["report.html"]
    assert report.endswith("report.html") and "Funnel" in Path(report).read_text()


def test_report_shows_the_finished_run(first_run):
    """The report is built after the record is finished: final status and end time, not
    `running` and `-`."""
    _, _, record = first_run
    assert record["finished_at"]
    for name in ("report.md", "report.html"):
        text = Path(record["artifacts"][name]).read_text()
        assert "| status | completed |" in text or "<td>completed</td>" in text, name
        assert record["finished_at"] in text and "running" not in text, name


def test_prefect_server_recorded_every_stage_and_shard_task(prefect_api, first_run):
    _, _, record = first_run
    children = _child_flow_runs(prefect_api, record["prefect"]["flow_run_id"])
    assert set(children) == set(DATA_STAGES)
    for stage, child in children.items():
        assert child["run"]["state_type"] == "COMPLETED", stage
    shards = record["versions"]["extract"]["counts"]
    # extract maps one task per WARC shard; filter and tokenize one per document shard.
    assert len([t for t in children["filter"]["tasks"] if t["name"].startswith("filter")]) >= 1
    assert all(t["state_type"] == "COMPLETED" for c in children.values() for t in c["tasks"])
    assert shards["docs_out"] > 0


def test_flow_runs_are_named_by_the_run_id(prefect_api, first_run):
    """Searching the UI for a run id finds the run and each of its stages."""
    _, _, record = first_run
    (run,) = _api(
        prefect_api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["run-first"]}}}
    )
    assert run["id"] == record["prefect"]["flow_run_id"]
    children = _child_flow_runs(prefect_api, run["id"])
    assert {stage: c["run"]["name"] for stage, c in children.items()} == {
        stage: f"run-first-{stage}" for stage in DATA_STAGES
    }


def test_a_run_without_an_id_is_renamed_by_the_one_it_gets(prefect_api, sample_site, tmp_path):
    """Scheduled deployment runs pass no run id: the flow makes one and renames its run."""
    base_url, _ = sample_site
    record = pipeline_flow(site_config(tmp_path, base_url, "run.until=crawl"))
    (run,) = _api(
        prefect_api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [record["run_id"]]}}}
    )
    assert run["id"] == record["prefect"]["flow_run_id"]


def test_rerun_reuses_every_stage_and_shows_cached(prefect_api, first_run):
    root, base_url, first = first_run
    again = pipeline_flow(_config(root, base_url), "run-again")
    assert all(v["reused"] for v in again["versions"].values())
    assert {s: v["version_id"] for s, v in again["versions"].items()} == {
        s: v["version_id"] for s, v in first["versions"].items()
    }
    children = _child_flow_runs(prefect_api, again["prefect"]["flow_run_id"])
    for stage in DATA_STAGES:
        states = [t["state_name"] for t in children[stage]["tasks"]]
        assert states == ["Cached"], (stage, states)


def test_threshold_change_recomputes_filter_and_after_only(first_run):
    root, base_url, first = first_run
    changed = pipeline_flow(
        _config(root, base_url, "filter.gopher_quality.min_doc_words=60"), "run-changed"
    )
    reused = {s: v["reused"] for s, v in changed["versions"].items()}
    assert reused == {
        "crawl": True,
        "extract": True,
        "filter": False,
        "dedup": False,
        "tokenize": False,
    }
    for stage in ("filter", "dedup", "tokenize"):
        assert changed["versions"][stage]["version_id"] != first["versions"][stage]["version_id"]
    # Only a threshold changed: the filter re-decided from the stored signals.
    assert changed["versions"]["filter"]["counts"]["extra"]["signals"] == "stored"


def test_empty_stage_fails_the_flow_naming_stage_and_reasons(first_run):
    root, base_url, _ = first_run
    config = _config(root, base_url, "filter.language.languages=['xx']")
    with pytest.raises(EmptyStageError, match=r"stage 'filter' kept 0 documents .*language_"):
        pipeline_flow(config, "run-empty")
    record = RunRecord.load(Storage.at(root), "run-empty").data
    assert record["status"] == "failed" and "filter" in record["error"]


def test_stages_publish_progress_counts_and_summary_artifacts(prefect_api, first_run):
    _, _, record = first_run
    keys = [f"{s}-progress" for s in DATA_STAGES] + [f"{s}-counts" for s in DATA_STAGES]
    artifacts = _api(
        prefect_api,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": [*keys, "run-summary"]}}, "limit": 200},
    )
    by_key: dict[str, list] = {}
    for artifact in artifacts:
        by_key.setdefault(artifact["key"], []).append(artifact)
    assert set(by_key) == {*keys, "run-summary"}
    for stage in DATA_STAGES:
        assert any(
            a["type"] == "progress" and a["data"] == 100.0 for a in by_key[f"{stage}-progress"]
        ), stage
        assert by_key[f"{stage}-counts"][0]["type"] == "table"
    summaries = [a["data"] for a in by_key["run-summary"]]
    assert any(record["run_id"] in text and "## Artifacts" in text for text in summaries)


def test_run_summary_says_yes_no_and_lists_every_drop_in_its_own_table(tmp_path):
    from flows.pipeline_flow import summary_markdown

    record = RunRecord.create(Storage.at(tmp_path), {}, "summary-run")
    record.data["versions"] = {
        "filter": {"version_id": "f" * 16, "reused": True, "counts": {
            "docs_in": 61, "docs_out": 48,
            "drops": {"language_not_en": 4, "gopher_too_many_bullets": 5, "a_very_long_reason": 1},
        }},
        "train": {"version_id": "t" * 16, "reused": False, "counts": {
            "docs_in": 0, "docs_out": 0, "drops": {}}},
    }  # fmt: skip
    text = summary_markdown(record).splitlines()
    assert f"| filter | `{'f' * 16}` | yes | 61 | 48 |" in text
    assert f"| train | `{'t' * 16}` | no | - | - |" in text
    at = text.index("## Dropped documents")
    assert text[at + 4 : at + 7] == [
        "| filter | gopher_too_many_bullets | 5 |",
        "| filter | language_not_en | 4 |",
        "| filter | a_very_long_reason | 1 |",
    ]
