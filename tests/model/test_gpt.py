"""The GPT module: shapes, causality, positions, parameter and FLOP counts."""

import dataclasses
import math

import pytest
import torch

import model.head
from model.config import PRESETS, ModelConfig, TrainConfig
from model.gpt import GPT, flops_per_token, matmul_params, padded_vocab_size, sinusoidal_table
from model.head import linear_cross_entropy

SMALL = ModelConfig(vocab_size=97, context_length=16, d_model=32, n_heads=4, n_layers=2)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(SMALL)
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, idx)
    assert logits is None  # training never materializes the logits (model/head.py)
    assert loss.shape == () and math.isclose(loss.item(), math.log(97), rel_tol=0.1)
    logits, loss = model(idx[:, :5])
    assert logits.shape == (3, 5, 97) and loss is None
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_causality(positional):
    """Changing token t changes no logits before t (and does change those at t)."""
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(SMALL, positional=positional)).eval()
    idx = torch.randint(0, 97, (1, 16))
    t = 9
    changed = idx.clone()
    changed[0, t] = (idx[0, t] + 1) % 97
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t], b[:, t])


def test_sinusoidal_values_match_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    model = GPT(SMALL)
    assert "pos_table" in dict(model.named_buffers())
    assert all("pos" not in name for name, _ in model.named_parameters())


def test_mini_flops_per_token_is_128m():
    """REFERENCE: the mini model is ~128 MFLOP/token, its lm_head ~71% of matmul params."""
    mini = PRESETS["mini"]
    assert flops_per_token(mini) == pytest.approx(128e6, rel=0.01)
    head = mini.d_model * mini.vocab_size
    assert head / matmul_params(mini) == pytest.approx(0.71, abs=0.01)


@pytest.mark.parametrize("preset", ["tiny", "mini", "gpt2-124m"])
def test_param_counts(preset):
    cfg = PRESETS[preset]
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPT(cfg)
    assert model.num_params(matmul_only=True) == matmul_params(cfg)
    if preset == "gpt2-124m":
        assert cfg.tie_embeddings and cfg.positional == "learned"
        assert model.num_params() == 124_439_808  # GPT-2 small with its 50,257 vocabulary
        assert model.tok_emb.weight is model.lm_head.weight


def test_residual_projection_init_is_scaled():
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, d_model=256, n_heads=4, n_layers=8)
    model = GPT(cfg)
    proj_std = model.blocks[0].mlp.proj.weight.std().item()
    fc_std = model.blocks[0].mlp.fc.weight.std().item()
    assert fc_std == pytest.approx(0.02, rel=0.05)
    assert proj_std == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)


def test_config_overrides_and_validation():
    cfg = TrainConfig(preset="tiny", d_model=48, n_heads=3, context_length=32)
    resolved = cfg.model_config_for(vocab_size=1000)
    assert (resolved.d_model, resolved.n_heads, resolved.vocab_size) == (48, 3, 1000)
    assert resolved.n_layers == PRESETS["tiny"].n_layers
    with pytest.raises(ValueError, match="not divisible"):
        TrainConfig(preset="tiny", d_model=50, n_heads=3)
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(preset="tiny", learning_rate=1.0)


def test_generate_is_seeded():
    model = GPT(SMALL).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 20, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 21) and torch.equal(a, b)


def test_sinusoidal_input_is_scaled_embedding_plus_table():
    """Vaswani §3.4: token embeddings x sqrt(d), plus the fixed table (seen at ln_f's input)."""
    model = GPT(dataclasses.replace(SMALL, n_layers=0)).eval()
    seen = {}
    model.ln_f.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    model(idx)
    expected = model.tok_emb(idx) * math.sqrt(32) + sinusoidal_table(16, 32)[:5]
    assert torch.allclose(seen["x"], expected, atol=1e-6)


def _plain_loss_and_grads(x, w, t, V, dtype=None):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = x @ w[:V].t()
    loss = torch.nn.functional.cross_entropy(logits.float(), t)
    (3 * loss).backward()
    return loss, x.grad, w.grad


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_chunked_head_cross_entropy_equals_the_plain_loss_and_gradients(monkeypatch, dtype):
    """Several chunks, a ragged last one, padded columns: same loss and gradients as
    F.cross_entropy on the sliced logits (fp32 to 1e-5; bf16 matmuls to bf16 noise)."""
    monkeypatch.setattr(model.head, "CHUNK_ROWS", 8)
    torch.manual_seed(0)
    N, d, V = 37, 16, 100
    x = torch.randn(N, d, requires_grad=True)
    w = torch.randn(padded_vocab_size(V), d, requires_grad=True)
    t = torch.randint(0, V, (N,))
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = linear_cross_entropy(x, w, t, V)
    (3 * loss).backward()
    ref, ref_x, ref_w = _plain_loss_and_grads(x, w, t, V, dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype is None else dict(rtol=2e-2, atol=2e-2)
    assert torch.allclose(loss, ref, **tol)
    assert torch.allclose(x.grad, ref_x, **tol)
    assert torch.allclose(w.grad[:V], ref_w[:V], **tol)
    assert w.grad.dtype == torch.float32 and not w.grad[V:].any()  # padding: no gradient
    with torch.no_grad():  # validation-style call: the loss alone
        assert torch.allclose(linear_cross_entropy(x, w, t, V), loss, **tol)


def test_vocab_is_padded_but_padded_ids_are_never_seen():
    """Tables have a multiple of 64 rows; logits, losses and samples cover the true V only."""
    torch.manual_seed(0)
    model = GPT(SMALL).eval()  # V = 97 -> 128 rows
    assert padded_vocab_size(97) == 128 and padded_vocab_size(50257) == 50304
    assert model.lm_head.weight.shape == (128, 32) and model.tok_emb.weight.shape == (128, 32)
    assert not model.lm_head.weight[97:].any() and not model.tok_emb.weight[97:].any()
    idx = torch.randint(0, 97, (2, 16))
    _, before = model(idx, idx)
    with torch.no_grad():  # even if the padding rows were trained to be huge ...
        model.lm_head.weight[97:] = 100.0
    logits, _ = model(idx)
    assert logits.shape == (2, 16, 97)
    out = model.generate(idx[:, :2], 30, generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 97  # ... sampling never picks a padded id
    _, loss = model(idx, idx)
    assert loss.item() == before.item()  # nor does the loss put probability on them


def test_checkpoints_without_padding_still_load():
    """A state_dict from before the padding ((V, d) tables) loads, padded with zero rows."""
    torch.manual_seed(0)
    model = GPT(SMALL)
    old = {k: v[:97] if k in ("tok_emb.weight", "lm_head.weight") else v
           for k, v in model.state_dict().items()}  # fmt: skip
    fresh = GPT(SMALL)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
