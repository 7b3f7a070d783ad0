"""Documents from other tools: FineWeb Parquet, Dolma JSONL.gz, RedPajama and plain JSONL,
`datasets` Parquet, read into document shards and through filter, dedup and tokenize."""

import gzip
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import stages
from pipeline.config import PipelineConfig
from pipeline.documents import DOCUMENT_SCHEMA, doc_id
from pipeline.errors import DataError
from pipeline.extract.sources import DocumentsConfig, ingest, list_source_files
from pipeline.sample_site.prose import TOPICS, EnglishWriter
from tests.conftest import shared_data


def articles(n: int, seed: int = 0) -> list[str]:
    """English prose the default filters keep (the sample site's article writer)."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    return [
        "\n\n".join(EnglishWriter(rng, topics[i % len(topics)]).body(250, 400)) for i in range(n)
    ]


def fineweb_parquet(folder: Path, texts: list[str]) -> Path:
    """A FineWeb shard as FineWeb publishes them: `000_00000.parquet`, its documented columns
    (`date` a string, `language_score` float64, `token_count` int64)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    table = pa.table(
        {
            "text": texts,
            "id": [f"<urn:uuid:{i:08d}-1111-2222-3333-444455556666>" for i in range(n)],
            "dump": ["CC-MAIN-2013-20"] * n,
            "url": [f"http://www.example{i % 3}.com/post/{i}" for i in range(n)],
            "date": [f"2013-05-18T07:24:{i % 60:02d}Z" for i in range(n)],
            "file_path": ["s3://commoncrawl/crawl-data/CC-MAIN-2013-20/segments/x.warc.gz"] * n,
            "language": ["en"] * n,
            "language_score": pa.array([0.95] * n, pa.float64()),
            "token_count": pa.array([len(t.split()) for t in texts], pa.int64()),
        }
    )
    path = folder / "000_00000.parquet"
    pq.write_table(table, path)
    return path


