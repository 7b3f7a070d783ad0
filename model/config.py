"""Configuration of the model, training and evaluation: no torch import here.

`ModelConfig` is the architecture (a dataclass, as in nanoGPT); `TrainConfig` and `EvalConfig`
are pydantic models so a flow or a YAML file can validate them. The pipeline's config loader
imports this module, so it must stay cheap to import (no torch at module top).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    model_serializer,
    model_validator,
)

GPT2_VOCAB_SIZE = 50257  # tiktoken "gpt2": 50,256 BPE merges + <|endoftext|>


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = GPT2_VOCAB_SIZE
    context_length: int = 256  # T: longest sequence the model sees
    d_model: int = 288
    n_heads: int = 6
    n_layers: int = 6
    dropout: float = 0.0
    bias: bool = False  # biases in Linear/LayerNorm; nanoGPT: False is "a bit better and faster"
    # rope: rotary positions on q and k (Su et al. 2021), no position table at the input.
    positional: Literal["sinusoidal", "learned", "rope"] = "sinusoidal"
    tie_embeddings: bool = False  # share token embedding and lm_head weights (GPT-2 does)
    rope_theta: float = 10000.0  # RoPE base (Su et al.; Llama); used only with rope
    # rmsnorm: parameter-free RMSNorm (F.rms_norm), as nanochat and modded-nanogpt use.
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    qk_norm: bool = False  # RMS-normalize q and k per head before attention (nanochat)
    # gelu: 4d MLP with the exact erf GELU; gelu_tanh: its tanh approximation (Hendrycks &
    # Gimpel 2016), what OpenAI's GPT-2 computes (HF `gelu_new`), for imported GPT-2 weights;
    # relu2: 4d ReLU² (So et al. 2021 "Primer"; nanochat);
    # swiglu: gated SiLU (Shazeer 2020) with hidden ~8/3 d, the same weights as 4d.
    mlp: Literal["gelu", "gelu_tanh", "relu2", "swiglu"] = "gelu"
    embed_norm: bool = False  # RMS-normalize the token embedding (nanochat, modded-nanogpt)
    # gpt2: normal(0, 0.02), residual projections / sqrt(2L). nanochat: uniform std 1/sqrt(d)
    # inputs, zero output projections, lm_head std 0.001 (model/gpt.py GPT._init_nanochat).
    init: Literal["gpt2", "nanochat"] = "gpt2"

    def __post_init__(self) -> None:
        choices = {
            "positional": ("sinusoidal", "learned", "rope"),
            "norm": ("layernorm", "rmsnorm"),
            "mlp": ("gelu", "gelu_tanh", "relu2", "swiglu"),
            "init": ("gpt2", "nanochat"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


PRESETS: dict[str, ModelConfig] = {
    # CPU demos and tests. The 50,257-way lm_head dominates its cost, so the body stays small:
    # batch 16 trains at ~400 tokens/s in fp32 on a 2-core AVX2-only CPU (issue 8), several
    # times that where bf16 is native.
    "tiny": ModelConfig(context_length=64, d_model=128, n_heads=4, n_layers=2),
    # The design documents' model: ~128 MFLOP/token (REFERENCE, Training). dropout 0.1 because
    # local crawls are small: nanoGPT uses 0 for pretraining, 0.1+ when data is scarce.
    "mini": ModelConfig(context_length=256, d_model=288, n_heads=6, n_layers=6, dropout=0.1),
    # GPT-2 small (Radford et al. 2019): learned positions, tied embeddings, biases.
    "gpt2-124m": ModelConfig(
        context_length=1024,
        d_model=768,
        n_heads=12,
        n_layers=12,
        bias=True,
        positional="learned",
        tie_embeddings=True,
    ),
}


def modern_config(
    depth: int, vocab_size: int = GPT2_VOCAB_SIZE, context_length: int = 256
) -> ModelConfig:
    """nanochat's one-knob model (scripts/base_train.py: model_dim = depth * aspect_ratio 64,
    head_dim 128 there, 64 here for small widths): d_model = 64·depth, heads of 64, depth
    layers, with rope, parameter-free RMSNorm (also after the embedding), QK-norm, ReLU², no
    biases, an untied head, nanochat's init and no dropout."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return ModelConfig(
        vocab_size=vocab_size,
        context_length=context_length,
        d_model=64 * depth,
        n_heads=max(1, depth),
        n_layers=depth,
        dropout=0.0,
        bias=False,
        positional="rope",
        tie_embeddings=False,
        norm="rmsnorm",
        qk_norm=True,
        mlp="relu2",
        embed_norm=True,
        init="nanochat",
    )


