"""`llmforge generate` and `llmforge chat` on a small trained checkpoint, as a user runs them."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from model.chat import Chat
from model.sampling import Sampling, TextStream, load_for_sampling, prompt_ids
from tests.conftest import REPO, llmforge
from tests.model.test_export import fake_run

pytestmark = pytest.mark.slow  # CLI processes, each importing torch


def test_generate_streams_what_the_sampler_gives(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    model, enc = load_for_sampling(run_dir / "checkpoint.pt", "cpu")
    greedy = llmforge(
        "generate", str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", "12",
        "--temperature", "0", "--device", "cpu",
    )  # fmt: skip
    assert greedy.returncode == 0, greedy.stderr
    expected = "".join(TextStream(model, enc, prompt_ids(enc, "ROMEO:"), 12, Sampling(0)))
    assert greedy.stdout == expected + "\n" and expected
    assert "tokens/s" in greedy.stderr and "seed" in greedy.stderr

    # A run id, the prompt on stdin (its final newline dropped), a seeded sample.
    fake_run(tmp_path / "storage", "run-a", run_dir)
    seeded = llmforge(
        "generate", "run-a", "--storage", str(tmp_path / "storage"), "--seed", "3",
        "--max-new-tokens", "16", "--top-p", "0.9", "--device", "cpu", input="ROMEO:\n",
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    sampling = Sampling(0.8, top_k=200, top_p=0.9)
    stream = TextStream(model, enc, prompt_ids(enc, "ROMEO:"), 16, sampling, seed=3)
    assert seeded.stdout == "".join(stream) + "\n" and "seed 3" in seeded.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("--temperature", "-1"), "error: temperature must be >= 0"),
        (("--storage", "{tmp}"), "error: run 'no-such-run' not found"),
    ],
)
def test_bad_input_is_one_error_line(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = llmforge("generate", "no-such-run", "--prompt", "x", *args)
    assert done.returncode == 1 and done.stderr.startswith(message), done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_chat_answers_two_lines_then_leaves_at_end_of_input(trained_run):
    run_dir, _, _ = trained_run
    checkpoint = str(run_dir / "checkpoint.pt")
    done = llmforge(
        "chat", checkpoint, "--seed", "5", "--max-new-tokens", "10", "--device", "cpu",
        input="ROMEO:\nWhat light?\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Ctrl-D" in done.stderr
    model, enc = load_for_sampling(checkpoint, "cpu")
    chat = Chat(model, enc, Sampling(0.8, top_k=200), max_new_tokens=10, seed=5)
    replies = ["".join(chat.reply(line)) for line in ("ROMEO:", "What light?")]
    assert done.stdout == f"> {replies[0]}\n> {replies[1]}\n> \n"


def test_chat_leaves_quietly_on_ctrl_c(trained_run):
    run_dir, _, _ = trained_run
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "chat", str(run_dir), "--device", "cpu"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        banner = process.stderr.readline()  # the model is loaded: the loop is waiting
        assert "Ctrl-D" in banner, banner
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and "Traceback" not in err and "KeyboardInterrupt" not in err
