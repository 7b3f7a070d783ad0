"""The trained tokenizer (tokenize.tokenizer = "train"): exact round trips on real text, train
split only, deterministic files, version ids, manifest keys."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest

from pipeline import stages
from pipeline.documents import doc_id
from pipeline.tokenize import bpe
from pipeline.tokenize import tokenizer as tokenize_module
from pipeline.tokenize.tokenizer import TokenizeConfig, run, val_score
from tests.conftest import REPO, shared_data
from tests.pipeline.test_tokenize import read_split, write_shards

VOCAB = 600  # small: fast to train, still hundreds of merges
VAL_WORD = "zqxwvyzqxwvy"  # only in a val document, many times: the trainer must never see it


def page_text(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    doc = lxml.html.fromstring(raw)
    for node in doc.xpath("//script|//style"):
        node.drop_tree()
    return doc.text_content()


def real_documents() -> list[tuple[str, str]]:
    """(url, text): the-verdict, dolma CCNet pages, 40 multilingual web pages as text (raw
    whitespace kept), a slice of Shakespeare, and a val-only document with a made-up word."""
    text = shared_data("text")
    verdict = text / "the-verdict" / "ch02" / "01_main-chapter-code" / "the-verdict.txt"
    docs = [("https://verdict.test/", verdict.read_text(encoding="utf-8"))]
    for path in sorted((text / "dolma-cc_en_head").rglob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            docs.append((f"https://dolma.test/{path.stem}/{i}", json.loads(line)["text"]))
    cache = shared_data("extraction-trafilatura", "tests", "cache")
    for path in sorted(cache.glob("*.html"))[:40]:
        docs.append((f"https://{path.stem}.test/", page_text(path)))
    shakespeare = text / "tinyshakespeare" / "data" / "tinyshakespeare" / "input.txt"
    speeches = shakespeare.read_text(encoding="utf-8").split("\n\n")[:800]
    docs += [(f"https://shakespeare.test/{i}", s) for i, s in enumerate(speeches)]
    url = next(
        f"https://val.test/{i}"
        for i in range(10_000)
        if val_score(doc_id(f"https://val.test/{i}")) < 0.05
    )
    docs.append((url, f"{VAL_WORD} " * 400))
    return docs


CONFIG = TokenizeConfig(tokenizer="train", vocab_size=VOCAB, val_fraction=0.05)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    docs = real_documents()
    folder = tmp_path_factory.mktemp("docs")
    third = len(docs) // 3
    return write_shards(folder, [docs[:third], docs[third : 2 * third], docs[2 * third :]]), docs


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    folder, docs = corpus
    out = tmp_path_factory.mktemp("tokens")
    return out, run(CONFIG, folder, out), docs


def test_every_document_round_trips_exactly(trained):
    out, result, docs = trained
    enc = bpe.encoding_from_spec((out / bpe.TOKENIZER_FILE).read_text(encoding="utf-8"))
    by_id = {doc_id(url): text for url, text in docs}
    seen = 0
    for split in ("train", "val"):
        for row in read_split(out, split).to_pylist():
            tokens = row["tokens"]
            assert tokens[-1] == enc.eot_token and enc.eot_token not in tokens[:-1]
            assert enc.decode_bytes(tokens[:-1]) == by_id[row["id"]].encode("utf-8")
            seen += 1
    assert seen == len(docs) and result.extra["dtype"] == "uint16"


def test_manifest_names_the_tokenizer_file(trained):
    out, result, _ = trained
    extra = result.extra
    data = (out / bpe.TOKENIZER_FILE).read_bytes()
    sha = bpe.spec_sha256(data.decode("utf-8"))
    assert extra["tokenizer_sha256"] == sha
    assert extra["tokenizer"] == f"bpe-{VOCAB}-{sha[:12]}"
    assert extra["vocab_size"] == VOCAB and extra["eot_token"] == VOCAB - 1
    assert extra["tokenizer_file"] == bpe.TOKENIZER_FILE
    # Compression beside GPT-2's on the same val text: both measured, both plausible.
    assert 0.2 < extra["tokens_per_byte"] < 1.0 and 0.2 < extra["gpt2_tokens_per_byte"] < 1.0
    assert extra["tokens_per_byte"] == round(
        (extra["tokens_val"] - extra["docs_val"]) / extra["text_bytes_val"], 4
    )


def test_trainer_sees_the_train_split_only(corpus, tmp_path, monkeypatch):
    folder, docs = corpus
    received: list[str] = []
    real = bpe.train_spec

    def recording(texts, vocab_size):
        texts = list(texts)
        received.extend(texts)
        return real(texts, vocab_size)

    monkeypatch.setattr(bpe, "train_spec", recording)
    result = run(CONFIG, folder, tmp_path / "out")
    train_ids = set(read_split(tmp_path / "out", "train").column("id").to_pylist())
    val_ids = set(read_split(tmp_path / "out", "val").column("id").to_pylist())
    assert val_ids and train_ids
    by_id = {doc_id(url): text for url, text in docs}
    assert sorted(received) == sorted(by_id[i] for i in train_ids)
    assert len(received) == result.extra["docs_train"]
    ranks = bpe.parse_spec((tmp_path / "out" / bpe.TOKENIZER_FILE).read_text())["ranks"]
    assert not any(b"zqxw" in token for token in ranks)  # 400 times in val, never a merge


def test_training_is_deterministic_across_processes(trained, corpus, tmp_path):
    out, _, _ = trained
    folder, _ = corpus
    code = (
        "import sys; from pipeline.tokenize.tokenizer import TokenizeConfig, run; "
        f"run(TokenizeConfig(tokenizer='train', vocab_size={VOCAB}), sys.argv[1], sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(folder), str(tmp_path / "again")],
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    first = (out / bpe.TOKENIZER_FILE).read_bytes()
    assert (tmp_path / "again" / bpe.TOKENIZER_FILE).read_bytes() == first
    for split in ("train", "val"):
        assert read_split(tmp_path / "again", split) == read_split(out, split)


def test_same_documents_under_another_input_version_give_the_same_tokenizer(trained, tmp_path):
    """A filter threshold change that keeps every document: a new upstream version (another
    shard layout here), hence a new tokenize version id, but the very same tokenizer."""
    out, result, docs = trained
    other = write_shards(tmp_path / "docs", [docs[:5], docs[5:]])
    again = run(CONFIG, other, tmp_path / "out")
    assert again.extra["tokenizer"] == result.extra["tokenizer"]
    assert (tmp_path / "out" / bpe.TOKENIZER_FILE).read_bytes() == (
        out / bpe.TOKENIZER_FILE
    ).read_bytes()
    a = stages.plan("tokenize", CONFIG, [{"stage": "dedup", "version_id": "0" * 16}])
    b = stages.plan("tokenize", CONFIG, [{"stage": "dedup", "version_id": "1" * 16}])
    assert a.version_id != b.version_id


def test_vocab_size_enters_the_version_id_and_gpt2_dumps_as_before():
    inputs = [{"stage": "dedup", "version_id": "0" * 16}]
    ids = {
        stages.plan("tokenize", TokenizeConfig(tokenizer="train", vocab_size=v), inputs).version_id
        for v in (4096, 8192)
    }
    assert len(ids) == 2
    gpt2 = stages.plan("tokenize", TokenizeConfig(), inputs)
    assert gpt2.version_id not in ids
    # The config part of a GPT-2 version id is what it was before the tokenizer options.
    assert gpt2.config == {
        "encoding": "gpt2",
        "val_fraction": 0.05,
        "batch_size": 256,
        "threads": 2,
        "row_group_tokens": 1 << 20,
    }
    assert TokenizeConfig.model_validate(gpt2.config) == TokenizeConfig()
    # vocab_size only matters when training: a GPT-2 config ignores it.
    assert stages.plan("tokenize", TokenizeConfig(vocab_size=4096), inputs) == gpt2


def test_tokenizer_file_is_small_plain_json():
    spec = bpe.train_spec(["hello world, hello there; hello world again"] * 3, 300)
    data = json.loads(spec)
    assert data["format"] == bpe.FORMAT and data["pattern"] == bpe.SPLIT_PATTERN
    assert data["special_tokens"] == {"<|endoftext|>": data["vocab_size"] - 1}
    enc = bpe.encoding_from_spec(spec)
    text = "héllo wörld 🚀\r\n\tdone 12345"  # bytes the training text never had
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert enc.encode("<|endoftext|>", allowed_special="all") == [enc.eot_token]


@pytest.mark.parametrize(
    ("text", "message"),
    [("{}", "not an llmforge BPE tokenizer file"), ("nope", "not an llmforge BPE")],
)
def test_bad_tokenizer_file_is_one_line(text, message):
    from pipeline.errors import DataError

    with pytest.raises(DataError, match=message):
        bpe.parse_spec(text)


def test_too_small_vocab_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TokenizeConfig(tokenizer="train", vocab_size=100)
    assert tokenize_module.TokenizeConfig(tokenizer="train").vocab_size == 8192


def test_compression_line_for_summaries(trained):
    extra = trained[1].extra
    line = tokenize_module.describe_compression(extra)
    assert line == (
        f"{extra['tokenizer']}: {extra['tokens_per_byte']:.3f} tokens/byte "
        f"(GPT-2 {extra['gpt2_tokens_per_byte']:.3f})"
    )
    assert tokenize_module.describe_compression({"tokens_train": 5}) is None