def dolma_jsonl_gz(path: Path, texts: list[str]) -> Path:
    """A Dolma documents file: JSONL.gz with `id, text, source, added, created, metadata`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            doc = {
                "id": f"dolma-{i}",
                "text": text,
                "source": "common-crawl",
                "added": "2023-04-07T15:24:38.743534+00:00",
                "created": "2020-03-29T09:04:10Z",
                "metadata": {"url": f"http://dolma.example/{i}", "length": len(text)},
            }
            out.write(json.dumps(doc) + "\n")
    return path


def plain_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def read_docs(folder: Path) -> list[dict]:
    return pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()


def load_hf(folder: Path):
    """What a Hugging Face user does with a stage's output."""
    import datasets

    files = sorted(str(p) for p in folder.glob("part-*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train")


def test_fineweb_parquet_columns_used_coerced_and_carried(tmp_path):
    path = fineweb_parquet(tmp_path / "fineweb", ["First document text.", "Second one."])
    result = ingest(DocumentsConfig(), [path], tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "data" / "part-00000.parquet")
    assert table.schema == DOCUMENT_SCHEMA
    docs = table.to_pylist()
    assert result.docs_in == result.docs_out == 2
    first = docs[0]
    assert first["id"] == "<urn:uuid:00000000-1111-2222-3333-444455556666>"
    assert first["domain"] == "www.example0.com"  # derived from the url
    assert first["language"] == "en" and first["language_score"] == pytest.approx(0.95)
    assert result.extra["languages_detected"] == 0  # FineWeb labels kept, none recomputed
    meta = json.loads(first["meta"])
    assert meta == {
        "dump": "CC-MAIN-2013-20",
        "date": "2013-05-18T07:24:00Z",
        "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2013-20/segments/x.warc.gz",
        "token_count": 3,
    }
    # Mapping FineWeb's `date` to the document time: an ISO string becomes a UTC timestamp.
    mapped = DocumentsConfig(columns={"fetched_at": "date"})
    ingest(mapped, [path], tmp_path / "mapped")
    doc = read_docs(tmp_path / "mapped" / "data")[1]
    assert doc["fetched_at"] == datetime(2013, 5, 18, 7, 24, 1, tzinfo=UTC)
    assert "date" not in json.loads(doc["meta"])


def test_dolma_redpajama_and_plain_jsonl(tmp_path):
    dolma = dolma_jsonl_gz(tmp_path / "dolma" / "0000.json.gz", ["The cat sat on the mat."])
    plain = plain_jsonl(tmp_path / "plain.jsonl", ["Just a text line, nothing else.", None])
    redpajama = tmp_path / "rp.jsonl"
    redpajama.write_text(
        json.dumps({"text": "A RedPajama document.", "meta": {"source": "arxiv", "id": 7}}) + "\n"
    )
    result = ingest(DocumentsConfig(), [dolma, plain, redpajama], tmp_path / "out")
    docs = read_docs(tmp_path / "out" / "data")
    assert [d["text"] for d in docs] == [
        "The cat sat on the mat.",
        "Just a text line, nothing else.",
        "A RedPajama document.",
    ]
    assert docs[0]["id"] == "dolma-0" and docs[0]["language"] == "en"  # detected
    assert json.loads(docs[0]["meta"]) == {
        "source": "common-crawl",
        "added": "2023-04-07T15:24:38.743534+00:00",
        "created": "2020-03-29T09:04:10Z",
        "metadata": {"url": "http://dolma.example/0", "length": 23},
    }
    # No id, no url: a stable hash of the text; nothing else to carry.
    assert docs[1]["id"] == doc_id("Just a text line, nothing else.") and docs[1]["meta"] is None
    assert json.loads(docs[2]["meta"]) == {"source": "arxiv", "id": 7}  # RedPajama's meta
    # The null text is not lost: it is a removed document with a reason.
    assert result.drops == {"source_no_text": 1}
    removed = read_docs(tmp_path / "out" / "removed")
    assert [r["reason"] for r in removed] == ["source_no_text"]


def test_harmless_mismatches_coerced_and_shards_split(tmp_path):
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "content": ["one " * 50, "two " * 50, "three " * 50],
            "fetched_at": ["2024-01-01T00:00:00Z", "2024-01-02T12:00:00+02:00", None],
            "language": ["en", None, "en"],
            "language_score": pa.array([0.5, None, 1.0], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    config = DocumentsConfig(text_column="content", shard_bytes=300, detect_language=False)
    result = ingest(config, [tmp_path / "in.parquet"], tmp_path / "out")
    shards = sorted((tmp_path / "out" / "data").glob("part-*.parquet"))
    assert [s.name for s in shards] == ["part-00000.parquet", "part-00001.parquet"]
    assert result.extra["shards"] == 2
    docs = read_docs(tmp_path / "out" / "data")
    assert [d["id"] for d in docs] == ["1", "2", "3"]
    assert docs[1]["fetched_at"] == datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert docs[1]["language"] is None  # not detected when detection is off
    assert pq.read_schema(shards[0]) == DOCUMENT_SCHEMA


def test_zstd_jsonl_and_folders_and_globs(tmp_path):
    import pyarrow as pa

    path = tmp_path / "docs" / "a.jsonl.zst"
    path.parent.mkdir()
    with pa.output_stream(str(path), compression="zstd") as out:
        out.write(b'{"text": "zstd compressed text"}\n')
    plain_jsonl(tmp_path / "docs" / "sub" / "b.jsonl", ["nested"])
    (tmp_path / "docs" / "_SUCCESS").write_text("")
    assert list_source_files([str(tmp_path / "docs")]) == [path, tmp_path / "docs/sub/b.jsonl"]
    assert list_source_files([str(tmp_path / "docs" / "*.zst")]) == [path]
    ingest(DocumentsConfig(detect_language=False), [path], tmp_path / "out")
    assert read_docs(tmp_path / "out" / "data")[0]["text"] == "zstd compressed text"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.parquet", pa.table({"body": ["x"]}), "a.parquet: no column 'text' (columns: body"),
        (
            "b.parquet",
            pa.table({"text": [1, 2]}),
            "b.parquet: column 'text' is int64, expected string",
        ),
        (
            "c.parquet",
            pa.table({"text": ["x"], "language_score": ["high"]}),
            "c.parquet: column 'language_score' is string, expected a number",
        ),
        ("d.jsonl", '{"body": "x"}\n', "d.jsonl:1: no column 'text' (columns: body"),
        ("e.jsonl", '{"text": "x"}\n{"text": 5}\n', "e.jsonl:2: column 'text' is an integer"),
        ("f.jsonl", '{"text": "x"}\n{"text": \n', "f.jsonl:2: not valid JSON"),
        ("g.jsonl.gz", b"not gzip at all", "g.jsonl.gz: not a readable JSON Lines file"),
        ("h.parquet", b"PAR1 garbage", "h.parquet: not a readable Parquet file"),
        (
            "i.jsonl",
            '{"text": "x", "fetched_at": "yesterday"}\n',
            "i.jsonl:1: column 'fetched_at': 'yesterday' is not an ISO 8601 time",
        ),
        ("j.jsonl", '{"text": "x", "id": [1]}\n', "column 'id' is a list, expected a string"),
    ],
)
def test_bad_input_fails_in_one_line_naming_file_and_column(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, pa.Table):
        pq.write_table(content, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError) as error:
        ingest(DocumentsConfig(), [path], tmp_path / "out")
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_each_stage_reads_files_from_other_tools_and_keeps_meta(tmp_path):
    """Filter, dedup and tokenize each on a FineWeb shard, a Dolma file and a `datasets`
    Parquet file, as `llmforge stage` runs them; every output loads with `datasets`."""
    import datasets

    texts = articles(6)
    texts[5] = texts[4]  # an exact duplicate for dedup to find
    hf = tmp_path / "hf.parquet"
    datasets.Dataset.from_dict({"text": texts, "label": list(range(6))}).to_parquet(str(hf))
    inputs = {
        "fineweb": fineweb_parquet(tmp_path / "fineweb", texts),
        "dolma": dolma_jsonl_gz(tmp_path / "dolma.jsonl.gz", texts),
        "hf": hf,
    }
    config = PipelineConfig()
    for label, path in inputs.items():
        for stage in ("filter", "dedup", "tokenize"):
            out = tmp_path / f"{label}-{stage}"
            manifest = stages.run_standalone(
                stage, config.stage_config(stage), path, out, stages.serial_map, config.source
            )
            assert not (out / ".input").exists()
            if stage == "tokenize":
                assert manifest["counts"]["docs_out"] == 6
                assert len(load_hf(out / "train")) + len(load_hf(out / "val")) == 6
                continue
            kept = load_hf(out / "data")
            assert len(kept) == (6 if stage == "filter" else 5), (label, stage)
            meta = json.loads(kept[0]["meta"])
            if label == "fineweb":
                assert meta["dump"] == "CC-MAIN-2013-20", meta
            elif label == "dolma":
                assert meta["source"] == "common-crawl" and kept[0]["id"] == "dolma-0"
            else:
                assert meta == {"label": 0}
        removed = pq.read_table(tmp_path / f"{label}-dedup" / "removed").to_pylist()
        assert [r["reason"] for r in removed] == ["dedup_exact"]
        assert json.loads(removed[0]["meta"]) is not None  # removed rows keep it too


def test_real_dolma_file_through_the_stages(tmp_path):
    path = shared_data("text", "dolma-cc_en_head", "tests", "data", "multiple_files")
    path = path / "cc_en_head-0091.jsonl.gz"
    config = PipelineConfig()
    manifest = stages.run_standalone(
        "dedup", config.dedup, path, tmp_path / "dedup", stages.serial_map, config.source
    )
    assert manifest["counts"]["docs_in"] == 10
    docs = read_docs(tmp_path / "dedup" / "data")
    assert docs[0]["id"].startswith("http") and json.loads(docs[0]["meta"])["metadata"]["bucket"]
    assert docs[0]["language"] is None  # dedup needs no language: not detected for it


@pytest.mark.parametrize("stage", ["filter", "dedup", "tokenize"])
def test_stage_functions_reject_wrong_schema_in_one_line(tmp_path, stage):
    """The stage functions themselves (not only the CLI): a shard folder whose `text` is an
    integer column fails before any work, naming the file and the column."""
    folder = tmp_path / "docs"
    folder.mkdir()
    bad = pa.table({"id": ["a"], "text": pa.array([3], pa.int64())})
    pq.write_table(bad, folder / "part-00000.parquet")
    config = PipelineConfig()
    run = {
        "filter": lambda: __import__("pipeline.filters", fromlist=["run"]).run(
            config.filter, folder, tmp_path / "out"
        ),
        "dedup": lambda: __import__("pipeline.dedup", fromlist=["run"]).run(
            config.dedup, folder, tmp_path / "out"
        ),
        "tokenize": lambda: __import__("pipeline.tokenize.tokenizer", fromlist=["run"]).run(
            config.tokenize, folder, tmp_path / "out"
        ),
    }[stage]
    for call in (
        run,
        lambda: stages.execute(stage, config.stage_config(stage), folder, tmp_path / "o"),
    ):
        with pytest.raises(DataError) as error:
            call()
        text = str(error.value)
        assert "part-00000.parquet" in text and "'" in text and "\n" not in text, text
    # The registry names the wrong column exactly.
    with pytest.raises(
        DataError,
        match=r"part-00000.parquet: (column 'text' is int64|not a document shard: no column)",
    ):
        stages.execute(stage, config.stage_config(stage), folder, tmp_path / "o2")


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_token_input_checked_in_one_line(tmp_path, stage):
    tokens = tmp_path / "tokens"
    for split in ("train", "val"):
        (tokens / split).mkdir(parents=True)
        table = pa.table({"id": ["a"], "tokens": pa.array([[1.5, 2.0]], pa.list_(pa.float64()))})
        pq.write_table(table, tokens / split / "part-00000.parquet")
    with pytest.raises(
        DataError,
        match=r"part-00000.parquet: column 'tokens' is list<double>, expected list<uint16>",
    ):
        stages.check_input(stage, tokens, tokens)
    docs = tmp_path / "docs"
    (docs / "val").mkdir(parents=True)
    (docs / "train").mkdir(parents=True)
    for split in ("train", "val"):
        pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), docs / split / "part-00000.parquet")
    with pytest.raises(
        DataError, match=r"not a token shard: no column 'tokens' \(columns: id, text"
    ):
        stages.check_input(stage, docs, docs)


