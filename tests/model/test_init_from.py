"""train.init_from: GPT-2 folders (built here with transformers, random weights, no download)
and earlier checkpoints become the starting model, their hash enters the train version id."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # transformers must never reach the network in tests
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from model.base import read_base  # noqa: E402
from model.checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.data import validation_tokens  # noqa: E402
from model.evaluate import val_loss  # noqa: E402
from model.export import export  # noqa: E402
from model.gpt import GPT  # noqa: E402
from model.precision import setup_precision  # noqa: E402
from model.stages import train_inputs  # noqa: E402
from model.train import train  # noqa: E402
from pipeline import stages  # noqa: E402
from pipeline.config import config_from_dict  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from tests.conftest import llmforge  # noqa: E402
from tests.model.conftest import small_cfg, write_token_dataset  # noqa: E402

# fp32 logits. Measured here: 0 for gelu, 3e-6 for gelu_new (HF computes it as a Python
# formula, we with torch's fused tanh GELU); the other GELU is off by ~8e-4.
TOL = 1e-5
NO_WIDTH = dict(d_model=None, n_layers=None, n_heads=None)  # small_cfg's, not the base's


def gpt2_folder(
    folder: Path, activation: str = "gelu_new", tied: bool = True, seed: int = 0, vocab=50257
) -> Path:
    """save_pretrained of a small random GPT2LMHeadModel: every weight (biases and LayerNorms
    too) random, so a tensor read wrongly shows in the logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        activation_function=activation,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.dim() == 1 else 0.0))
    model.save_pretrained(folder)
    return folder


def hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(idx).logits


def imported(folder: Path, **cfg) -> GPT:
    base = read_base(str(folder))
    arch = base.model_config(TrainConfig(init_from=str(folder), **cfg))
    model = GPT(arch)
    model.load_state_dict(base.state_dict(arch))
    return model.eval()


@pytest.mark.parametrize(
    ("activation", "tied"), [("gelu_new", True), ("gelu", True), ("gelu_new", False)]
)
def test_gpt2_folder_imports_with_identical_logits(tmp_path, activation, tied):
    folder = gpt2_folder(tmp_path / "base", activation, tied)
    model = imported(folder)
    assert model.cfg.mlp == {"gelu_new": "gelu_tanh", "gelu": "gelu"}[activation]
    assert model.cfg.tie_embeddings is tied and model.cfg.context_length == 64
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        ours = model(idx)[0]
    assert (ours - hf_logits(folder, idx)).abs().max().item() < TOL
    # The other GELU is measurably different: the option is what makes them equal.
    other = dict(gelu="gelu_tanh", gelu_tanh="gelu")[model.cfg.mlp]
    wrong = GPT(model.cfg.__class__(**(model.cfg.to_dict() | {"mlp": other})))
    wrong.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (wrong.eval()(idx)[0] - ours).abs().max().item() > 10 * TOL


def test_an_imported_gpt2_exports_back_with_its_gelu(tmp_path):
    folder = gpt2_folder(tmp_path / "base", "gelu_new")
    model = imported(folder)
    state = {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "step": 0}
    save_checkpoint(tmp_path / "checkpoint.pt", state | {"tokenizer": "gpt2"})
    export(tmp_path / "checkpoint.pt", tmp_path / "again", "hf")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["activation_function"] == "gelu_new"
    idx = torch.randint(0, 50257, (1, 64))
    again = hf_logits(tmp_path / "again", idx)
    assert (again - hf_logits(folder, idx)).abs().max().item() < TOL


def test_shorter_context_keeps_the_first_positions_and_longer_is_refused(tmp_path):
    folder = gpt2_folder(tmp_path / "base")
    model = imported(folder, context_length=16)
    idx = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        assert (model(idx)[0] - hf_logits(folder, idx)).abs().max().item() < TOL
    with pytest.raises(DataError, match="context_length=128 but the base model has 64 positions"):
        imported(folder, context_length=128)
    with pytest.raises(ValueError, match="d_model: init_from takes the base model's"):
        TrainConfig(init_from=str(folder), d_model=64)


def test_continued_training_starts_at_the_base_and_lowers_val_loss(shakespeare_tokens, tmp_path):
    folder = gpt2_folder(tmp_path / "base", seed=1)
    out = tmp_path / "run"
    cfg = small_cfg(init_from=str(folder), preset="auto", max_steps=12, lr=3e-3, **NO_WIDTH)
    summary = train(cfg, shakespeare_tokens, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if "val_loss" in r)
    # Step 0 is the base model's own loss on the new domain: its weights were loaded.
    val = validation_tokens(shakespeare_tokens, cfg.eval_tokens, min_tokens=33)
    base = imported(folder, context_length=32)
    loss = val_loss(base, val, 32, cfg.batch_size, setup_precision("cpu", "fp32"))
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(loss, abs=1e-4)
    assert summary["final_val_loss"] < first["val_loss"] - 0.5
    # preset auto never resizes an imported model; auto picks AdamW for a GPT-2-style base.
    assert "depth" not in summary and summary["model_config"]["d_model"] == 32
    assert summary["model_config"]["mlp"] == "gelu_tanh"
    assert cfg.optimizer_for(base.cfg) == "adamw"
    record = load_checkpoint(out / "checkpoint.pt")["init_from"]
    assert record == summary["init_from"] and record["kind"] == "hf-gpt2"
    assert record["sha256"] == read_base(str(folder)).sha256
    assert record["files"] == ["config.json", "model.safetensors"]

    # A resume continues its own checkpoint (not the base); another base is refused.
    more = train(cfg.model_copy(update={"max_steps": 14}), shakespeare_tokens, out, resume=True)
    assert more["resumed_from"] == 12 and more["steps"] == 14
    other = cfg.model_copy(update={"init_from": str(tmp_path / "elsewhere"), "max_steps": 40})
    with pytest.raises(DataError, match="started from .* not train.init_from="):
        train(other, shakespeare_tokens, out, resume=True)


