"""Evaluation: bits per byte, HellaSwag scoring and parsing, evaluate() end to end."""

import json
import math

import numpy as np
import pytest
import tiktoken
import torch

from model.config import EvalConfig
from model.evaluate import bits_per_byte, evaluate
from model.hellaswag import evaluate_hellaswag, iter_items
from pipeline.errors import DataError
from tests.conftest import shared_data
from tests.model.conftest import shakespeare_docs, small_cfg

ENC = tiktoken.get_encoding("gpt2")

ITEMS = [
    {"ctx": "The cat sat on the", "endings": ["mat.", "moon.", "sofa.", "roof."], "label": 0},
    {
        "ctx": "She went to the",
        "endings": ["shop now", "park today", "sea again", "mat."],
        "label": 3,
    },
    # Right by mean loss only: 5 cheap tokens cost more in sum than 1 expensive one.
    {"ctx": "Look at the", "endings": ["dog", "mat mat mat mat.", "tree", "sky"], "label": 1},
]


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


class FavoringModel:
    """Logits that give the tokens of " mat" and "." a +5 bonus, at every position."""

    def __init__(self):
        self.favored = ENC.encode_ordinary(" mat") + ENC.encode_ordinary(".")

    def __call__(self, idx):
        logits = torch.zeros(*idx.shape, ENC.n_vocab)
        logits[..., self.favored] = 5.0
        return logits, None


def test_hellaswag_scoring_with_known_answers(tmp_path):
    path = write_jsonl(tmp_path / "hs.jsonl", ITEMS)
    result = evaluate_hellaswag(FavoringModel(), path, ENC.encode_ordinary, context_length=64)
    assert result["n"] == 3
    assert result["acc"] == pytest.approx(2 / 3)  # item 3 lost on summed loss
    assert result["acc_norm"] == pytest.approx(1.0)
    limited = evaluate_hellaswag(FavoringModel(), path, ENC.encode_ordinary, 64, limit=1)
    assert limited["n"] == 1 and limited["acc"] == 1.0


def test_hellaswag_truncates_long_contexts_from_the_left(tmp_path):
    items = [dict(ITEMS[0], ctx="word " * 200)]
    path = write_jsonl(tmp_path / "long.jsonl", items)
    result = evaluate_hellaswag(FavoringModel(), path, ENC.encode_ordinary, context_length=16)
    assert result["acc"] == 1.0


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", r"hs.jsonl:2: not valid JSON"),
        (json.dumps({"ctx": "a", "endings": ["b", "c", "d"], "label": 0}), r":2: field 'endings'"),
        (json.dumps({"ctx": "a", "endings": list("bcde"), "label": 4}), r":2: field 'label'"),
        (json.dumps({"endings": list("bcde"), "label": 1}), r":2: field 'ctx'"),
    ],
)
def test_hellaswag_malformed_line_names_its_number(tmp_path, bad_line, message):
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(ITEMS[0]) + "\n" + bad_line + "\n")
    with pytest.raises(DataError, match=message):
        list(iter_items(path))


def test_real_hellaswag_file_parses_and_scores():
    path = shared_data("hellaswag", "hellaswag_val.jsonl")
    items = list(iter_items(path, limit=50))
    assert len(items) == 50 and all(len(item["endings"]) == 4 for item in items)
    result = evaluate_hellaswag(FavoringModel(), path, ENC.encode_ordinary, 64, limit=8)
    assert result["n"] == 8 and 0.0 <= result["acc_norm"] <= 1.0


def test_bits_per_byte_formula():
    nll = np.array([math.log(2)] * 4 + [50.0])  # 1 bit per token, and a costly EOT
    targets = np.array([10, 11, 12, 13, 50256])
    one_byte_each = lambda ids: b"x" * len(ids)  # noqa: E731
    assert bits_per_byte(nll, targets, one_byte_each, eot_token=50256) == pytest.approx(1.0)
    two_bytes_each = lambda ids: b"xy" * len(ids)  # noqa: E731
    assert bits_per_byte(nll, targets, two_bytes_each, eot_token=50256) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def eval_result(trained_run, shakespeare_tokens, tmp_path_factory):
    out, _, _ = trained_run
    hs = write_jsonl(tmp_path_factory.mktemp("hs") / "hs.jsonl", ITEMS)
    cfg = EvalConfig(
        eval_tokens=2048,
        batch_size=4,
        prompts=["ROMEO:", "The king"],
        max_new_tokens=12,
        hellaswag_path=hs,
    )
    eval_dir = tmp_path_factory.mktemp("eval")
    return cfg, evaluate(cfg, out / "checkpoint.pt", shakespeare_tokens, eval_dir), eval_dir


