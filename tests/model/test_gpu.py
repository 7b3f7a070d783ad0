"""Training on a CUDA GPU: bf16, fp16 + GradScaler, torch.compile, exact resume.

Marked `gpu` and deselected by default (pyproject addopts: -m "not gpu"), so CPU CI does not
report them as silently skipped; `bench/gpu_check.sh` runs them with `-m gpu`. On a machine
without CUDA, selecting them fails loudly rather than skipping.
"""

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.config import ModelConfig
from model.gpt import GPT
from model.head import linear_cross_entropy
from model.train import train
from tests.model.conftest import small_cfg

pytestmark = pytest.mark.gpu

SMALL = ModelConfig(vocab_size=50257, context_length=64, d_model=64, n_heads=4, n_layers=2)


@pytest.fixture(autouse=True)
def _need_cuda():
    assert torch.cuda.is_available(), "gpu tests selected (-m gpu) but CUDA is not available"


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_steps_on_cuda(shakespeare_tokens, tmp_path, precision):
    """Loss falls in every precision; fp16 goes through the GradScaler and keeps finite."""
    cfg = small_cfg(device="cuda", precision=precision, max_steps=30, eval_interval=30)
    summary = train(cfg, shakespeare_tokens, tmp_path)
    assert summary["device"].startswith("cuda") and summary["precision"] == precision
    assert summary["last_loss"] < summary["first_loss"] - 1.5
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert bool(state["scaler"]) == (precision == "fp16")  # an enabled scaler saves its scale
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_compiled_training_on_cuda_matches_eager(shakespeare_tokens, tmp_path):
    """compile=True trains to the same losses as eager within bf16 noise."""
    base = dict(device="cuda", precision="bf16", max_steps=10, eval_interval=100)
    eager = train(small_cfg(**base, compile=False), shakespeare_tokens, tmp_path / "eager")
    compiled = train(small_cfg(**base, compile=True), shakespeare_tokens, tmp_path / "compiled")
    assert compiled["last_loss"] == pytest.approx(eager["last_loss"], rel=0.03)


def test_exact_resume_on_cuda(shakespeare_tokens, tmp_path):
    """6 steps straight == 3 steps then resume to 6, on the GPU (CUDA RNG state included)."""
    cfg = small_cfg(device="cuda", precision="bf16", max_steps=6, dropout=0.1)
    cfg = cfg.model_copy(update={"eval_interval": 100, "checkpoint_interval": 3})
    straight = train(cfg, shakespeare_tokens, tmp_path / "a")
    train(cfg.model_copy(update={"max_steps": 3}), shakespeare_tokens, tmp_path / "b")
    resumed = train(cfg, shakespeare_tokens, tmp_path / "b", resume=True)
    assert resumed["resumed_from"] == 3 and resumed["last_loss"] == straight["last_loss"]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fused_head_loss_and_grads_on_cuda():
    """The chunked lm_head + cross-entropy equals the plain path under bf16 autocast on CUDA."""
    torch.manual_seed(0)
    x = torch.randn(3000, 64, device="cuda", requires_grad=True)
    w = torch.randn(50304, 64, device="cuda", requires_grad=True)
    t = torch.randint(0, 50257, (3000,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = linear_cross_entropy(x, w, t, 50257)
    loss.backward()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = x2 @ w2[:50257].t()
    ref = torch.nn.functional.cross_entropy(logits.float(), t)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-2)
    assert torch.allclose(x.grad, x2.grad, atol=1e-3, rtol=5e-2)
    assert w.grad[50257:].abs().max().item() == 0.0


def test_model_forward_on_cuda_never_returns_padded_logits():
    model = GPT(SMALL).cuda().eval()
    logits, _ = model(torch.zeros(2, 8, dtype=torch.long, device="cuda"))
    assert logits.shape == (2, 8, 50257)
