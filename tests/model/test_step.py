"""The training step's choices: when compile="auto" compiles, and the step's loss."""

import pytest
import torch

import model.train as train_module
from model.config import TrainConfig
from model.gpt import GPT
from model.precision import setup_precision
from model.train import (
    COMPILE_MIN_FLOPS,
    COMPILE_MIN_SECONDS,
    forward_backward,
    resolve_compile,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_compile_auto_needs_enough_work_to_pay_back():
    """A short tiny run (tests, smoke runs) stays eager; a real mini run compiles."""
    short = TrainConfig(preset="tiny", max_steps=40, batch_size=4)
    real = TrainConfig(preset="mini", max_steps=2000, batch_size=32)
    assert not resolve_compile(short, CUDA)
    assert resolve_compile(real, CUDA)
    work = real.max_steps * real.tokens_per_step * 127_984_320  # mini FLOPs/token
    assert work > COMPILE_MIN_FLOPS > short.max_steps * short.tokens_per_step * 41e6
    # A time budget shorter than the compile's payback stays eager, whatever max_steps says.
    budget = TrainConfig(preset="mini", max_steps=10**6, max_seconds=COMPILE_MIN_SECONDS - 1)
    assert not resolve_compile(budget, CUDA)
    longer = budget.model_copy(update={"max_seconds": COMPILE_MIN_SECONDS})
    assert resolve_compile(longer, CUDA)


def test_compile_auto_on_cpu_needs_a_cxx_compiler(monkeypatch):
    real = TrainConfig(preset="mini", max_steps=2000)
    monkeypatch.setattr(train_module.shutil, "which", lambda name: None)
    assert not resolve_compile(real, CPU)
    monkeypatch.setattr(train_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert resolve_compile(real, CPU)


def test_explicit_compile_setting_wins():
    assert resolve_compile(TrainConfig(preset="tiny", max_steps=1, compile=True), CPU)
    assert not resolve_compile(TrainConfig(preset="mini", max_steps=10**6, compile=False), CUDA)
    assert TrainConfig().compile == "auto"
    with pytest.raises(ValueError):
        TrainConfig(compile="sometimes")


def test_forward_backward_returns_the_mean_loss_over_micro_batches():
    torch.manual_seed(0)
    cfg = TrainConfig(preset="tiny", d_model=32, n_heads=2, n_layers=1, context_length=16)
    model = GPT(cfg.model_config_for(vocab_size=300)).eval()
    prec = setup_precision("cpu", "fp32")
    batches = [(torch.randint(0, 300, (2, 16)), torch.randint(0, 300, (2, 16))) for _ in range(2)]
    loss = forward_backward(model, batches, prec, prec.grad_scaler())
    with torch.no_grad():
        expected = sum(model(x, y)[1].item() for x, y in batches) / 2
    assert loss == pytest.approx(expected, rel=1e-6)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
