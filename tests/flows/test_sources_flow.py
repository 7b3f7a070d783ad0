"""Bring your own data: files from other tools through `llmforge stage` and as the pipeline's
source (`source.kind = "documents"`); wrong-schema input fails in one line at every stage."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.pipeline_flow import pipeline_flow
from pipeline.config import load_config
from tests.conftest import llmforge, shared_data
from tests.pipeline.test_sources import (
    articles,
    dolma_jsonl_gz,
    fineweb_parquet,
    load_hf,
    plain_jsonl,
)


def one_line_error(result, message):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.slow
def test_wrong_schema_input_fails_in_one_line_at_every_stage(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    # Valid Parquet, other columns: no text (the "No match for FieldRef" case).
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), docs / "part-00000.parquet")
    for stage in ("filter", "dedup", "tokenize"):
        result = llmforge("stage", stage, "--input", str(docs), "--output", str(tmp_path / stage))
        one_line_error(result, "part-00000.parquet: no column 'text' (columns: id, body")
    # As a pipeline source: preflight says it before any work (or Prefect server) starts.
    run = llmforge(
        "run",
        "--no-server",
        "--set",
        "source.kind=documents",
        "--set",
        f'source.paths=["{docs}"]',
        "--set",
        f'run.storage_root="{tmp_path / "storage"}"',
    )
    one_line_error(run, "part-00000.parquet: no column 'text' (columns: id, body")
    # The text column under another name is fine once named.
    named = llmforge(
        "stage",
        "tokenize",
        "--input",
        str(docs),
        "--output",
        str(tmp_path / "named"),
        "--set",
        "source.text_column=body",
    )
    assert named.returncode == 0, named.stderr[-2000:]
    tokens = tmp_path / "tokens"
    for split in ("train", "val"):
        (tokens / split).mkdir(parents=True)
        table = pa.table({"id": ["a"], "tokens": pa.array([[1.5]], pa.list_(pa.float64()))})
        pq.write_table(table, tokens / split / "part-00000.parquet")
    train = llmforge("stage", "train", "--input", str(tokens), "--output", str(tmp_path / "m"))
    one_line_error(train, "part-00000.parquet: column 'tokens' is list<")
    evaluate = llmforge(
        "stage",
        "evaluate",
        "--input",
        str(tmp_path / "m"),
        "--tokens",
        str(docs),
        "--output",
        str(tmp_path / "e"),
    )
    one_line_error(evaluate, "not a token dataset: no val/ folder")


@pytest.mark.slow
def test_fineweb_dolma_and_plain_jsonl_through_each_stage_from_the_cli(tmp_path):
    texts = articles(4, seed=1)
    inputs = {
        "fineweb": fineweb_parquet(tmp_path / "fineweb", texts),  # a folder of FineWeb shards
        "dolma": shared_data("text", "dolma-cc_en_head", "tests", "data", "multiple_files")
        / "cc_en_head-0174.jsonl.gz",
        "plain": plain_jsonl(tmp_path / "plain.jsonl", texts),
    }
    for label, path in inputs.items():
        for stage in ("filter", "dedup", "tokenize"):
            out = tmp_path / f"{label}-{stage}"
            result = llmforge("stage", stage, "--input", str(path), "--output", str(out))
            assert result.returncode == 0, (label, stage, result.stderr[-2000:])
            assert f"{stage}: " in result.stdout
            for folder in ("data", "removed", "train", "val"):
                rows = pq.read_table(out / folder).num_rows if (out / folder).is_dir() else 0
                if rows:  # `datasets` refuses a split without rows, whatever the files
                    assert len(load_hf(out / folder)) == rows, (label, stage, folder)
            if stage == "dedup" and label != "plain":
                assert json.loads(load_hf(out / "data")[0]["meta"])


@pytest.mark.slow
def test_documents_source_runs_the_pipeline(prefect_api, tmp_path):
    """One run reads a FineWeb shard, a Dolma JSONL.gz and a plain JSONL file: extract reads
    them into document shards, filter, dedup and tokenize follow; a rerun reuses it all."""
    texts = articles(9, seed=2)
    paths = [
        str(fineweb_parquet(tmp_path / "fineweb", texts[:3])),
        str(dolma_jsonl_gz(tmp_path / "dolma" / "0000.json.gz", texts[3:6])),
        str(plain_jsonl(tmp_path / "plain" / "docs.jsonl", texts[6:])),
    ]
    overrides = [
        f'run.storage_root="{tmp_path / "storage"}"',
        "run.until=tokenize",
        "source.kind=documents",
        f"source.paths={json.dumps(paths)}",
        "tokenize.val_fraction=0.2",
    ]
    record = pipeline_flow(load_config(None, overrides), "byod-run")
    assert record["status"] == "completed"
    assert list(record["versions"]) == ["extract", "filter", "dedup", "tokenize"]
    extract = record["versions"]["extract"]["counts"]
    assert extract["docs_in"] == extract["docs_out"] == 9
    assert extract["extra"]["languages_detected"] == 6  # Dolma and plain JSONL have none
    root = tmp_path / "storage" / "versions"
    for stage in ("extract", "filter", "dedup"):
        kept = load_hf(root / stage / record["versions"][stage]["version_id"] / "data")
        metas = [json.loads(m) if m else None for m in kept["meta"]]
        assert metas[0]["dump"] == "CC-MAIN-2013-20" and metas[3]["source"] == "common-crawl"
        assert all(lang == "en" for lang in kept["language"]) if stage == "extract" else True
    tokens = record["versions"]["tokenize"]["counts"]["extra"]
    assert tokens["docs_train"] + tokens["docs_val"] == 9
    again = pipeline_flow(load_config(None, overrides), "byod-again")
    assert all(v["reused"] for v in again["versions"].values())