MODERN_DEPTH = 4  # preset "modern" without `depth`: d_model 256, 4 layers

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class TrainConfig(BaseModel):
    """One training run. Defaults follow nanoGPT's GPT-2 recipe scaled to the `mini` model."""

    model_config = ConfigDict(extra="forbid")

    # modern: modern_config(depth); auto: the modern depth model/sizing.py picks for the
    # budget (max_seconds, max_flops, else max_steps) and the data, recorded in the checkpoint.
    preset: Literal["tiny", "mini", "gpt2-124m", "modern", "auto"] = "mini"
    depth: int | None = Field(default=None, gt=0)  # preset modern's depth (default 4)
    # muon: Muon on the blocks' matrices, AdamW elsewhere, nanochat's lrs (model/optim.py);
    # auto: muon for presets modern/auto, adamw for the GPT-2-style ones. bench/ablation.py,
    # depth 2, 120 s on a 2-core EPYC Zen 3: muon 2.90 val bits per byte, AdamW 4.01 (README).
    optimizer: Literal["auto", "adamw", "muon"] = "auto"
    # Optional architecture overrides on top of the preset (None keeps the preset's value).
    d_model: int | None = Field(default=None, gt=0)
    n_layers: int | None = Field(default=None, gt=0)
    n_heads: int | None = Field(default=None, gt=0)
    context_length: int | None = Field(default=None, gt=0)
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)

    batch_size: int = Field(default=32, gt=0)  # sequences per micro-batch
    grad_accum_steps: int = Field(default=1, gt=0)  # micro-batches per optimizer step
    max_steps: int = Field(default=2000, gt=0)  # optimizer steps in total (resume included)
    lr: float = Field(default=3e-4, gt=0)  # peak learning rate
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # cosine floor: nanoGPT min_lr = lr/10
    warmup_steps: int = Field(default=100, ge=0)  # linear warmup (nanoGPT shakespeare: 100)
    weight_decay: float = Field(default=0.1, ge=0)  # GPT-3 paper / nanoGPT
    beta1: float = Field(default=0.9, ge=0, lt=1)  # nanoGPT
    beta2: float = Field(default=0.95, ge=0, lt=1)  # GPT-3 paper / nanoGPT
    grad_clip: float = Field(default=1.0, ge=0)  # max global grad norm, 0 disables (GPT-3)
    # auto: bf16 where the hardware computes it natively (GPUs, AMX/AVX512-BF16 CPUs), fp16 +
    # GradScaler on GPUs without bf16, else fp32 (model/hardware.py; `llmforge doctor` shows it).
    precision: Precision = "auto"
    device: Device = "auto"
    # Intra-op CPU threads; None: the physical cores this process may use (model/hardware.py).
    threads: int | None = Field(default=None, gt=0)
    # torch.compile the model; "auto": on where it pays back its compile time within the run
    # (model.train.resolve_compile: enough training FLOPs, and a compiler for the device).
    compile: bool | Literal["auto"] = "auto"
    seed: int = 1337
    log_interval: int = Field(default=10, gt=0)  # steps between on_log calls / log lines
    eval_interval: int = Field(default=250, gt=0)  # steps between validation losses
    eval_tokens: int = Field(default=65536, gt=0)  # validation tokens (first of the val split)
    checkpoint_interval: int = Field(default=250, gt=0)  # steps between checkpoint writes
    # Budgets. max_seconds: wall-clock seconds of training (fit off: of this call);
    # max_flops: training FLOPs = tokens * flops_per_token (model.gpt). With
    # fit_schedule_to_budget (model/sizing.py plan_run) the run plans its step count so that
    # warmup and cosine decay end when the budget does (max_steps stays an upper bound);
    # False keeps the step schedule of max_steps and stops wherever it is at the budget.
    max_seconds: float | None = Field(default=None, gt=0)
    max_flops: float | None = Field(default=None, gt=0)
    fit_schedule_to_budget: bool = True
    # Start from a trained model instead of random weights (nanoGPT's init_from): a Hugging
    # Face GPT-2 folder (config.json + model.safetensors or pytorch_model.bin), a checkpoint.pt,
    # a folder holding one, or a run id (model/base.py). The architecture is then the base's:
    # preset, depth and the width overrides do not apply; context_length may shorten it.
    init_from: str | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        """No `init_from` key without one, so the config part of existing train versions'
        ids stays what it was; nor in a version id's dump (pipeline/stages.py plan()), where
        the base enters by content (model/stages.py train_inputs), not by its path."""
        data = handler(self)
        if self.init_from is None or (info.context or {}).get("version_id"):
            data.pop("init_from", None)
        return data

    @model_validator(mode="after")
    def _check_architecture(self) -> TrainConfig:
        if self.init_from is not None:
            fixed = [n for n in ("depth", "d_model", "n_layers", "n_heads") if getattr(self, n)]
            if fixed:
                raise ValueError(
                    f"{', '.join(fixed)}: init_from takes the base model's architecture"
                )
            if not self.init_from.strip():
                raise ValueError("init_from is empty: give a folder, checkpoint or run id")
        try:
            self.model_config_for(depth=1 if self.preset == "auto" else None)
        except ValueError as exc:
            raise ValueError(f"preset {self.preset} with overrides: {exc}") from None
        return self

    def model_config_for(
        self, vocab_size: int | None = None, depth: int | None = None
    ) -> ModelConfig:
        """The resolved architecture: the preset, the overrides, the dataset's vocabulary size.

        Preset "auto" needs `depth` (the one model/sizing.py chose); "modern" takes cfg.depth.
        """
        if self.depth is not None and self.preset != "modern":
            hint = "; use preset modern to fix it" if self.preset == "auto" else ""
            raise ValueError(f"depth is for preset modern, not {self.preset}{hint}")
        if self.preset in ("modern", "auto"):
            chosen = depth if self.preset == "auto" else self.depth or MODERN_DEPTH
            if chosen is None:
                raise ValueError("preset auto: the depth is chosen at train time (model/sizing.py)")
            fixed = [n for n in ("d_model", "n_layers", "n_heads") if getattr(self, n)]
            if fixed and self.preset == "auto":  # modern takes them as overrides
                raise ValueError(f"{', '.join(fixed)}: preset auto chooses them; use preset modern")
            base = modern_config(chosen, context_length=self.context_length or 256)
        else:
            base = PRESETS[self.preset]
        overrides = {
            name: getattr(self, name)
            for name in ("d_model", "n_layers", "n_heads", "context_length", "dropout")
            if getattr(self, name) is not None
        }
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        return dataclasses.replace(base, **overrides)

    @property
    def resolved_optimizer(self) -> Literal["adamw", "muon"]:
        return self.optimizer_for(None)

    def optimizer_for(self, arch: ModelConfig | None) -> Literal["adamw", "muon"]:
        """cfg.optimizer with "auto" resolved for the model `arch`: by the preset, or with
        init_from by the base's architecture (Muon for rotary models, as preset modern)."""
        if self.optimizer != "auto":
            return self.optimizer
        if self.init_from is not None and arch is not None:
            return "muon" if arch.positional == "rope" else "adamw"
        if self.init_from is not None:
            return "adamw"  # a GPT-2-style base: the recipe it was trained with
        return "muon" if self.preset in ("modern", "auto") else "adamw"

    @property
    def tokens_per_step(self) -> int:
        """Tokens one process trains on per optimizer step (the job's: times world size)."""
        depth = 1 if self.preset == "auto" else None  # the context length is the same at all
        return self.step_tokens(self.model_config_for(depth=depth).context_length)

    def step_tokens(self, context_length: int) -> int:
        """Tokens one process trains on per optimizer step, sequences of `context_length`
        (an imported model's, train.init_from, may differ from the preset's)."""
        return self.batch_size * self.grad_accum_steps * context_length


