"""bench/ablation.py: the rows build up to preset "modern", and a tiny run reports every field."""

import json
import math

from model.config import TrainConfig
from tests.conftest import load_bench


def test_rows_add_one_piece_each_and_end_at_the_modern_preset():
    bench = load_bench("ablation")
    rows = bench.plan_rows()
    assert [r["row"] for r in rows][0] == "baseline" and rows[-1]["row"] == "muon"
    modern = TrainConfig(preset="modern", depth=3, optimizer="muon")
    last = bench.AblationConfig(preset="modern", depth=3, arch=rows[-1]["arch"])
    assert last.model_config_for() == modern.model_config_for()
    assert rows[-1]["optimizer"] == "muon" and rows[-2]["optimizer"] == "adamw"
    assert rows[0]["arch"]["positional"] == "sinusoidal" and rows[0]["arch"]["bias"] is True
    swiglu = next(r for r in rows if r["row"] == "swiglu")
    assert swiglu["arch"]["mlp"] == "swiglu"
    assert all(r["arch"]["mlp"] == "relu2" for r in rows[rows.index(swiglu) + 1 :])


def test_smoke_run_reports_loss_bpb_and_speed(shakespeare_tokens, tmp_path, capsys):
    bench = load_bench("ablation")
    argv = ["--tokens", str(shakespeare_tokens), "--seconds", "1", "--depth", "1"]
    argv += ["--context", "32", "--batch-size", "4", "--eval-tokens", "1024"]
    argv += ["--precision", "fp32", "--only", "baseline,muon", "--work", str(tmp_path)]
    results = bench.main(argv)
    assert [r["row"] for r in results] == ["baseline", "muon"]
    for r in results:
        assert r["steps"] >= 1 and r["tokens_per_s"] > 0
        assert 0 < r["val_loss"] < math.log(50257) + 1 and 0 < r["val_bpb"] < 10
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["row"] for line in lines] == ["baseline", "muon"]
    assert "| + muon (= preset modern) |" in out and "Δ bpb" in out