def test_evaluate_end_to_end(eval_result):
    cfg, result, eval_dir = eval_result
    saved = json.loads((eval_dir / "eval.json").read_text())
    assert saved["val_loss"] == result["val_loss"]
    assert math.isfinite(result["val_loss"]) and result["val_loss"] < 9.0
    assert result["perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert 0.5 < result["bits_per_byte"] < 5.0
    ident = result["val_set"]
    assert ident["version_id"] == "tokens-test-v1" and ident["tokens"] == 2048
    assert ident["targets"] == (2048 - 1) // small_cfg().model_config_for().context_length * 32
    assert [s["prompt"] for s in result["samples"]] == cfg.prompts
    assert all(s["completion"] for s in result["samples"])
    assert "ROMEO:" in (eval_dir / "samples.txt").read_text()
    assert result["hellaswag"]["n"] == 3 and 0.0 <= result["hellaswag"]["acc"] <= 1.0
    assert result["val_set_sha256"] == ident["sha256"] and len(ident["sha256"]) == 16
    contamination = result["contamination"]
    assert contamination["ngram"] == 13 and contamination["train_documents"] > 1000
    assert contamination["hellaswag"]["too_short"] == 3  # the toy items have < 13 words
    val = contamination["val"]
    assert val["items"] == len(shakespeare_docs()[1]) and 0.0 <= val["fraction"] < 0.5


def test_evaluate_is_reproducible(eval_result, trained_run, shakespeare_tokens, tmp_path):
    cfg, first, _ = eval_result
    cfg = cfg.model_copy(update={"hellaswag_path": None, "contamination": False})
    again = evaluate(cfg, trained_run[0] / "checkpoint.pt", shakespeare_tokens, tmp_path)
    assert again["samples"] == first["samples"]
    assert again["val_loss"] == first["val_loss"] and "hellaswag" not in again
    assert "contamination" not in again and again["val_set_sha256"] == first["val_set_sha256"]


def test_evaluate_missing_checkpoint_is_one_line(shakespeare_tokens, tmp_path):
    with pytest.raises(DataError, match="checkpoint not found"):
        evaluate(EvalConfig(), tmp_path / "nope.pt", shakespeare_tokens, tmp_path)


def test_contamination_finds_planted_val_and_hellaswag_items(tmp_path):
    from model.evaluate import contamination_report
    from tests.model.conftest import write_token_dataset

    planted = "the quick brown fox jumps over the lazy dog while seven wise owls watch the oak"
    clean = "an entirely different sentence about ships sailing far beyond the grey northern sea"
    train = [ENC.encode_ordinary(f"Some page. {planted.upper()}! More."), ENC.encode_ordinary("x")]
    val = [ENC.encode_ordinary(f"Quoted: {planted}"), ENC.encode_ordinary(clean)]
    tokens = write_token_dataset(tmp_path / "tok", [d + [50256] for d in train], val)
    items = [
        {
            "ctx": planted.split(" while")[0],
            "endings": [" while seven wise owls watch the oak"] * 4,
        },
        {"ctx": clean, "endings": ["a", "b", "c", "d"], "label": 0},
    ]
    hs = write_jsonl(tmp_path / "hs.jsonl", items)
    report = contamination_report(tokens, ENC.decode, 50256, hs)
    assert report["val"] == {"items": 2, "too_short": 0, "contaminated": 1, "fraction": 0.5}
    assert report["hellaswag"]["contaminated"] == 1 and report["hellaswag"]["items"] == 2
    assert report["train_documents"] == 2
