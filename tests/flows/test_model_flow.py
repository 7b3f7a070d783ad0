"""Tokenize → train → evaluate inside the parent flow: versioned, linked, reused on rerun."""

import json
import math

import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.config import load_config

HELLASWAG = [
    {"ctx": "The cat sat on the", "endings": ["mat.", "moon.", "idea.", "seven."], "label": 0},
    {
        "ctx": "She opened the door and",
        "endings": ["walked in.", "blue.", "of.", "the."],
        "label": 0,
    },
    {
        "ctx": "Researchers said that",
        "endings": ["the.", "results were clear.", "and.", "of."],
        "label": 1,
    },
]


@pytest.fixture(scope="module")
def model_run(prefect_api, sample_site, tmp_path_factory):
    base_url, _ = sample_site
    root = tmp_path_factory.mktemp("model-storage")
    hellaswag = root / "hellaswag.jsonl"
    hellaswag.write_text("".join(json.dumps(item) + "\n" for item in HELLASWAG))
    overrides = [
        f'run.storage_root="{root}"',
        f"crawl.seeds=['{base_url}/']",
        "crawl.delay_seconds=0",
        "crawl.allow_private_addresses=true",  # the sample site is on 127.0.0.1
        "tokenize.val_fraction=0.1",
        "train.preset=tiny",
        "train.context_length=32",
        "train.batch_size=4",
        "train.max_steps=12",
        "train.warmup_steps=2",
        "train.eval_interval=6",
        "train.checkpoint_interval=6",
        "train.eval_tokens=512",
        "train.log_interval=3",
        "evaluate.eval_tokens=512",
        "evaluate.max_new_tokens=8",
        f'evaluate.hellaswag_path="{hellaswag}"',
        "evaluate.lm_eval_tasks=['hellaswag']",  # the harness too, on the same 3 items
    ]
    config = load_config(None, overrides)
    return root, config, pipeline_flow(config, "model-run")


def test_train_and_evaluate_run_as_versioned_subflows(model_run):
    root, _, record = model_run
    assert record["status"] == "completed"
    assert list(record["versions"])[-2:] == ["train", "evaluate"]
    train = record["versions"]["train"]["counts"]["extra"]
    assert train["steps"] == 12 and math.isfinite(train["final_val_loss"])
    evaluation = record["versions"]["evaluate"]["counts"]["extra"]
    assert math.isfinite(evaluation["val_loss"]) and evaluation["perplexity"] > 1
    assert 0 < evaluation["bits_per_byte"] < 20
    assert evaluation["hellaswag"]["n"] == 3
    assert evaluation["lm_eval"]["tasks"]["hellaswag"]["n"] == 3
    assert len(evaluation["samples"]) == len(load_config().evaluate.prompts)
    run_dir = root / "runs" / "model-run"
    for name in ("checkpoint.pt", "metrics.jsonl", "loss_curve.png", "eval.json", "samples.txt"):
        assert (run_dir / name).is_file(), name  # symlinks into the versions resolve
        assert record["artifacts"][name] == str(run_dir / name)
    checkpoint_version = (run_dir / "checkpoint.pt").resolve().parent
    assert checkpoint_version.name == record["versions"]["train"]["version_id"]
    # run.json says exactly which token dataset trained the model.
    manifest = json.loads((checkpoint_version / "manifest.json").read_text())
    assert manifest["inputs"] == [
        {"stage": "tokenize", "version_id": record["versions"]["tokenize"]["version_id"]}
    ]


