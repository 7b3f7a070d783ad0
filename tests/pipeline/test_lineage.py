"""lineage: from a run's last version back through manifest inputs to seeds or WARC files."""

import shutil

import pytest

from pipeline.errors import DataError
from pipeline.store.lineage import format_lineage, lineage
from pipeline.store.versions import Storage
from tests.pipeline.test_gc import CHAIN, SEEDS, build_chain, make_run


def test_full_run_goes_back_to_the_crawl_seeds(tmp_path):
    storage = Storage.at(tmp_path)
    build_chain(storage)  # an older run's versions must not leak in
    versions = build_chain(storage, {"train": {"lr": 3e-4}})
    make_run(storage, "run-1", versions)
    chain = lineage(storage, "run-1")
    assert [e["stage"] for e in chain] == CHAIN[::-1]
    assert [e["version_id"] for e in chain] == [versions[s].version_id for s in CHAIN[::-1]]
    assert chain[1]["config"] == {"k": 1, "lr": 3e-4}
    assert chain[0]["counts"]["drops"] == {"evaluate_short": 2}
    crawl = chain[-1]
    assert crawl["seeds"] == SEEDS and crawl["warc_files"] == ["warc/crawl-00000.warc.gz"]
    text = format_lineage(chain)
    lines = text.splitlines()
    assert lines[0] == f"evaluate {versions['evaluate'].version_id}"
    assert f"<- train {versions['train'].version_id}" in lines
    assert '     config  {"k":1,"lr":0.0003}' in lines
    assert f"     seeds   {', '.join(SEEDS)}" in lines
    assert lines[-1] == '<- source {"snapshot":"","source":"seeds"}'
    heads = [line.split()[1] for line in lines if line.startswith("<- ") and "source" not in line]
    assert heads == CHAIN[-2::-1]


def test_partial_run_starts_at_its_last_stage(tmp_path):
    storage = Storage.at(tmp_path)
    make_run(storage, "data-only", build_chain(storage, until="tokenize"))
    stages = [e["stage"] for e in lineage(storage, "data-only")]
    assert stages == ["tokenize", "dedup", "filter", "extract", "crawl"]


def test_warc_source_run_ends_at_the_warc_files(tmp_path):
    storage = Storage.at(tmp_path)
    source = {"source": "files", "fingerprint": "f00dcafe"}
    config = {"source": {"kind": "warc", "warc_paths": ["/data/cc/a.warc.gz", "/data/cc/b"]}}
    make_run(storage, "cc", build_chain(storage, until="dedup", source=source), config=config)
    chain = lineage(storage, "cc")
    assert [e["stage"] for e in chain] == ["dedup", "filter", "extract"]
    assert chain[-1]["sources"] == [{**source, "warc_paths": config["source"]["warc_paths"]}]
    last = format_lineage(chain).splitlines()[-1]
    assert last == "<- WARC files /data/cc/a.warc.gz, /data/cc/b (fingerprint f00dcafe)"


def test_deleted_version_is_shown_missing_with_recorded_counts(tmp_path):
    storage = Storage.at(tmp_path)
    versions = build_chain(storage, until="dedup")
    make_run(storage, "run-1", versions)
    shutil.rmtree(versions["filter"].path)
    chain = lineage(storage, "run-1")
    assert [e["stage"] for e in chain] == ["dedup", "filter"]  # inputs below are unknown now
    assert chain[1]["missing"] and chain[1]["counts"]["docs_out"] == 8
    assert "filter " + versions["filter"].version_id + "  (missing" in format_lineage(chain)


def test_missing_or_empty_run_is_a_one_line_error(tmp_path):
    storage = Storage.at(tmp_path)
    with pytest.raises(DataError, match="run 'nope' not found"):
        lineage(storage, "nope")
    make_run(storage, "failed-early", {}, status="failed")
    with pytest.raises(DataError, match="'failed-early' recorded no versions"):
        lineage(storage, "failed-early")


def test_model_stages_show_their_numbers_not_zero_documents():
    chain = [
        {"stage": "train", "version_id": "a" * 16, "counts": {
            "docs_in": 0, "docs_out": 0, "drops": {}, "extra": {"steps": 30, "tokens_seen": 960}}},
        {"stage": "dedup", "version_id": "b" * 16, "counts": {
            "docs_in": 48, "docs_out": 40, "drops": {"dedup_exact": 8}, "extra": {}}},
    ]  # fmt: skip
    lines = format_lineage(chain).splitlines()
    assert lines[1] == "     counts  steps=30, tokens_seen=960"
    assert lines[3] == "     counts  docs 48 -> 40 (dropped: dedup_exact 8)"
