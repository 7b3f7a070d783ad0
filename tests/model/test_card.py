"""The model card (README.md) an export writes: Hugging Face's format, the run's story in it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"

from model.card import card_context  # noqa: E402
from model.config import EvalConfig  # noqa: E402
from model.evaluate import evaluate  # noqa: E402
from model.export import CARD, checkpoint_for, export  # noqa: E402
from pipeline.stage import StageResult  # noqa: E402
from pipeline.store.runs import RunRecord  # noqa: E402
from pipeline.store.versions import Storage, VersionPlan, build_version  # noqa: E402
from tests.conftest import llmforge, shared_data  # noqa: E402

SEEDS = ["https://example.com/", "https://example.org/docs/"]
# (stage, config, docs in, docs out, drops, extra): what a run on a small site records.
DATA_STAGES = [
    ("crawl", {"seeds": SEEDS}, 12, 10, {"crawl_http_404": 2},
     {"seeds": SEEDS, "warc_files": ["warc/crawl-00000.warc.gz"], "bytes": 52011}),
    ("extract", {}, 10, 9, {"extract_no_text": 1}, {}),
    ("filter", {"language": {"enabled": True, "languages": ["en"]}}, 9, 6,
     {"language_not_en": 2, "gopher_short_doc": 1}, {}),
    ("dedup", {}, 6, 5, {"dedup_near_duplicate": 1}, {}),
    ("tokenize", {}, 5, 5, {}, {"tokenizer": "gpt2", "tokens_train": 31337, "tokens_val": 2024}),
]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(trained_run, shakespeare_tokens, tmp_path_factory):
    """The shared small run scored as the evaluate stage would (with 20 HellaSwag items)."""
    run_dir, _, _ = trained_run
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig(
        eval_tokens=1024,
        prompts=["ROMEO:"],
        max_new_tokens=8,
        contamination=False,
        precision="fp32",
        hellaswag_path=str(shared_data("hellaswag", "hellaswag_val.jsonl")),
        hellaswag_limit=20,
    )
    return evaluate(cfg, run_dir / "checkpoint.pt", shakespeare_tokens, out)


def rows(out, result: StageResult) -> StageResult:
    out.write_bytes("data/part-00000.parquet", b"rows")
    return result


def store_run(root: Path, run_dir: Path, evaluation: dict, run_id: str = "run-card") -> Storage:
    """A store holding one run's chain, seeds to evaluation, as the flows commit it."""
    storage = Storage.at(root)
    record = RunRecord.create(storage, {"source": {"kind": "crawl"}}, run_id=run_id)
    inputs: list[dict] = [{"source": "seeds", "snapshot": ""}]
    for stage, config, *counts in DATA_STAGES:
        result = StageResult(*counts)
        plan = VersionPlan(stage, config, inputs, "code")
        version = build_version(storage, plan, lambda out, r=result: rows(out, r))
        record.add_version(version.summary() | {"counts": version.manifest["counts"]})
        inputs = [{"stage": stage, "version_id": version.version_id}]
    tokens = inputs[0]

    def trained(out):
        for name in ("checkpoint.pt", "train.json", "metrics.jsonl"):
            out.write_bytes(name, (run_dir / name).read_bytes())
        return StageResult(0, 0, extra=json.loads((run_dir / "train.json").read_text()))

    train = build_version(storage, VersionPlan("train", {}, [tokens], "code"), trained)
    record.add_version(train.summary())

    def scored(out):
        out.write_bytes("eval.json", json.dumps(evaluation).encode())
        return StageResult(0, 0, extra=evaluation)

    train_ref = {"stage": "train", "version_id": train.version_id}
    plan = VersionPlan("evaluate", {}, [train_ref, tokens], "code")
    record.add_version(build_version(storage, plan, scored).summary())
    record.finish("completed")
    return storage


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.mark.parametrize("fmt", ["hf", "safetensors"])
def test_export_of_a_run_writes_a_model_card_with_its_story(trained_run, evaluated, tmp_path, fmt):
    run_dir, summary, _ = trained_run
    store_run(tmp_path / "storage", run_dir, evaluated)
    checkpoint = checkpoint_for("run-card", tmp_path / "storage")
    context = card_context("run-card", tmp_path / "storage", checkpoint)
    export(checkpoint, tmp_path / "out", fmt, context)
    text = (tmp_path / "out" / CARD).read_text()

    header = front_matter(text)
    assert header["license"] == "other" and header["language"] == ["en"]
    assert header["datasets"] == SEEDS and header["pipeline_tag"] == "text-generation"
    assert header["library_name"] == ("transformers" if fmt == "hf" else "llmforge")
    results = header["model-index"][0]["results"]
    lm = {m["type"]: m["value"] for m in results[0]["metrics"]}
    assert lm["val_loss"] == round(evaluated["val_loss"], 4)
    assert lm["bits_per_byte"] == round(evaluated["bits_per_byte"], 4)
    hellaswag = {m["type"]: m["value"] for m in results[1]["metrics"]}
    assert hellaswag["acc_norm"] == round(evaluated["hellaswag"]["acc_norm"], 4)
    try:
        from huggingface_hub import ModelCard
    except ImportError:  # the yaml checks above still ran
        ModelCard = None
    if ModelCard is not None:
        card = ModelCard(text)
        values = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
        assert values[("Rowan/hellaswag", "acc")] == round(evaluated["hellaswag"]["acc"], 4)
        assert card.data.license == "other"

    assert "run-card" in text and f"| checkpoint step | {summary['steps']} |" in text
    assert f"| tokens trained on | {summary['tokens_seen']:,} |" in text
    assert "language_not_en 2, gopher_short_doc 1" in text  # drop reasons with counts
    assert "| filter |" in text and "| 9 | 6 |" in text  # docs in -> out
    assert "tokens_train 31,337" in text and "crawl_http_404 2" in text
    assert f"{evaluated['perplexity']:.4f}" in text and "HellaSwag acc_norm (20 items)" in text
    assert "<- tokenize " in text and "<- source" in text  # the lineage to the seeds
    assert "hardware" in text and summary["hardware"] in text
    if fmt == "hf":
        assert "AutoModelForCausalLM.from_pretrained" in text
    else:
        assert "load_exported" in text


