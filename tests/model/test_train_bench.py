"""bench/train.py: the three steps run side by side, the numerical check holds, the table and
JSON come out; `bench/gpu_check.sh --dry-run` runs end to end on the CPU (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, load_bench


@pytest.fixture(scope="module")
def bench():
    yield load_bench("train")
    sys.modules.pop("bench_train", None)


def test_textbook_model_loads_our_weights_and_gives_our_loss(bench):
    """The numerical check compares like with like: same weights, loss within fp32 noise."""
    from model.config import PRESETS

    class Args:
        preset, precision = "tiny", "fp32"

    check = bench.numerical_check(PRESETS["tiny"], Args, "cpu", batch=2)
    assert check["ok"] and check["rel_diff"] < 1e-5 and check["precision"] == "fp32"


def test_side_by_side_run_prints_ratios_and_writes_json(bench, tmp_path, capsys):
    argv = ["--preset", "tiny", "--batch", "2", "--steps", "1", "--reps", "2", "--warmup", "1",
            "--variants", "textbook", "ours", "--compile", "off", "--precision", "fp32",
            "--out", str(tmp_path / "r.json")]  # fmt: skip
    results = bench.main(argv)
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["variant"] for r in rows if "rep" in r] == ["textbook", "ours"] * 2  # round-robin
    assert {r["variant"] for r in results} == {"textbook", "ours"}
    ours = next(r for r in results if r["variant"] == "ours")
    assert ours["precision"] == "fp32" and ours["compile"] is False
    assert ours["flops_per_token"] == 41_153_280 and ours["vs_textbook"] > 0
    assert "| 2 | ours | fp32 | off |" in out
    assert json.loads((tmp_path / "r.json").read_text()) == results


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_cpu(tmp_path):
    """The one-shot GPU script's every step (tests, benchmarks, tokenize, train, table) on CPU."""
    env = os.environ | {"OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "gpu_check" / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "| stage train | tiny (d" in table
    assert "| budget (auto) | auto (d" in table and " bpb after " in table
