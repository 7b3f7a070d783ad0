"""Training: loss falls, exact resume, checkpoints, NaN handling, data errors up front."""

import json
import math
import shutil

import pytest
import torch

from model.checkpoint import check_compatible, load_checkpoint
from model.gpt import GPT
from model.train import TrainingError, train
from pipeline.errors import DataError
from tests.model.conftest import small_cfg, write_token_dataset


def test_loss_decreases_and_outputs_are_written(trained_run):
    out, summary, logged = trained_run
    assert summary["steps"] == 40 and summary["tokens_seen"] == 40 * 4 * 32
    assert summary["first_loss"] == pytest.approx(math.log(50257), abs=0.3)  # untrained
    assert summary["last_loss"] < summary["first_loss"] - 2.0
    assert summary["final_val_loss"] < summary["first_loss"] - 2.0
    assert json.loads((out / "train.json").read_text())["steps"] == 40
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    assert {"lr", "grad_norm", "tokens_per_s", "mfu", "elapsed"} <= set(train_rows[0])
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 20, 40]
    assert [r["step"] for r in logged if "loss" in r] == [10, 20, 30, 40]  # log_interval


def test_checkpoint_is_complete_and_loads_weights_only(trained_run):
    out, summary, _ = trained_run
    state = load_checkpoint(out / "checkpoint.pt")  # weights_only=True inside
    assert state["step"] == 40 and state["tokens_seen"] == summary["tokens_seen"]
    assert state["tokenizer"] == "gpt2" and state["token_dataset"] == "tokens-test-v1"
    assert {"python", "numpy", "torch", "cuda"} <= set(state["rng"])
    assert set(state["data"]) == {"epoch", "group", "window", "group_tokens"}
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    assert state["train_config"]["lr"] == 3e-3 and state["model_config"]["d_model"] == 32


def test_checkpoint_mismatch_names_the_field(trained_run, shakespeare_tokens, tmp_path):
    out, _, _ = trained_run
    shutil.copy(out / "checkpoint.pt", tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="checkpoint d_model=32 but config d_model=64"):
        train(small_cfg(d_model=64), shakespeare_tokens, tmp_path, resume=True)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    cfg = small_cfg().model_config_for()
    with pytest.raises(DataError, match="checkpoint tokenizer='gpt2' but data uses 'o200k_base'"):
        check_compatible(state, cfg, tokenizer="o200k_base")


@pytest.mark.parametrize(
    "recipe", [{}, {"preset": "modern", "optimizer": "muon"}], ids=["adamw", "modern-muon"]
)
def test_exact_resume_matches_a_straight_run(shakespeare_tokens, tmp_path, recipe):
    """6 steps straight == 3 steps, a crash at step 4, resume to 6: bitwise equal losses."""
    cfg = small_cfg(max_steps=6, dropout=0.1, grad_accum_steps=2, checkpoint_interval=3, **recipe)
    # auto: bf16 autocast where the CPU has native bf16 (model/hardware.py), else fp32
    cfg = cfg.model_copy(update={"eval_interval": 100, "precision": "auto"})
    straight = train(cfg, shakespeare_tokens, tmp_path / "a")

    def crash(row):
        if row.get("step") == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            cfg.model_copy(update={"log_interval": 1}),
            shakespeare_tokens,
            tmp_path / "b",
            on_log=crash,
        )
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    resumed = train(cfg, shakespeare_tokens, tmp_path / "b", resume=True)
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 6

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if '"loss"' in line]

    assert losses("b") == losses("a") and len(losses("a")) == 6
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["final_val_loss"] == resumed["final_val_loss"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shakespeare_tokens, tmp_path, monkeypatch):
    original = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None):
        logits, loss = original(self, idx, targets)
        if targets is not None:
            calls["n"] += 1
            if calls["n"] >= 5:  # the 5th training step goes bad
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    cfg = small_cfg(max_steps=10, checkpoint_interval=2, eval_interval=100)
    with pytest.raises(TrainingError, match=r"step 5: loss is nan; .*checkpoint.pt \(step 4\)"):
        train(cfg, shakespeare_tokens, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_too_few_tokens_fails_before_training(tmp_path):
    tokens = write_token_dataset(tmp_path / "tokens", [[1, 2, 3]] * 10, [[1, 2, 3]] * 20)
    with pytest.raises(DataError, match="30 tokens, fewer than one batch"):
        train(small_cfg(), tokens, tmp_path / "run")
    assert not (tmp_path / "run").exists()
