import random
import ssl
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry
from pydantic import ValidationError

from pipeline.documents import DOCUMENT_SCHEMA, doc_id, shard_name
from pipeline.errors import DataError, EmptyStageError
from pipeline.stage import process_map
from pipeline.tokenize.tokenizer import (
    TokenizeConfig,
    decode_tokens,
    get_encoding,
    run,
    token_dtype,
    val_score,
)
from tests.conftest import shared_data

EOT = 50256
TEXTS = [
    "Hello world.",
    "  leading spaces, trailing newline\n",
    "Ünïcödé: 日本語のテキスト, emoji 🚀 and a tab\there.",
    "A literal <|endoftext|> inside the text stays ordinary text.",
    "",
    "Line one.\n\nLine two after a blank line.",
]


def write_shards(folder: Path, shards: list[list[tuple[str, str | None]]]) -> Path:
    """Document shards from (url, text) pairs, DOCUMENT_SCHEMA like a real stage writes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, docs in enumerate(shards):
        rows = [{"id": doc_id(url), "url": url, "text": text} for url, text in docs]
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), folder / shard_name(i))
    return folder


def read_split(out: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / split).glob("part-*.parquet")))


def many_docs(n: int) -> list[tuple[str, str]]:
    return [(f"https://example.com/{i}", f"document number {i} says hi") for i in range(n)]


def test_round_trip_and_one_eot_per_doc(tmp_path):
    docs = [(f"https://a.org/{i}", t) for i, t in enumerate(TEXTS)]
    inp = write_shards(tmp_path / "in", [docs[:3], docs[3:]])
    result = run(TokenizeConfig(val_fraction=0.0), inp, tmp_path / "out")

    table = read_split(tmp_path / "out", "train")
    assert len(read_split(tmp_path / "out", "val")) == 0
    by_id = {url_id: text for url_id, text in ((doc_id(u), t) for u, t in docs)}
    assert sorted(table.column("id").to_pylist()) == sorted(by_id)
    for row in table.to_pylist():
        tokens = row["tokens"]
        assert decode_tokens("gpt2", tokens) == by_id[row["id"]] + "<|endoftext|>"
        assert tokens[-1] == EOT and tokens.count(EOT) == 1
        assert row["num_tokens"] == len(tokens)

    assert result.docs_in == result.docs_out == len(TEXTS)
    extra = result.extra
    assert extra["tokenizer"] == "gpt2" and extra["vocab_size"] == 50257
    assert extra["eot_token"] == EOT and extra["dtype"] == "uint16"
    assert extra["docs_train"] == len(TEXTS) and extra["docs_val"] == 0
    assert extra["tokens_train"] == sum(table.column("num_tokens").to_pylist())
    assert extra["text_bytes"] == sum(len(t.encode("utf-8")) for t in TEXTS)
    assert [s["shard"] for s in result.shards] == ["part-00000.parquet", "part-00001.parquet"]


def test_schema_is_uint16_lists_and_shards_mirror_inputs(tmp_path):
    inp = write_shards(tmp_path / "in", [many_docs(5), many_docs(0), many_docs(3)])
    run(TokenizeConfig(), inp, tmp_path / "out")
    for split in ("train", "val"):
        names = sorted(p.name for p in (tmp_path / "out" / split).iterdir())
        assert names == [shard_name(i) for i in range(3)]  # empty input shard -> empty outputs
        schema = pq.read_schema(tmp_path / "out" / split / shard_name(0))
        assert schema.field("tokens").type == pa.list_(pa.uint16())
        assert schema.field("num_tokens").type == pa.int32()
        assert schema.field("id").type == pa.string()
    assert token_dtype(50257) == pa.uint16() and token_dtype(1 << 16) == pa.uint16()
    assert token_dtype(100277) == pa.uint32()  # cl100k_base


def test_split_is_by_id_hash_whatever_the_shard_layout(tmp_path):
    docs = many_docs(2000)
    config = TokenizeConfig(val_fraction=0.1, batch_size=100)
    run(config, write_shards(tmp_path / "one", [docs]), tmp_path / "a")
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    layout = [shuffled[:700], shuffled[700:710], shuffled[710:]]
    result = run(config, write_shards(tmp_path / "three", layout), tmp_path / "b")

    val_a = set(read_split(tmp_path / "a", "val").column("id").to_pylist())
    val_b = set(read_split(tmp_path / "b", "val").column("id").to_pylist())
    expected = {doc_id(u) for u, _ in docs if val_score(doc_id(u)) < 0.1}
    assert val_a == val_b == expected
    assert 150 <= len(expected) <= 250  # 2000 x 0.1 = 200, sd ~13
    train_b = set(read_split(tmp_path / "b", "train").column("id").to_pylist())
    assert not train_b & val_b and len(train_b | val_b) == 2000
    assert result.extra["docs_val"] == len(expected) and result.extra["force_val"] is None


def test_tiny_dataset_still_gets_a_val_doc(tmp_path):
    docs = many_docs(3)
    scores = {doc_id(u): val_score(doc_id(u)) for u, _ in docs}
    assert min(scores.values()) >= 1e-6  # precondition: the hash rule puts nobody in val
    result = run(
        TokenizeConfig(val_fraction=1e-6), write_shards(tmp_path / "in", [docs]), tmp_path / "o"
    )
    assert read_split(tmp_path / "o", "val").column("id").to_pylist() == [
        min(scores, key=scores.get)
    ]
    assert result.extra["docs_val"] == 1 and result.extra["docs_train"] == 2

    # ...and the mirror rule keeps one in train; a single document is never moved.
    assert max(scores.values()) < 0.999999
    run(TokenizeConfig(val_fraction=0.999999), tmp_path / "in", tmp_path / "o2")
    assert read_split(tmp_path / "o2", "train").column("id").to_pylist() == [
        max(scores, key=scores.get)
    ]
    single = write_shards(tmp_path / "single", [docs[:1]])
    result = run(TokenizeConfig(val_fraction=1e-6), single, tmp_path / "o3")
    assert result.extra["docs_val"] == 0 and result.extra["docs_train"] == 1


def test_reads_a_stage_folder_with_small_row_groups_in_processes(tmp_path):
    stage_out = tmp_path / "dedup"
    write_shards(stage_out / "data", [many_docs(60), many_docs(40)])
    config = TokenizeConfig(val_fraction=0.2, batch_size=7, row_group_tokens=50)
    serial = run(config, stage_out, tmp_path / "serial")
    parallel = run(config, stage_out, tmp_path / "parallel", pmap=process_map(2))
    assert serial.extra == parallel.extra and serial.shards == parallel.shards
    train = tmp_path / "serial" / "train" / shard_name(0)
    assert pq.ParquetFile(train).num_row_groups > 1
    assert pq.read_table(train).equals(
        pq.read_table(tmp_path / "parallel" / "train" / shard_name(0))
    )


def test_datasets_loads_the_shards(tmp_path):
    datasets = pytest.importorskip("datasets")
    run(
        TokenizeConfig(val_fraction=0.3),
        write_shards(tmp_path / "in", [many_docs(20)]),
        tmp_path / "o",
    )
    files = {s: str(tmp_path / "o" / s / "part-*.parquet") for s in ("train", "val")}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows + ds["val"].num_rows == 20 and ds["val"].num_rows > 0
    row = ds["train"][0]
    assert row["tokens"][-1] == EOT and row["num_tokens"] == len(row["tokens"])
    assert ds["train"].features["tokens"].feature.dtype == "uint16"


def test_the_verdict_is_5145_tokens_plus_eot(tmp_path):
    path = next(shared_data("text", "the-verdict").rglob("the-verdict.txt"))
    text = path.read_text(encoding="utf-8")
    inp = write_shards(tmp_path / "in", [[("https://verdict", text)]])
    result = run(TokenizeConfig(), inp, tmp_path / "o")
    # The README's 5,145 is `encode_ordinary(text)`; the stage adds one EOT per document.
    assert len(get_encoding("gpt2").encode_ordinary(text)) == 5145
    assert result.extra["tokens_train"] + result.extra["tokens_val"] == 5146
    assert result.extra["text_bytes"] == len(text.encode("utf-8"))


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("no route"),
        urllib.error.URLError("offline"),
        ssl.SSLError("handshake"),
    ],
)
def test_offline_without_cache_names_tiktoken_cache_dir(tmp_path, monkeypatch, error):
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget encodings loaded earlier

    def no_network(blobpath):
        raise error

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR") as info:
        get_encoding("gpt2")
    assert "\n" not in str(info.value) and "'gpt2'" in str(info.value)
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR"):
        run(TokenizeConfig(), tmp_path, tmp_path / "o")  # before even looking at the input


def test_bad_config_encoding_and_input(tmp_path):
    with pytest.raises(DataError, match="unknown tiktoken encoding 'gpt3'"):
        get_encoding("gpt3")
    for bad in ({"val_fraction": 1.0}, {"val_fraction": -0.1}, {"batch_size": 0}, {"vocab": 1}):
        with pytest.raises(ValidationError):
            TokenizeConfig(**bad)
    null_text = write_shards(tmp_path / "null", [[("https://a", "ok"), ("https://b", None)]])
    with pytest.raises(DataError, match=rf"part-00000.parquet: document {doc_id('https://b')}"):
        run(TokenizeConfig(), null_text, tmp_path / "o1")
    with pytest.raises(EmptyStageError, match="tokenize"):
        run(TokenizeConfig(), write_shards(tmp_path / "empty", [[]]), tmp_path / "o2")
    (tmp_path / "no_shards").mkdir()
    with pytest.raises(DataError, match="no_shards: no part-"):
        run(TokenizeConfig(), tmp_path / "no_shards", tmp_path / "o3")


def test_decode_tokens_accepts_numpy():
    tokens = np.array(get_encoding("gpt2").encode_ordinary("hi there") + [EOT], np.uint16)
    assert decode_tokens("gpt2", tokens) == "hi there<|endoftext|>"
