"""`llmforge stage train|evaluate --output DIR` refuse an earlier result as the data stages do
(--resume continues it, --force replaces it), and show progress lines while they train."""

import pytest

from tests.conftest import llmforge

SETS = ["train.preset=tiny", "train.d_model=32", "train.n_layers=1", "train.n_heads=2",
        "train.context_length=32", "train.batch_size=2", "train.max_steps=4",
        "train.eval_tokens=256", "train.precision=fp32", "train.log_interval=2"]  # fmt: skip


def stage_train(tokens, out, *extra, env=None):
    args = ["stage", "train", "--input", str(tokens), "--output", str(out), *extra]
    return llmforge(*args, *[x for s in SETS for x in ("--set", s)], env=env)


@pytest.mark.slow  # three CLI processes that train
def test_stage_train_refuses_an_existing_output_unless_resume_or_force(
    shakespeare_tokens, tmp_path
):
    out = tmp_path / "model"
    first = stage_train(shakespeare_tokens, out, env={"LLMFORGE_PROGRESS": "1"})
    assert first.returncode == 0, first.stderr
    assert "train: step 2/4 | loss " in first.stderr and " tok/s | ETA " in first.stderr
    checkpoint = (out / "checkpoint.pt").read_bytes()

    again = stage_train(shakespeare_tokens, out)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr == (
        f"error: {out}: output folder exists and is not empty "
        "(use --resume to continue its training or --force to replace it)\n"
    )
    assert (out / "checkpoint.pt").read_bytes() == checkpoint  # untouched

    piped = stage_train(shakespeare_tokens, out, "--force")  # not a terminal: no step lines
    assert piped.returncode == 0, piped.stderr
    assert "step 2/4" not in piped.stderr and "train: val bpb " in piped.stdout


def test_stage_evaluate_refuses_an_existing_output(trained_run, shakespeare_tokens, tmp_path):
    run_dir, _, _ = trained_run
    out = tmp_path / "eval"
    out.mkdir()
    (out / "eval.json").write_text("{}")
    args = ["stage", "evaluate", "--input", str(run_dir), "--tokens", str(shakespeare_tokens)]
    refused = llmforge(*args, "--output", str(out))
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        f"error: {out}: output folder exists and is not empty (use --force to replace it)\n"
    )
    assert (out / "eval.json").read_text() == "{}"
