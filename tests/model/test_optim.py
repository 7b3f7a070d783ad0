"""LR schedule shape, optimizer parameter groups, precision resolution."""

import subprocess
import sys

import pytest
import torch

from model.config import ModelConfig, TrainConfig
from model.gpt import GPT
from model.optim import configure_optimizer, lr_at
from model.precision import mfu, resolve_precision


def test_lr_schedule_shape():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=100, min_lr_ratio=0.1)
    lrs = [lr_at(step, cfg) for step in range(120)]
    warmup, decay = lrs[:10], lrs[10:100]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))  # rising
    assert lrs[0] > 0 and lrs[9] < 1e-3
    assert lrs[10] == pytest.approx(1e-3)  # peak right after warmup
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # cosine, never rising
    assert lrs[55] == pytest.approx((1e-3 + 1e-4) / 2)  # halfway: mid between peak and floor
    assert min(lrs[10:]) >= 1e-4 and lrs[100:] == [pytest.approx(1e-4)] * 20  # floor


def test_lr_without_warmup_starts_at_peak():
    cfg = TrainConfig(lr=3e-4, warmup_steps=0, max_steps=10)
    assert lr_at(0, cfg) == pytest.approx(3e-4)


def test_weight_decay_only_on_2d_weights():
    model = GPT(ModelConfig(vocab_size=50, context_length=8, d_model=16, n_heads=2, n_layers=1))
    model_b = GPT(
        ModelConfig(vocab_size=50, context_length=8, d_model=16, n_heads=2, n_layers=1, bias=True)
    )
    for m in (model, model_b):
        opt = configure_optimizer(m, TrainConfig(weight_decay=0.1), torch.device("cpu"))
        decay, no_decay = opt.param_groups
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        assert all(p.dim() == 2 for p in decay["params"])
        assert no_decay["params"] and all(p.dim() == 1 for p in no_decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_precision_resolution():
    # auto on this CPU is whatever model/hardware.py finds (tests/model/test_precision.py)
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert mfu(1e8, 1e4, None) is None
    assert mfu(1e8, 1e4, 1e13) == pytest.approx(0.1)


def test_config_module_does_not_import_torch():
    """The pipeline's config loader imports model.config: it must stay torch-free."""
    code = "import sys, model.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(_repo()))


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_muon_takes_block_matrices_and_adamw_the_rest():
    from model.config import modern_config
    from model.optim import EMBEDDING_LR, MATRIX_LR, UNEMBEDDING_LR, MuonAdamW

    for cfg in (
        modern_config(2, vocab_size=50, context_length=8),
        ModelConfig(vocab_size=50, context_length=8, d_model=16, n_heads=2, n_layers=1, bias=True),
    ):
        model = GPT(cfg)
        opt = configure_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
        assert isinstance(opt, MuonAdamW)
        muon_ids = {id(p) for g in opt.muon.param_groups for p in g["params"]}
        block_matrices = {id(p) for p in model.blocks.parameters() if p.dim() == 2}
        assert muon_ids == block_matrices
        grouped = [p for g in opt.param_groups for p in g["params"]]
        assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
        head, emb = opt.adamw.param_groups[:2]
        assert head["params"][0] is model.lm_head.weight
        scale = (cfg.d_model / 768) ** -0.5
        assert head["lr"] == pytest.approx(UNEMBEDDING_LR * scale)
        assert emb["lr"] == pytest.approx(EMBEDDING_LR * scale)
        assert opt.muon.param_groups[0]["lr"] == MATRIX_LR
        # the schedule multiplies each group's own peak: lr_scale = peak / cfg.lr
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(g["lr_scale"] * 3e-4)


def test_muon_step_moves_every_parameter_and_state_round_trips():
    from model.config import modern_config

    torch.manual_seed(0)
    model = GPT(modern_config(1, vocab_size=50, context_length=8))
    cfg = TrainConfig(optimizer="muon")
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # step 1: zero output projections pass no gradient further in
        idx = torch.randint(0, 50, (2, 8))
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    again = configure_optimizer(model, cfg, torch.device("cpu"))
    again.load_state_dict(opt.state_dict())
    a, b = opt.state_dict(), again.state_dict()
    assert a["muon"]["param_groups"] == b["muon"]["param_groups"]
    for part in ("muon", "adamw"):
        for key, value in a[part]["state"].items():
            for name, tensor in value.items():
                assert torch.equal(tensor, b[part]["state"][key][name]), (part, name)


def test_optimizer_auto_is_muon_for_the_modern_family_and_adamw_for_the_gpt2_presets():
    from model.config import modern_config
    from model.optim import MuonAdamW

    assert TrainConfig().resolved_optimizer == "adamw"  # the seeds' mini keeps its AdamW
    assert TrainConfig(preset="gpt2-124m").resolved_optimizer == "adamw"
    assert TrainConfig(preset="modern").resolved_optimizer == "muon"
    assert TrainConfig(preset="auto").resolved_optimizer == "muon"
    assert TrainConfig(preset="modern", optimizer="adamw").resolved_optimizer == "adamw"
    model = GPT(modern_config(1, vocab_size=50, context_length=8))
    opt = configure_optimizer(model, TrainConfig(preset="modern"), torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    plain = configure_optimizer(model, TrainConfig(), torch.device("cpu"))
    assert isinstance(plain, torch.optim.AdamW)
