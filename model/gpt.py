"""A GPT decoder in nanoGPT's shape: config, then one module per concept in reading order.

Token embedding + positions (sinusoidal as in Vaswani et al. 2017, or learned as in GPT-2),
N pre-LayerNorm blocks (causal self-attention, then a 4x GELU MLP), a final LayerNorm and an
lm_head without bias (tied to the token embedding when the config asks).

The "modern" pieces (ModelConfig fields; all off by default, so older models are unchanged):
rotary positions on q and k instead of an input table, parameter-free RMSNorm, QK-norm, ReLU²
or SwiGLU MLPs, an RMS-normalized embedding and nanochat's init (zero output projections).

The embedding and head tables have `padded_vocab_size(cfg.vocab_size)` rows (a multiple of 64):
the rows past the true vocabulary are zeros that no loss, logit or sample ever sees.

Sampling (model/sampling.py) passes a KV cache through `next_logits`: each attention appends
its new keys and values to its layer's cache and attends over all of them, and the positions
(table rows, rotary angles) start where the cache ends, so a new token costs one position.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import ModelConfig
from model.head import linear_cross_entropy

if TYPE_CHECKING:
    from model.sampling import KVCache, LayerCache

# Embedding/head rows are padded to a multiple of this: nanoGPT pads GPT-2's 50,257 to 50,304
# ("+~25% speedup"; REFERENCE: +13%). Measured here (2-core EPYC Zen 4, 2048 x 288 head
# matmuls, forward + both backward): fp32 132 -> 170 GFLOP/s (+29%), bf16 331 -> 342 (+3%).
VOCAB_MULTIPLE = 64


def padded_vocab_size(vocab_size: int) -> int:
    """Rows of the embedding and lm_head tables: vocab_size rounded up to VOCAB_MULTIPLE."""
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


# RMSNorm epsilon, written into HF exports as rms_norm_eps (Qwen3's and Apertus' default).
RMS_EPS = 1e-6


def mlp_hidden(cfg: ModelConfig) -> int:
    """MLP width: 4d (GPT-2), or for SwiGLU's three matrices 8/3·d rounded up to a multiple
    of 64, so it has the 8d² weights (and FLOPs) of a 4d MLP (Shazeer 2020 §2 keeps the
    parameter count this way) with matmul-friendly sizes (Llama rounds to 256, too coarse
    at our widths: d=256 -> 768 would be +12%; 64 gives 704, +3%)."""
    if cfg.mlp == "swiglu":
        return -(-8 * cfg.d_model // 3 // 64) * 64
    return 4 * cfg.d_model


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul per token: 4·d² (attention) + the MLP's per block
    (8·d² for 4d GELU/ReLU², 3·d·hidden for SwiGLU) plus the d·V lm_head.

    The input embedding is a lookup, not a matmul, so it is excluded; the lm_head counts even
    when tied to it. Biases and norms are negligible and excluded too.
    """
    mlp_matrices = 3 if cfg.mlp == "swiglu" else 2  # (gate,) fc, proj
    per_block = 4 * cfg.d_model**2 + mlp_matrices * cfg.d_model * mlp_hidden(cfg)
    return cfg.n_layers * per_block + cfg.d_model * cfg.vocab_size


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs per token (forward + backward) = 6N + 12·L·H·Q·T.

    N = matmul_params(cfg), L layers, H heads, Q head size, T context: the attention term is
    the QK^T and AV matmuls. PaLM (Chowdhery et al. 2022) appendix B, as used by nanoGPT's
    estimate_mfu.
    """
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * cfg.context_length
    return 6 * matmul_params(cfg) + attention


def sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...) (Vaswani et al. §3.5)."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.float()  # (T, d)


def rope_tables(length: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of angle pos·theta^(-2i/hs) for i < hs/2 (Su et al. 2021), each (T, hs/2)."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = position * inv_freq  # (T, hs/2)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[i], x[i + hs/2]) of x (B, nh, T, hs) by each position's angles.

    The split-halves pairing is Hugging Face Llama's `rotate_half`, so exports need no
    permutation of the q/k weights.
    """
    x1, x2 = x.chunk(2, dim=-1)
    y = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return y.type_as(x)  # the tables are fp32; keep the autocast dtype of q and k


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) over the last dimension, no learned gain (nanochat)."""
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)


class RMSNorm(nn.Module):
    """Parameter-free RMSNorm as a module, so blocks read alike for both norms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm()
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.qk_norm = cfg.qk_norm
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, rope: tuple | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            # Unit-RMS q and k bound the attention logits (Henry et al. 2020; nanochat). Before
            # the rotation, as Qwen3 does; a parameter-free norm commutes with it anyway.
            q, k = rms_norm(q), rms_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        dropout = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            past = cache.length
            k, v = cache.append(k, v)  # (B, nh, past + T, hs)
            mask = cached_causal_mask(past, T, x.device)
            square = past == 0 and T > 1  # a prefill: the same kernel as without a cache
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=square
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.proj(y))


