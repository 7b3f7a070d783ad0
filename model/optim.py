"""The optimizers (AdamW, or Muon + AdamW) and the LR schedule.

Every param group may carry `lr_scale`: its peak lr over cfg.lr. Training sets each group's
lr to lr_at(step, cfg) * lr_scale, so one schedule drives groups with different peak lrs.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from model.config import TrainConfig


def lr_at(
    step: int, cfg: TrainConfig, total_steps: int | None = None, warmup_steps: int | None = None
) -> float:
    """Learning rate of optimizer update `step` (0-based): linear warmup, then cosine decay.

    Warmup rises to cfg.lr over `warmup_steps`; cosine decays to cfg.lr * min_lr_ratio at
    update `total_steps` and stays there (nanoGPT's get_lr; min_lr = lr/10 per Chinchilla).
    Both default to the config's (warmup_steps, max_steps); a budgeted run passes its plan's
    (model/sizing.py RunPlan).
    """
    total = cfg.max_steps if total_steps is None else total_steps
    warmup = cfg.warmup_steps if warmup_steps is None else warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * (step + 1) / (warmup + 1)
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (cfg.lr - min_lr)


def configure_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW | MuonAdamW:
    """cfg.optimizer's optimizer for the model: AdamW (below) or Muon + AdamW (muon_adamw)."""
    if cfg.optimizer_for(getattr(model, "cfg", None)) == "muon":
        return muon_adamw(model, cfg, device)
    return adamw(model, cfg, device)


def _fused(device: torch.device) -> dict[str, bool]:
    # The fused kernel is faster: on CUDA (nanoGPT) and on CPU (measured ~12x on a 2-core
    # machine for 13M parameters, where the for-loop AdamW took a third of each tiny step).
    fused = (
        device.type in ("cuda", "cpu")
        and "fused" in inspect.signature(torch.optim.AdamW).parameters
    )
    return {"fused": True} if fused else {}


def adamw(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW that decays every 2-D weight (matmuls and embeddings), not biases or norms.

    This is nanoGPT's choice: decaying the embeddings too keeps one simple rule (dim >= 2),
    and with tied embeddings the token embedding *is* the lm_head matmul.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **_fused(device))


# nanochat's learning rates (scripts/base_train.py defaults, tuned on its d12 model):
# Muon for the blocks' matrices, AdamW for the token embedding and the lm_head; the AdamW
# ones scale as 1/sqrt(d_model/768) (nanochat gpt.py setup_optimizer, "tuned for 768 dim").
# nanochat also scales every lr by sqrt(batch tokens / 2^19); not here (cfg.lr's schedule
# and the batch are the caller's), a knob for the ablation to try.
MATRIX_LR = 0.02  # Muon
EMBEDDING_LR = 0.3  # AdamW, betas (0.8, 0.995), weight decay 0.001 (nanochat)
UNEMBEDDING_LR = 0.008  # AdamW, betas (0.8, 0.96), weight decay 0.01 (nanochat)
ADAM_EPS = 1e-10  # nanochat's AdamW groups


class MuonAdamW:
    """Muon and AdamW stepped as one optimizer: what training, the grad scaler and the
    checkpoints need of torch.optim (param_groups, step, zero_grad, state_dict)."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def muon_adamw(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> MuonAdamW:
    """Muon (Jordan et al. 2024, torch.optim.Muon) for the 2-D weights inside the blocks,
    AdamW for the embedding, the lm_head and every 1-D parameter (norm gains, biases).

    Muon orthogonalizes each matrix's momentum (Newton-Schulz), which suits hidden matmuls
    but not lookups or the output layer (Keller Jordan's Muon write-up; nanochat does the
    same split). The fused qkv (3d, d) is one matrix here, its update scaled by
    sqrt(max(1, rows/cols)) = sqrt(3) ("original", as nanochat's muon step).
    """
    blocks = model.blocks
    matrices = [p for p in blocks.parameters() if p.requires_grad and p.dim() == 2]
    in_muon = {id(p) for p in matrices}
    head, emb = model.lm_head.weight, model.tok_emb.weight
    others = [
        p
        for p in model.parameters()
        if p.requires_grad and id(p) not in in_muon and p is not head and p is not emb
    ]
    if any(p.dim() >= 2 for p in others):  # e.g. learned positions: embedding-like
        emb_like = [p for p in others if p.dim() >= 2]
        others = [p for p in others if p.dim() < 2]
    else:
        emb_like = []
    scale = (model.cfg.d_model / 768) ** -0.5  # nanochat: AdamW lrs ∝ 1/sqrt(d_model)

    def group(params: list, lr: float, **options: Any) -> dict[str, Any]:
        return {"params": params, "lr": lr, "lr_scale": lr / cfg.lr, **options}

    muon = torch.optim.Muon(
        [group(matrices, MATRIX_LR, weight_decay=cfg.weight_decay)],
        lr=MATRIX_LR,
        momentum=0.95,  # nanochat / modded-nanogpt
        nesterov=True,
        adjust_lr_fn="original",
    )
    head_group = group([head], UNEMBEDDING_LR * scale, betas=(0.8, 0.96), weight_decay=0.01)
    adam_groups = [head_group]
    embeddings = emb_like if emb is head else [emb, *emb_like]  # a tied one is the head
    if embeddings:
        adam_groups.append(
            group(embeddings, EMBEDDING_LR * scale, betas=(0.8, 0.995), weight_decay=0.001)
        )
    if others:  # norm gains and biases: the AdamW recipe's lr, no decay
        adam_groups.append(group(others, cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=0.0))
    adamw = torch.optim.AdamW(adam_groups, lr=cfg.lr, eps=ADAM_EPS, **_fused(device))
    return MuonAdamW(muon, adamw)
