"""Export round trips: the exported model's logits equal ours (fp32, within 1e-4)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

# transformers reads this at import: it must never reach the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from model.checkpoint import load_model, save_checkpoint  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.export import checkpoint_for, export, load_exported  # noqa: E402
from model.gpt import GPT, padded_vocab_size  # noqa: E402
from pipeline.errors import DataError
from pipeline.store.integrity import file_sha256 as sha  # noqa: E402
from tests.conftest import llmforge  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
# GPT-2's shape (learned positions, tied head, biases) at toy sizes.
GPT2_SHAPED = ModelConfig(
    vocab_size=300,
    context_length=16,
    d_model=32,
    n_heads=2,
    n_layers=2,
    bias=True,
    positional="learned",
    tie_embeddings=True,
)
# The seeds' model (sinusoidal positions, untied head, no biases) at toy sizes.
SEEDS_SHAPED = ModelConfig(vocab_size=300, context_length=16, d_model=32, n_heads=2, n_layers=2)


def random_model(cfg: ModelConfig, seed: int = 0) -> GPT:
    """Every parameter random (biases and LayerNorms too), so a dropped one shows in logits."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if param.dim() == 1 else 0.0))
    return model.eval()


def write_checkpoint(path: Path, model: GPT, state: dict | None = None) -> Path:
    state = state if state is not None else model.state_dict()
    payload = {"model": state, "model_config": model.cfg.to_dict(), "tokenizer": "gpt2", "step": 7}
    return save_checkpoint(path, payload)


def tokens(cfg: ModelConfig) -> torch.Tensor:
    return torch.randint(
        0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(1)
    )


def hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return hf(idx).logits


@torch.no_grad()
def our_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    return model(idx)[0]


def test_gpt2_shaped_round_trips_through_transformers(tmp_path):
    model = random_model(GPT2_SHAPED)
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model)
    config = export(ckpt, tmp_path / "hf", "hf")
    assert config["activation_function"] == "gelu"  # exact GELU, as F.gelu; not gelu_new
    assert config["tie_word_embeddings"] is True
    idx = tokens(GPT2_SHAPED)
    diff = (hf_logits(tmp_path / "hf", idx) - our_logits(model, idx)).abs().max().item()
    assert diff < TOL
    provenance = json.loads((tmp_path / "hf" / "llmforge.json").read_text())
    assert provenance["source"]["step"] == 7 and provenance["hf_conversions"] == []


def test_padded_vocabulary_is_cut_back(tmp_path):
    """A head padded to a multiple of 64 (nanoGPT's 50,304) exports as vocab_size rows."""
    model = random_model(GPT2_SHAPED)
    state = model.state_dict()
    padded = torch.cat([state["lm_head.weight"], torch.full((320 - 300, 32), 9.0)])
    state["lm_head.weight"] = state["tok_emb.weight"] = padded  # tied: one tensor
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model, state)
    export(ckpt, tmp_path / "hf", "hf")
    export(ckpt, tmp_path / "ours", "safetensors")
    idx = tokens(GPT2_SHAPED)
    hf = hf_logits(tmp_path / "hf", idx)
    assert hf.shape[-1] == 300
    assert (hf - our_logits(model, idx)).abs().max().item() < TOL
    loaded = load_exported(tmp_path / "ours")
    # The loaded model pads its tables again (model.gpt.padded_vocab_size), with zero rows.
    assert loaded.lm_head.weight.shape == (padded_vocab_size(300), 32)
    assert not loaded.lm_head.weight[300:].any()
    assert torch.equal(our_logits(loaded, idx), our_logits(model, idx))


def test_seeds_model_round_trips_through_our_loader_and_transformers(tmp_path):
    model = random_model(SEEDS_SHAPED)
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model)
    idx = tokens(SEEDS_SHAPED)
    written = export(ckpt, tmp_path / "ours", "safetensors")
    assert written["model_config"]["positional"] == "sinusoidal"
    assert written["tokenizer"] == "gpt2" and written["vocab_size"] == 300
    loaded = load_exported(tmp_path / "ours")
    assert (our_logits(loaded, idx) - our_logits(model, idx)).abs().max().item() < TOL
    # GPT-2's layout holds it too: positions as wpe, sqrt(d) folded into wte, zero biases.
    config = export(ckpt, tmp_path / "hf", "hf")
    assert config["tie_word_embeddings"] is False
    diff = (hf_logits(tmp_path / "hf", idx) - our_logits(model, idx)).abs().max().item()
    assert diff < TOL


def test_tied_safetensors_stores_the_head_once(tmp_path):
    model = random_model(GPT2_SHAPED)
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model)
    export(ckpt, tmp_path / "ours", "safetensors")
    from safetensors.torch import load_file

    names = set(load_file(tmp_path / "ours" / "model.safetensors"))
    assert "lm_head.weight" in names and "tok_emb.weight" not in names
    loaded = load_exported(tmp_path / "ours")
    assert loaded.tok_emb.weight is loaded.lm_head.weight
    idx = tokens(GPT2_SHAPED)
    assert torch.equal(our_logits(loaded, idx), our_logits(model, idx))


def test_bad_inputs_are_one_line_errors(tmp_path):
    model = random_model(SEEDS_SHAPED)
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an earlier export"):
        export(ckpt, tmp_path / "busy", "safetensors")
    with pytest.raises(DataError, match="unknown format 'onnx'"):
        export(ckpt, tmp_path / "x", "onnx")
    export(ckpt, tmp_path / "hf", "hf")
    with pytest.raises(DataError, match="Hugging Face GPT-2 export"):
        load_exported(tmp_path / "hf")
    with pytest.raises(DataError, match="config.json: not found"):
        load_exported(tmp_path / "busy")
    export(ckpt, tmp_path / "hf", "safetensors")  # a rerun replaces an earlier export
    assert load_exported(tmp_path / "hf").cfg == SEEDS_SHAPED