def cached_causal_mask(past: int, T: int, device: torch.device) -> torch.Tensor | None:
    """Which of past + T keys each of T new queries sees: every earlier position and its own
    (True). None where no mask is needed (one new query sees all keys) or where SDPA's
    is_causal does it (nothing cached; its mask is aligned top-left, wrong once past > 0)."""
    if T == 1 or past == 0:
        return None
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        hidden = mlp_hidden(cfg)
        self.fc = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        if cfg.mlp == "swiglu":
            self.gate = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            h = F.silu(self.gate(x)) * h  # SiLU(x W_gate) ⊙ x W_fc (Shazeer 2020)
        elif self.kind == "relu2":
            h = F.relu(h).square()  # Primer (So et al. 2021)
        elif self.kind == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")  # OpenAI GPT-2's GELU
        else:
            h = F.gelu(h)
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, rope: tuple | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.padded_vocab = padded_vocab_size(cfg.vocab_size)
        self.tok_emb = nn.Embedding(self.padded_vocab, cfg.d_model)
        if cfg.positional == "learned":
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        elif cfg.positional == "rope":
            # Derived from the config, so not saved in checkpoints (persistent=False).
            cos, sin = rope_tables(cfg.context_length, cfg.head_dim, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            # Derived from the config, so not saved in checkpoints (persistent=False).
            table = sinusoidal_table(cfg.context_length, cfg.d_model)
            self.register_buffer("pos_table", table, persistent=False)
            self.embed_scale = math.sqrt(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, self.padded_vocab, bias=False)
        if cfg.tie_embeddings:
            self.tok_emb.weight = self.lm_head.weight  # GPT-2 / nanoGPT weight tying

        if cfg.init == "nanochat":
            self._init_nanochat()
        else:
            self.apply(self._init_weights)
            # GPT-2: residual projections scaled by 1/sqrt(2 * n_layers), one per residual add.
            for name, param in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))
        with torch.no_grad():  # padding rows: never looked up, their logits masked
            self.tok_emb.weight[cfg.vocab_size :].zero_()
            self.lm_head.weight[cfg.vocab_size :].zero_()
        self._register_load_state_dict_pre_hook(self._pad_vocab_rows)

    def _pad_vocab_rows(self, state_dict, prefix, *args) -> None:
        """Checkpoints written before the padding have (vocab_size, d) tables: pad with zeros."""
        for name in ("tok_emb.weight", "lm_head.weight"):
            table = state_dict.get(prefix + name)
            if table is not None and table.size(0) == self.cfg.vocab_size < self.padded_vocab:
                extra = table.new_zeros(self.padded_vocab - table.size(0), table.size(1))
                state_dict[prefix + name] = torch.cat([table, extra])

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 init (nanoGPT): normal(0, 0.02) for Linear and Embedding weights, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @torch.no_grad()
    def _init_nanochat(self) -> None:
        """nanochat's GPT.init_weights: every block starts as the identity (zero output
        projections), inputs uniform with std 1/sqrt(d) (uniform: no outliers), a near-zero
        head (std 0.001: uniform first predictions) and embeddings of std 0.8."""
        bound = math.sqrt(3.0 / self.cfg.d_model)  # uniform(-b, b) has std b/sqrt(3)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module is not self.lm_head:
                if name.endswith("proj"):
                    nn.init.zeros_(module.weight)
                else:
                    nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=0.8)
        if self.cfg.positional == "learned":
            nn.init.normal_(self.pos_emb.weight, mean=0.0, std=0.02)

    def num_params(self, matmul_only: bool = False) -> int:
        """All parameters (tied ones once), or only those counted by flops_per_token; the
        vocabulary padding's zero rows are not counted."""
        padding = (self.padded_vocab - self.cfg.vocab_size) * self.cfg.d_model  # per table
        if matmul_only:
            linear = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
            return linear - padding
        tables = 1 if self.cfg.tie_embeddings else 2
        return sum(p.numel() for p in self.parameters()) - tables * padding

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final norm's output (B, T, d) for token ids (B, T). With a cache, idx are the
        tokens after the cached ones: their positions start at cache.length."""
        T = idx.size(1)
        start = 0 if cache is None else cache.length
        if start + T > self.cfg.context_length:
            where = f"{T} tokens" if cache is None else f"{start} cached + {T} new tokens"
            raise ValueError(f"sequence of {where} > context_length {self.cfg.context_length}")
        x = self.tok_emb(idx)  # (B, T, d)
        rope = None
        if self.cfg.positional == "learned":
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))  # (T, d)
        elif self.cfg.positional == "rope":
            # applied to q, k in every block
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        else:
            # Vaswani et al. §3.4 scale embeddings by sqrt(d) before adding the unit-amplitude
            # table; at GPT-2's init std 0.02 the positions would otherwise drown the tokens.
            x = x * self.embed_scale + self.pos_table[start : start + T]
        if self.cfg.embed_norm:
            x = rms_norm(x)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, None if cache is None else cache.layers[i])
        return self.ln_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits (B, T, V), None) for token ids (B, T); with targets (B, T), (None, mean
        cross-entropy): training never materializes the logits (model/head.py)."""
        B, T = idx.shape
        x = self.hidden_states(idx)
        if targets is None:
            return self.lm_head(x)[..., : self.cfg.vocab_size], None  # (B, T, V): no padding
        V = self.cfg.vocab_size
        loss = linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.view(-1), V)
        return None, loss

    def next_logits(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        head: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, V) of the token after idx (B, T): the head on the last position only,
        all sampling needs (GPT-2's 50,257 x 768 head costs 2·50,257·768 = 77 MFLOP for each
        position of a window whose logits nobody would read). `head`: the lm_head weight
        as a (d, V) matrix (model.sampling.decode_head), faster for one row at a time."""
        x = self.hidden_states(idx, cache)[:, -1, :]  # (B, d)
        if head is not None:
            return x @ head  # (B, V)
        return self.lm_head(x)[..., : self.cfg.vocab_size]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: model.sampling.generate_ids
        with its KV cache (temperature 0: greedy). The window slides past context_length."""
        from model.sampling import Sampling, generate_ids

        sampling = Sampling(temperature=temperature, top_k=top_k)
        new = list(generate_ids(self, idx, max_new_tokens, sampling, generator))
        return torch.cat([idx, *(token.unsqueeze(1) for token in new)], dim=1)