def _materializations(prefect_api, key_prefix, want, timeout=60):
    """Succeeded asset materializations under `key_prefix`, by asset key: (upstream asset
    keys, metadata). Events reach the server's store asynchronously: poll until `want`."""
    import time

    import httpx

    body = {
        "filter": {
            "event": {"name": ["prefect.asset.materialization.succeeded"]},
            "resource": {"id_prefix": [key_prefix]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{prefect_api['api_url']}/events/filter", json=body, timeout=30)
        response.raise_for_status()
        found = {
            event["resource"]["prefect.resource.id"]: (
                {
                    r["prefect.resource.id"]
                    for r in event["related"]
                    if r.get("prefect.resource.role") == "asset"
                },
                event["payload"],
            )
            for event in response.json()["events"]
        }
        if want <= set(found) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_every_version_is_a_prefect_asset_chained_from_seeds_to_model(prefect_api, model_run):
    """The UI's asset graph: each committed version keyed by its folder URL, its inputs
    upstream (the crawl's seeds first), its counts as metadata."""
    root, config, record = model_run
    versions = record["versions"]
    key = {
        s: (root / "versions" / s / v["version_id"]).resolve().as_uri() for s, v in versions.items()
    }
    found = _materializations(
        prefect_api, (root / "versions").resolve().as_uri(), set(key.values())
    )
    upstream = {
        "crawl": set(config.crawl.seeds),
        "extract": {key["crawl"]},
        "filter": {key["extract"]},
        "dedup": {key["filter"]},
        "tokenize": {key["dedup"]},
        "train": {key["tokenize"]},
        "evaluate": {key["train"], key["tokenize"]},
    }
    assert set(found) == set(key.values())
    for stage, version in versions.items():
        related, metadata = found[key[stage]]
        assert related == upstream[stage], stage
        assert metadata["version_id"] == version["version_id"], stage
        assert metadata["docs_out"] == version["counts"]["docs_out"], stage
    assert (
        found[key["tokenize"]][1]["tokens_train"]
        == versions["tokenize"]["counts"]["extra"]["tokens_train"]
    )


def test_rerun_reuses_the_trained_model(model_run):
    _, config, first = model_run
    again = pipeline_flow(config, "model-run-again")
    assert again["versions"]["train"]["reused"] and again["versions"]["evaluate"]["reused"]
    assert again["versions"]["train"]["version_id"] == first["versions"]["train"]["version_id"]


def test_training_waits_for_the_global_concurrency_slot(model_run):
    """While another run holds the one `llmforge-train` slot, training does not start."""
    import threading
    import time

    from prefect import flow
    from prefect.concurrency.sync import concurrency

    from flows.deploy import ensure_concurrency_limit
    from flows.model import train_version
    from pipeline.store.versions import Storage, load_version

    root, config, record = model_run
    ensure_concurrency_limit(config.run.train_concurrency_limit)
    tokens = load_version(
        Storage.at(root), "tokenize", record["versions"]["tokenize"]["version_id"]
    )
    other = config.model_copy(deep=True)
    other.train.max_steps = 3  # a new train version: this one must really train
    held, released = threading.Event(), {}

    # Measured with prefect 3.8.8: the waiting run gets the slot only when the holder's lease
    # expires (lease_duration, 300 s by default), not at release; 60 s keeps this test short.
    @flow
    def hold_the_gpu():  # another run, training on the one GPU for 8 s
        with concurrency(config.run.train_concurrency_limit, occupy=1, lease_duration=60):
            held.set()
            time.sleep(8)
            released["at"] = time.monotonic()

    holder = threading.Thread(target=hold_the_gpu)
    holder.start()
    assert held.wait(60)

    @flow
    def train_now():
        version = train_version(other, tokens)
        return time.monotonic(), version.reused

    finished_at, reused = train_now()
    holder.join()
    assert not reused and finished_at > released["at"]


def test_evaluation_artifact_shows_both_hellaswag_scorers(prefect_api, model_run):
    """The UI's `evaluation` artifact and the run summary: our scorer's numbers and the
    harness's, one row each."""
    import httpx

    rows = ("| hellaswag acc |", "| lm_eval hellaswag acc |", "| lm_eval hellaswag acc_norm |")
    for key in ("evaluation", "run-summary"):  # other tests' runs publish these keys too
        body = {"artifacts": {"key": {"any_": [key]}}, "limit": 50}
        url = f"{prefect_api['api_url']}/artifacts/filter"
        response = httpx.post(url, json=body, timeout=30)
        response.raise_for_status()
        texts = [artifact["data"] for artifact in response.json()]
        assert any(all(row in text for row in rows) for text in texts), (key, texts)
