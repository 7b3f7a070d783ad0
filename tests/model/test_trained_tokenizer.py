"""A trained tokenizer end to end: tokenize -> train -> evaluate -> export, the checkpoint
carrying the tokenizer; Hugging Face tokenizer files give tiktoken's ids (GPT-2 and trained)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

# transformers reads this at import: it must never reach the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from model.checkpoint import load_checkpoint  # noqa: E402
from model.data import checkpoint_encoding, encoding_for, get_encoding  # noqa: E402
from model.evaluate import EvalConfig, evaluate  # noqa: E402
from model.export import export, load_exported  # noqa: E402
from model.hf_tokenizer import write_hf_tokenizer  # noqa: E402
from model.train import train  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.tokenize import bpe  # noqa: E402
from pipeline.tokenize.tokenizer import TokenizeConfig, run  # noqa: E402
from tests.conftest import shared_data  # noqa: E402
from tests.model.conftest import small_cfg  # noqa: E402
from tests.pipeline.test_bpe import page_text, real_documents  # noqa: E402
from tests.pipeline.test_tokenize import write_shards  # noqa: E402


def multilingual_texts() -> list[str]:
    """German, French, English... web pages (trafilatura's test set) as raw text, plus edge
    cases: CRLF, tabs, digits, emoji, CJK, a literal <|endoftext|> kept as ordinary text."""
    cache = shared_data("extraction-trafilatura", "tests", "cache")
    pages = [page_text(p) for p in sorted(cache.glob("*.html"))[40:70]]
    return [*pages, "a\r\nb\t\tc  1234567 🚀🚀 日本語のテキスト", "x <|endoftext|> y", " ", ""]


@pytest.fixture(scope="module")
def bpe_tokens(tmp_path_factory):
    """A token dataset written with a 512-token BPE trained on real documents, plus its
    manifest as the store writes it."""
    folder = write_shards(tmp_path_factory.mktemp("docs"), [real_documents()])
    out = tmp_path_factory.mktemp("tokens")
    result = run(TokenizeConfig(tokenizer="train", vocab_size=512), folder, out)
    manifest = {"version_id": "bpe-test-v1", "counts": {"extra": result.extra}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, result.extra


def test_encoding_for_reads_the_version_tokenizer(bpe_tokens, shakespeare_tokens, tmp_path):
    out, extra = bpe_tokens
    enc = encoding_for(out)
    assert enc.name == extra["tokenizer"] and enc.n_vocab == 512 and enc.eot_token == 511
    assert encoding_for(shakespeare_tokens) is get_encoding("gpt2")
    tampered = shutil.copytree(out, tmp_path / "tampered")
    (tampered / bpe.TOKENIZER_FILE).write_text(
        (out / bpe.TOKENIZER_FILE).read_text().replace('"AA=="', '"AQ=="', 1)
    )
    with pytest.raises(DataError, match="sha256 differs"):
        encoding_for(tampered)


@pytest.mark.parametrize("which", ["gpt2", "trained"])
def test_hf_tokenizer_gives_tiktoken_ids(which, bpe_tokens, tmp_path):
    from transformers import AutoTokenizer

    enc = get_encoding("gpt2") if which == "gpt2" else encoding_for(bpe_tokens[0])
    write_hf_tokenizer(enc, tmp_path, model_max_length=64)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    for text in multilingual_texts():
        ids = enc.encode_ordinary(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == ids
        assert hf.decode(ids) == text
    assert hf.convert_tokens_to_ids("<|endoftext|>") == enc.eot_token
    assert hf.eos_token == "<|endoftext|>"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_train_evaluate_export_through_a_trained_tokenizer(bpe_tokens, tmp_path):
    from transformers import AutoTokenizer

    token_dir, extra = bpe_tokens
    run_dir = tmp_path / "run"
    summary = train(small_cfg(max_steps=6, eval_interval=6, eval_tokens=512), token_dir, run_dir)
    assert summary["model_config"]["vocab_size"] == 512
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["tokenizer"] == extra["tokenizer"]
    assert state["tokenizer_spec"] == (token_dir / bpe.TOKENIZER_FILE).read_text()
    assert checkpoint_encoding(state).name == extra["tokenizer"]

    cfg = EvalConfig(eval_tokens=512, batch_size=4, prompts=["ROMEO:"], max_new_tokens=8)
    result = evaluate(cfg, run_dir / "checkpoint.pt", token_dir, tmp_path / "eval")
    assert 0.0 < result["bits_per_byte"] < 20.0 and result["samples"][0]["completion"]

    # The checkpoint alone is enough to export: the token dataset is gone.
    shutil.rmtree(token_dir / "train")
    for fmt in ("hf", "safetensors"):
        out = tmp_path / fmt
        written = export(run_dir / "checkpoint.pt", out, fmt)
        for path in out.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
        hf = AutoTokenizer.from_pretrained(out)
        text = multilingual_texts()[0]
        assert hf(text, add_special_tokens=False)["input_ids"] == (
            checkpoint_encoding(state).encode_ordinary(text)
        )
    assert written["tokenizer"] == extra["tokenizer"] and written["eot_token"] == 511
    assert load_exported(tmp_path / "safetensors").cfg.vocab_size == 512