def test_empty_shards_beside_full_ones_load_with_datasets(tmp_path):
    """A stage writes every shard, empty ones too; `datasets` must still load the folder."""
    from pipeline.documents import ShardWriter, shard_name

    with ShardWriter(tmp_path / shard_name(0), DOCUMENT_SCHEMA):
        pass
    with ShardWriter(tmp_path / shard_name(1), DOCUMENT_SCHEMA) as writer:
        writer.write({"id": "a", "text": "kept"})
    assert load_hf(tmp_path)["text"] == ["kept"]


def test_documents_source_preflight_and_plan(tmp_path):
    """`source.kind = "documents"` starts the run at extract; bad paths or a missing text
    column fail in preflight, before any work; the version id follows content and settings."""
    from pipeline.config import load_config

    good = plain_jsonl(tmp_path / "good.jsonl", ["some text"])
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["x"]}), bad)

    def config(*overrides):
        return load_config(None, ["source.kind=documents", "run.until=tokenize", *overrides])

    assert stages.stages_to_run(config()) == ["extract", "filter", "dedup", "tokenize"]
    cases = [
        ((), "source.paths: empty while source.kind = 'documents'"),
        ((f'source.paths=["{tmp_path / "nope"}"]',), "nope: no such file or directory"),
        ((f'source.paths=["{tmp_path}/*.csv"]',), "*.csv: no files match this pattern"),
        ((f'source.paths=["{bad}"]',), "bad.parquet: no column 'text' (columns: body"),
        (('source.columns={colour="c"}', f'source.paths=["{good}"]'), "unknown document field"),
    ]
    for overrides, message in cases:
        with pytest.raises(DataError) as error:
            stages.preflight(config(*overrides), ["extract"])
        assert message in str(error.value), str(error.value)
    source, inputs = stages.resolve_source("extract", config(f'source.paths=["{good}"]'), None)
    assert source.files == (good,) and inputs[0]["source"] == "documents"
    other = config(f'source.paths=["{good}"]', "source.detect_language=false")
    assert stages.resolve_source("extract", other, None)[1] != inputs


def test_files_are_read_as_streams_of_batches(tmp_path):
    """Parquet batch by batch and JSONL line by line: never a whole file in memory."""
    from pipeline.extract.sources import Columns, iter_records

    texts = [f"document {i}" for i in range(2500)]
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": texts}), parquet, row_group_size=1000)
    jsonl = dolma_jsonl_gz(tmp_path / "b.jsonl.gz", texts)
    columns = Columns(DocumentsConfig())
    assert [len(b) for b in iter_records(parquet, columns)] == [1024, 1024, 452]
    assert [len(b) for b in iter_records(jsonl, columns)] == [1024, 1024, 452]
    where, record = next(iter(iter_records(jsonl, columns)))[1]
    assert where.endswith("b.jsonl.gz:2") and record["text"] == "document 1"
