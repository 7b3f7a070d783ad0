"""bench/generate.py at toy sizes: both modes run, agree on their tokens, and the table shows."""

import json

from tests.conftest import load_bench


def test_smoke_run_reports_both_speeds_and_the_ratio(capsys):
    bench = load_bench("generate")
    results = bench.main(["--presets", "tiny", "--new-tokens", "8", "--prompt-tokens", "4"])
    (r,) = results
    assert r["preset"] == "tiny" and r["same"] and r["same_tokens_checked"] == 8
    assert r["cache_tokens_per_s"] > 0 and r["no_cache_tokens_per_s"] > 0
    assert r["before_tokens_per_s"] > 0
    assert r["speedup_vs_no_cache"] == round(r["no_cache_s"] / r["cache_s"], 2)
    out = capsys.readouterr().out
    assert json.loads(next(line for line in out.splitlines() if line.startswith("{")))["same"]
    assert "| tiny | " in out and "speedup vs GPT.generate before" in out
    assert "yes (first 8)" in out