def test_a_train_version_folder_finds_its_run_and_a_bare_checkpoint_says_so(
    trained_run, evaluated, tmp_path
):
    run_dir, summary, _ = trained_run
    storage = store_run(tmp_path / "storage", run_dir, evaluated)
    train_id = RunRecord.load(storage, "run-card").data["versions"]["train"]["version_id"]
    folder = tmp_path / "storage" / "versions" / "train" / train_id
    context = card_context(str(folder), None, folder / "checkpoint.pt")
    assert context.run_id == "run-card" and context.evaluation is not None

    export(run_dir / "checkpoint.pt", tmp_path / "bare", "hf", license="apache-2.0")
    text = (tmp_path / "bare" / CARD).read_text()
    header = front_matter(text)
    assert header["license"] == "apache-2.0" and "datasets" not in header
    assert "checkpoint file alone (no run record)" in text and "License: `other`" not in text
    # What the checkpoint and train.json know: the training's own val numbers.
    values = {m["type"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert values["final_val_loss"] == round(summary["final_val_loss"], 4)
    assert f"| tokens trained on | {summary['tokens_seen']:,} |" in text


@pytest.mark.slow  # a CLI process importing torch
def test_cli_export_of_a_run_id_writes_the_card(trained_run, evaluated, tmp_path):
    run_dir, _, _ = trained_run
    store_run(tmp_path / "storage", run_dir, evaluated, run_id="run-cli")
    args = ["export", "run-cli", "--format", "hf", "--output", str(tmp_path / "out")]
    done = llmforge(*args, "--storage", str(tmp_path / "storage"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out" / CARD).read_text()
    assert front_matter(text)["model-index"][0]["name"] == "llmforge-run-cli"
    assert "language_not_en 2" in text


def test_the_card_carries_lm_eval_scores_beside_ours():
    from model.card import _metrics

    evaluation = {
        "val_loss": 3.5,
        "hellaswag": {"n": 200, "acc": 0.26, "acc_norm": 0.205, "acc_char": 0.27},
        "lm_eval": {"version": "0.4.13", "tasks": {"hellaswag": {
            "n": 200, "acc": 0.255, "acc_stderr": 0.031, "acc_norm": 0.27}}},
    }  # fmt: skip
    results, rows = _metrics({"token_dataset": "t"}, {}, evaluation)
    assert ("evaluate", "lm_eval hellaswag acc (200 items)", "0.2550") in rows
    assert ("evaluate", "lm_eval hellaswag acc_norm (200 items)", "0.2700") in rows
    (harness,) = [r for r in results if r["task"]["name"] == "lm-evaluation-harness hellaswag"]
    assert [(m["type"], m["value"]) for m in harness["metrics"]] == [
        ("acc", 0.255),
        ("acc_norm", 0.27),
    ]
