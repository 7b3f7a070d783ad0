"""The decontaminate filter: planted eval text is dropped with its reason, the rest is kept."""

import json

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.filters import FilterConfig, build_filters, run, signals_config
from tests.pipeline.test_filters import CLEAN, write_shard

ITEM = {
    "ctx": "A woman is outside with a bucket and a dog. The dog is running around trying to",
    "endings": ["avoid a bath.", "get in the tub.", "eat the soap.", "run away."],
    "label": 0,
}


def config_with(paths: list[str], **extra) -> FilterConfig:
    return FilterConfig.model_validate(
        {"decontaminate": {"enabled": True, "eval_paths": paths, **extra}}
    )


def test_planted_eval_text_is_dropped(tmp_path):
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps(ITEM) + "\n")
    notes = tmp_path / "eval.txt"
    notes.write_text("short\n\n" + " ".join(f"w{i}" for i in range(20)) + "\n")
    source = tmp_path / "docs"
    planted = CLEAN + "\n" + ITEM["ctx"].upper() + " " + ITEM["endings"][1]
    near = CLEAN + "\n" + ITEM["ctx"]  # the context alone is 17 words: 5 of the item's 13-grams
    write_shard(source / "part-00000.parquet", [CLEAN, planted, near])
    write_shard(
        source / "part-00001.parquet", [CLEAN + "\n" + " ".join(f"w{i}" for i in range(13))]
    )
    result = run(config_with([str(hs), str(notes)]), source, tmp_path / "out")
    # planted, near, and 13 words of the text file's 20-word paragraph; CLEAN stays.
    assert result.drops == {"decontaminate_13gram": 3}
    assert result.docs_out == 1
    removed = pq.read_table(tmp_path / "out" / "removed").to_pylist()
    assert {r["text"] for r in removed} >= {planted, near}
    attributes = pq.read_table(tmp_path / "out" / "attributes" / "part-00000.parquet")
    assert any("eval_ngram_matches" in name for name in attributes.schema.names)


def test_off_by_default_and_keyed_by_file_content(tmp_path):
    assert "decontaminate" not in [f.name for f in build_filters(FilterConfig())]
    assert "decontaminate" not in signals_config(FilterConfig())["filters"]
    with pytest.raises(ValidationError, match="eval_paths lists no evaluation file"):
        config_with([])
    path = tmp_path / "eval.txt"
    path.write_text("one text")
    before = signals_config(config_with([str(path)]))
    path.write_text("another text")
    assert signals_config(config_with([str(path)])) != before
    loose = build_filters(config_with([str(path)], ngram=2, max_matches=None))[-1]
    assert loose.decide(loose.signals({"text": "another text"})) is None  # threshold off
    strict = build_filters(config_with([str(path)], ngram=2))[-1]
    assert strict.decide(strict.signals({"text": "so another text"})) == "decontaminate_2gram"
