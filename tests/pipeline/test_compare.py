"""`runs compare`: config differences, dataset versions, metrics, and the val-set refusal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.errors import DataError
from pipeline.store.compare import (
    compare_runs,
    config_diffs,
    flatten,
    harness_lines,
    plot_loss_curves,
)
from pipeline.store.versions import Storage
from tests.conftest import llmforge

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def vid(label: str) -> str:
    """A valid version id (16 hex digits) standing for `label`."""
    return hashlib.sha256(label.encode()).hexdigest()[:16]


def fake_run(root: Path, run_id: str, lr: float, val_sha: str | None, loss: float) -> None:
    """A run record naming tokenize/train/evaluate versions, with their result files."""
    versions = {
        "tokenize": vid(f"tok-{val_sha}"),
        "train": vid(f"train-{run_id}"),
        "evaluate": vid(f"ev-{run_id}"),
    }
    train_dir = root / "versions" / "train" / versions["train"]
    write_json(train_dir / "train.json", {"steps": 40, "tokens_per_s": 1234.5})
    rows = [{"step": s, "loss": loss + 2 / s} for s in range(1, 41)] + [
        {"step": 40, "val_loss": loss}
    ]
    (train_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    val_set = {"version_id": versions["tokenize"], "tokens": 2048}
    if val_sha is not None:
        val_set["sha256"] = val_sha
    result = {"val_loss": loss, "perplexity": 2.718**loss, "bits_per_byte": loss / 3,
              "hellaswag": {"n": 10, "acc": 0.3, "acc_norm": 0.25}, "val_set": val_set}  # fmt: skip
    write_json(root / "versions" / "evaluate" / versions["evaluate"] / "eval.json", result)
    config = {"train": {"lr": lr, "preset": "tiny"}, "tokenize": {"val_fraction": 0.05}}
    record = {
        "run_id": run_id,
        "config": config,
        "versions": {stage: {"stage": stage, "version_id": v} for stage, v in versions.items()},
    }
    write_json(root / "runs" / run_id / "run.json", record)


@pytest.fixture
def root(tmp_path) -> Path:
    fake_run(tmp_path, "a", 1e-3, "aaaa", 5.0)
    fake_run(tmp_path, "b", 3e-3, "aaaa", 4.5)
    fake_run(tmp_path, "other-val", 3e-3, "bbbb", 4.0)
    fake_run(tmp_path, "old-eval", 3e-3, None, 4.0)
    return tmp_path


def test_flatten_and_config_diffs():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2], "d": None}
    assert config_diffs({"t": {"lr": 1, "x": 2}}, {"t": {"lr": 3, "x": 2}, "new": 1}) == [
        ("new", None, 1),
        ("t.lr", 1, 3),
    ]


def test_same_val_set_compares_metrics(root, tmp_path):
    result = compare_runs(Storage.at(root), "a", "b")
    assert result.refusal is None
    assert result.config_diffs == [("train.lr", 1e-3, 3e-3)]
    assert result.datasets == [
        ("tokenize", vid("tok-aaaa"), vid("tok-aaaa")),
        ("train", vid("train-a"), vid("train-b")),
        ("evaluate", vid("ev-a"), vid("ev-b")),
    ]
    metrics = {label: (a, b) for label, a, b in result.metrics}
    assert metrics["val loss"] == (5.0, 4.5) and metrics["hellaswag acc"] == (0.3, 0.3)
    assert metrics["tokens/s"] == (1234.5, 1234.5)
    png = plot_loss_curves(result, tmp_path / "plots" / "ab.png")
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000


def test_harness_scores_sit_beside_our_hellaswag_scores(root):
    """A run evaluated with lm_eval_tasks gets rows after our scorer's; the other run shows
    None there (not evaluated with the harness)."""
    path = root / "versions" / "evaluate" / vid("ev-a") / "eval.json"
    evaluation = json.loads(path.read_text())
    tasks = {"hellaswag": {"n": 10, "acc": 0.31, "acc_stderr": 0.02, "acc_norm": 0.28}}
    evaluation["lm_eval"] = {"version": "0.4.13", "tasks": tasks}
    write_json(path, evaluation)
    result = compare_runs(Storage.at(root), "a", "b")
    labels = [label for label, _, _ in result.metrics]
    after = labels.index("hellaswag acc_char") + 1  # our scorer's last row
    assert labels[after : after + 3] == [
        "lm_eval hellaswag acc",
        "lm_eval hellaswag acc_norm",
        "train val bpb",
    ]
    metrics = {label: (a, b) for label, a, b in result.metrics}
    assert metrics["lm_eval hellaswag acc"] == (0.31, None)
    (line,) = harness_lines(evaluation)
    assert line == "lm_eval hellaswag (10): acc 0.310 ± 0.020, acc_norm 0.280"


def test_different_or_unnamed_val_sets_are_refused(root):
    refusal = compare_runs(Storage.at(root), "a", "other-val").refusal
    assert refusal.startswith("different validation sets: run a was evaluated on aaaa")
    assert "run other-val on bbbb" in refusal and "\n" not in refusal
    refusal = compare_runs(Storage.at(root), "old-eval", "a").refusal
    assert refusal == "run old-eval's eval.json does not name its validation set (re-evaluate it)"
    with pytest.raises(DataError, match="run 'nope' not found"):
        compare_runs(Storage.at(root), "a", "nope")


def test_cli_compare(root, tmp_path):
    plot = tmp_path / "cmp.png"
    done = llmforge("runs", "compare", "a", "b", "--storage", str(root), "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    assert (
        "train.lr" in done.stdout and "val loss" in done.stdout and vid("tok-aaaa") in done.stdout
    )
    assert plot.read_bytes().startswith(PNG_MAGIC)
    refused = llmforge(
        "runs", "compare", "a", "other-val", "--storage", str(root), "--plot", str(plot)
    )
    assert refused.returncode == 1 and "val loss" not in refused.stdout
    assert refused.stderr.startswith("error: metrics not compared: different validation sets")
    assert refused.stderr.count("\n") == 1 and "train.lr" in refused.stdout
    allowed = llmforge(
        "runs", "compare", "a", "other-val", "--allow-different-val",
        "--storage", str(root), "--plot", str(plot),
    )  # fmt: skip
    assert allowed.returncode == 0 and "warning: different validation sets" in allowed.stdout
    assert "val loss" in allowed.stdout


def test_cli_compare_draws_no_plot_unless_asked(root, tmp_path):
    here = tmp_path / "cwd"
    here.mkdir()
    done = llmforge("runs", "compare", "a", "b", "--storage", str(root), cwd=here)
    assert done.returncode == 0, done.stderr
    assert "val loss" in done.stdout and "loss curves" not in done.stdout
    assert list(here.iterdir()) == []  # nothing written where the command ran