def fake_run(root: Path, run_id: str, train_folder: Path) -> None:
    """A storage root holding one run whose train version is `train_folder` (copied)."""
    version = root / "versions" / "train" / "0123456789abcdef"
    shutil.copytree(train_folder, version)
    # A committed version lists its files: reuse checks them (pipeline/store/integrity.py).
    files = [
        {"path": p.relative_to(version).as_posix(), "bytes": p.stat().st_size, "sha256": sha(p)}
        for p in sorted(version.rglob("*"))
        if p.is_file()
    ]
    manifest = {"version_id": "0123456789abcdef", "stage": "train", "files": files}
    (version / "manifest.json").write_text(json.dumps(manifest))
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    record = {"run_id": run_id, "versions": {"train": {"version_id": "0123456789abcdef"}}}
    (run_dir / "run.json").write_text(json.dumps(record))


@pytest.mark.slow  # three CLI processes, each importing torch
def test_cli_exports_a_trained_run(trained_run, tmp_path):
    run_dir, summary, _ = trained_run
    fake_run(tmp_path / "storage", "run-a", run_dir)
    assert checkpoint_for("run-a", tmp_path / "storage").parent.name == "0123456789abcdef"
    done = llmforge(
        "export", "run-a", "--format", "safetensors", "--output", str(tmp_path / "out"),
        "--storage", str(tmp_path / "storage"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model, _ = load_model(run_dir / "checkpoint.pt")
    loaded = load_exported(tmp_path / "out")
    idx = torch.randint(0, 50257, (1, model.cfg.context_length))
    assert torch.equal(our_logits(loaded, idx), our_logits(model, idx))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["source"]["step"] == summary["steps"]
    assert config["source"]["train_summary"].endswith("0123456789abcdef/train.json")

    # A folder works too; an unknown run is one line naming it.
    done = llmforge("export", str(run_dir), "--format", "hf", "--output", str(tmp_path / "hf"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "gpt2"
    bad = llmforge("export", "nope", "--output", str(tmp_path / "o2"), "--storage", str(tmp_path))
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert "run 'nope' not found" in bad.stderr


def test_checkpoint_of_a_run_on_a_url_root_is_fetched_into_an_owned_temp_folder(
    tmp_path, monkeypatch
):
    """`llmforge export RUN_ID` on an s3:// root: the checkpoint comes down into a temp folder
    this process owns (cleaned by the next run's cleanup), never a cache that grows."""
    import uuid

    from model.export import checkpoint_for
    from pipeline.stage import StageResult
    from pipeline.store.runs import RunRecord
    from pipeline.store.versions import Storage, VersionPlan, build_version, owner_alive

    monkeypatch.setenv("LLMFORGE_CACHE", str(tmp_path / "cache"))
    root = f"memory://export-{uuid.uuid4().hex}"
    storage = Storage.at(root)

    def compute(out):
        out.write_bytes("checkpoint.pt", b"weights")
        return StageResult(0, 0)

    version = build_version(storage, VersionPlan("train", {}, [], "code"), compute)
    record = RunRecord.create(storage, {}, "r1")
    record.add_version(version.summary())
    record.save()
    path = checkpoint_for("r1", root)
    assert path.read_bytes() == b"weights"
    assert path.parent.parent == storage.tmp_dir and owner_alive(path.parent.name) is True
    storage.root.remove()


def modern_shaped(**changes) -> ModelConfig:
    from model.config import modern_config

    return dataclasses.replace(modern_config(2, vocab_size=300, context_length=16), **changes)


@pytest.mark.parametrize(
    "changes, architecture",
    [
        ({}, "ApertusForCausalLM"),  # the modern preset: relu2 + QK-norm
        ({"mlp": "swiglu"}, "Qwen3ForCausalLM"),
        ({"mlp": "swiglu", "qk_norm": False}, "LlamaForCausalLM"),
        ({"qk_norm": False, "mlp": "gelu", "embed_norm": False}, "ArceeForCausalLM"),
        ({"tie_embeddings": True}, "ApertusForCausalLM"),
    ],
)
def test_rope_models_round_trip_through_transformers_auto_class(tmp_path, changes, architecture):
    from transformers import AutoModelForCausalLM

    cfg = modern_shaped(**changes)
    model = random_model(cfg)
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", model)
    config = export(ckpt, tmp_path / "hf", "hf")
    assert config["architectures"] == [architecture]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert type(hf).__name__ == architecture  # a transformers class: no trust_remote_code
    idx = tokens(cfg)
    with torch.no_grad():
        out = hf(idx, labels=idx)
        _, ours = model(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())
    assert (out.logits - our_logits(model, idx)).abs().max().item() < TOL
    assert out.loss.item() == pytest.approx(ours.item(), rel=0.01)


def test_models_no_transformers_class_fits_are_refused_in_one_line(tmp_path):
    for cfg in (modern_shaped(norm="layernorm"), dataclasses.replace(SEEDS_SHAPED, mlp="relu2")):
        ckpt = write_checkpoint(tmp_path / "checkpoint.pt", random_model(cfg))
        with pytest.raises(DataError, match="no transformers class fits") as err:
            export(ckpt, tmp_path / "hf", "hf")
        assert "\n" not in str(err.value)
        assert not (tmp_path / "hf").exists()