def test_an_earlier_checkpoint_continues_where_it_ended(trained_run, shakespeare_tokens, tmp_path):
    run_dir, summary, _ = trained_run
    cfg = small_cfg(init_from=str(run_dir), max_steps=3, context_length=None, **NO_WIDTH)
    out = tmp_path / "continued"
    continued = train(cfg, shakespeare_tokens, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if "val_loss" in r)
    assert first["val_loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)
    assert continued["model_config"] == summary["model_config"]
    assert continued["init_from"]["kind"] == "checkpoint"
    assert continued["init_from"]["path"] == str((run_dir / "checkpoint.pt").resolve())


def test_a_mismatched_tokenizer_is_one_line_naming_both(shakespeare_tokens, tmp_path):
    not_gpt2 = gpt2_folder(tmp_path / "small-vocab", vocab=300)
    cfg = small_cfg(init_from=str(not_gpt2), **NO_WIDTH)
    with pytest.raises(DataError) as caught:
        train(cfg, shakespeare_tokens, tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message and str(not_gpt2 / "config.json") in message
    assert "base model tokenizer unknown" in message and "(vocab 300)" in message
    assert "uses gpt2 (vocab 50257)" in message

    # A GPT-2 folder against a dataset of another tokenizer.
    gpt2 = gpt2_folder(tmp_path / "gpt2")
    other = write_token_dataset(tmp_path / "bpe-tokens", [[1, 2, 3] * 40], [[1, 2, 3] * 20])
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["counts"]["extra"] |= {"tokenizer": "r50k_base"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="base model tokenizer gpt2 .* uses r50k_base"):
        train(cfg.model_copy(update={"init_from": str(gpt2)}), other, tmp_path / "out2")


def plan_id(tmp_path: Path, init_from: str | None) -> str:
    sets = {"run": {"storage_root": str(tmp_path / "storage")}}
    if init_from is not None:
        sets["train"] = {"init_from": init_from}
    config = config_from_dict(sets)
    tokens = SimpleNamespace(stage="tokenize", version_id="0123456789abcdef")
    return stages.plan("train", config.train, train_inputs(config, tokens)).version_id


def test_the_base_models_content_enters_the_train_version_id(tmp_path):
    a = gpt2_folder(tmp_path / "a", seed=0)
    b = gpt2_folder(tmp_path / "b", seed=1)
    assert plan_id(tmp_path, str(a)) == plan_id(tmp_path, str(a))
    # The same files elsewhere are the same base: content, not path, enters the id.
    copy = shutil.copytree(a, tmp_path / "copy")
    assert plan_id(tmp_path, str(copy)) == plan_id(tmp_path, str(a))
    assert plan_id(tmp_path, str(a)) != plan_id(tmp_path, str(b))
    assert plan_id(tmp_path, None) not in (plan_id(tmp_path, str(a)), plan_id(tmp_path, str(b)))
    # New weights at the same path: a new version.
    before = plan_id(tmp_path, str(a))
    shutil.rmtree(a)
    gpt2_folder(a, seed=2)
    assert plan_id(tmp_path, str(a)) != before
    # The lineage sees the base as an input by content (the manifest's inputs).
    config = config_from_dict({"train": {"init_from": str(copy)}})
    tokens = SimpleNamespace(stage="tokenize", version_id="0123456789abcdef")
    base = {"source": "init_from", "kind": "hf-gpt2", "sha256": read_base(str(copy)).sha256}
    assert train_inputs(config, tokens) == [
        {"stage": "tokenize", "version_id": tokens.version_id},
        base,
    ]
    # Without init_from the config dumps as before (existing train ids unchanged).
    assert "init_from" not in TrainConfig().model_dump()
    assert TrainConfig(init_from=str(a)).model_dump()["init_from"] == str(a)


@pytest.mark.slow  # one CLI process importing torch and transformers-free training
def test_cli_stage_train_from_a_gpt2_folder(shakespeare_tokens, tmp_path):
    folder = gpt2_folder(tmp_path / "base")
    out = tmp_path / "out"
    sets = [
        f"train.init_from={folder}", "train.max_steps=3", "train.context_length=32",
        "train.batch_size=2", "train.eval_tokens=256", "train.precision=fp32",
    ]  # fmt: skip
    args = ["stage", "train", "--input", str(shakespeare_tokens), "--output", str(out)]
    done = llmforge(*args, *[x for s in sets for x in ("--set", s)])
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "train.json").read_text())
    assert summary["init_from"]["sha256"] == read_base(str(folder)).sha256
    assert f"from hf-gpt2 {folder} (sha256 {summary['init_from']['sha256'][:12]})" in done.stdout
    model, _ = load_model(out / "checkpoint.pt")
    assert model.cfg.mlp == "gelu_tanh" and model.cfg.context_length == 32
    bad = llmforge(*args[:-1], str(tmp_path / "o2"), "--set", f"train.init_from={tmp_path}/nope")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "train.init_from=" in bad.stderr