DEFAULT_PROMPTS = [
    "The meaning of life is",
    "Once upon a time,",
    "In the news today,",
    "ROMEO:",
]


class EvalConfig(BaseModel):
    """Evaluation of one checkpoint: val loss / perplexity / bits per byte, samples, HellaSwag."""

    model_config = ConfigDict(extra="forbid")

    eval_tokens: int = Field(default=65536, gt=0)  # first tokens of the val split, fixed
    batch_size: int = Field(default=8, gt=0)
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_PROMPTS))
    max_new_tokens: int = Field(default=64, ge=0)
    temperature: float = Field(default=0.8, gt=0)  # nanoGPT sample.py default
    top_k: int | None = Field(default=200, gt=0)  # nanoGPT sample.py default
    seed: int = 1337
    hellaswag_path: str | None = None  # JSONL with ctx / endings / label; None skips it
    hellaswag_limit: int | None = Field(default=None, gt=0)  # first N items (None: all)
    # EleutherAI's lm-evaluation-harness on the model (`pip install 'llmforge[eval]'`,
    # model/harness.py), offline. "hellaswag": the stock task on hellaswag_path's first
    # hellaswag_limit items (the ones our scorer reads); other names: tasks in lm_eval's YAML
    # format in the lm_eval_include folders (on your data files, or a folder of lm_eval's own
    # tasks whose data the Hugging Face datasets cache holds).
    lm_eval_tasks: list[str] = Field(default_factory=list)
    lm_eval_include: list[str] = Field(default_factory=list)  # folders of task YAMLs
    lm_eval_limit: int | None = Field(default=None, gt=0)  # first N docs of the other tasks
    contamination: bool = True  # 13-gram overlap of val/HellaSwag items with the train split
    precision: Precision = "auto"
    device: Device = "auto"
