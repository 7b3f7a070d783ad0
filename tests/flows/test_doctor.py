"""`llmforge doctor` prints, in one screen, what training will use here and why."""

import torch
from typer.testing import CliRunner

from flows.cli import app


def test_doctor_prints_the_choices_and_measured_speeds():
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["doctor", "--set", "train.threads=1"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "device",
        "precision",
        "threads",
        "compile",
        "matmul",
    ]
    assert "threads    1: set in the config" in result.output
    assert "fp32" in lines[-1] and "bf16" in lines[-1] and "GFLOP/s" in lines[-1]
