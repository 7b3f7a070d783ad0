"""The model a run starts from (`train.init_from`): GPT-2 weights in Hugging Face's layout, or
an earlier run's checkpoint, read into our GPT so training continues from it.

    from model.base import read_base
    base = read_base("gpt2-small/")  # config.json + model.safetensors (or pytorch_model.bin)
    arch = base.model_config(TrainConfig(init_from="gpt2-small/", context_length=256))
    model = GPT(arch); model.load_state_dict(base.state_dict(arch))

A Hugging Face folder is the reverse of our hf export (model/export.py hf_config/hf_tensors):
GPT2Config becomes a ModelConfig with learned positions, biases, LayerNorm (eps 1e-5, the only
one our LayerNorm has), the head tied as `tie_word_embeddings` says, and `activation_function`
`gelu_new` (GPT-2's tanh GELU) as mlp "gelu_tanh", `gelu` as our exact "gelu"; Conv1D weights
(in, out) are transposed back into nn.Linear's (out, in). The logits are then the same.

The base's identity is its content: sha256 over the names and sha256 of its weight file(s) and
config.json (a checkpoint: the file), which enters the train version id (model/stages.py
train_inputs) and is recorded in the checkpoint and train.json. Its tokenizer must be the
token dataset's: GPT-2's for a GPT-2 folder (vocab 50,257; our own exports name theirs in
llmforge.json), a checkpoint's by name and trained-tokenizer file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from model.checkpoint import CHECKPOINT_NAME, load_checkpoint
from model.config import GPT2_VOCAB_SIZE, ModelConfig, TrainConfig
from pipeline.errors import DataError
from pipeline.store.integrity import file_sha256

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # save_pretrained's, newest first
PROVENANCE = "llmforge.json"  # beside our own hf exports: names the tokenizer
# GPT-2's activations (transformers activations.py ACT2FN) -> our MLP: gelu_new and
# gelu_pytorch_tanh are the tanh approximation, gelu the exact erf form.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, what our GPT uses
# Conv1D modules of a GPT-2 block -> ours; their weights are stored (in, out). The hf export
# (model/export.py hf_tensors) writes them back through the same table.
GPT2_LINEARS = (
    ("attn.c_attn", "attn.qkv"),
    ("attn.c_proj", "attn.proj"),
    ("mlp.c_fc", "mlp.fc"),
    ("mlp.c_proj", "mlp.proj"),
)
BaseKind = Literal["hf-gpt2", "checkpoint"]


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def content_sha256(files: list[Path]) -> str:
    """sha256 over each file's name and sha256, in name order: the same files anywhere give
    the same hash. Each file is hashed once per (size, mtime) in a process (planning a run
    and then training it both ask)."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        stat = path.stat()
        sha = _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)
        digest.update(f"{path.name}\0{sha}\n".encode())
    return digest.hexdigest()


@dataclass
class Base:
    """A model to start from: where it is, what it computes, its tokenizer and content hash."""

    ref: str  # train.init_from as given
    kind: BaseKind
    path: Path  # the Hugging Face folder, or the checkpoint file
    files: list[Path]  # what the content hash covers
    arch: ModelConfig  # at the base's own context length
    tokenizer: str | None  # gpt2, bpe-<vocab>-<sha12>; None when nothing says which
    tokenizer_spec: str | None = None  # a trained tokenizer's file text (checkpoints)
    sha256: str = ""
    _state: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.sha256 = self.sha256 or content_sha256(self.files)

    @property
    def source(self) -> Path:
        """The file a problem with the base is reported against."""
        return self.path / HF_CONFIG if self.kind == "hf-gpt2" else self.path

    def record(self) -> dict[str, Any]:
        """What checkpoints and train.json keep about the base."""
        return {
            "ref": self.ref,
            "kind": self.kind,
            "path": str(self.path.resolve()),
            "files": sorted(p.name for p in self.files),
            "sha256": self.sha256,
            "tokenizer": self.tokenizer,
        }

    def model_config(self, cfg: TrainConfig) -> ModelConfig:
        """The base's architecture, with the run's context_length (at most the base's: its
        learned positions end there) and dropout (None keeps the base's)."""
        T = cfg.context_length or self.arch.context_length
        if self.arch.context_length < T:
            raise DataError(
                f"{self.source}: train.context_length={T} but the base model has "
                f"{self.arch.context_length} positions; use at most {self.arch.context_length}"
            )
        dropout = self.arch.dropout if cfg.dropout is None else cfg.dropout
        return dataclasses.replace(self.arch, context_length=T, dropout=dropout)

    def check_tokenizer(self, tokenizer: str, vocab_size: int, spec: str | None, data: Any) -> None:
        """One line naming the base's file and both tokenizers unless the token dataset
        `data` (tokenizer name, vocabulary, trained-tokenizer file) is the base's."""
        same = (
            self.tokenizer == tokenizer
            and self.arch.vocab_size == vocab_size
            and (self.kind != "checkpoint" or (self.tokenizer_spec or None) == spec)
        )
        if not same:
            theirs = self.tokenizer or "unknown (no llmforge.json, not GPT-2's vocabulary)"
            raise DataError(
                f"{self.source}: base model tokenizer {theirs} (vocab {self.arch.vocab_size}) "
                f"but token dataset {data} uses {tokenizer} (vocab {vocab_size}); tokenize "
                "with the base model's tokenizer"
            )

    def state_dict(self, arch: ModelConfig) -> dict[str, torch.Tensor]:
        """Our GPT's weights for `arch` (this base's, perhaps at a shorter context)."""
        if self._state is None:  # a GPT-2 folder; read_base gave a checkpoint's weights already
            self._state = _hf_state(self.path, self.arch)
        state = dict(self._state)
        if arch.positional == "learned":
            state["pos_emb.weight"] = state["pos_emb.weight"][: arch.context_length]
        return state


def _hf_weights(folder: Path) -> Path | None:
    return next((folder / n for n in HF_WEIGHTS if (folder / n).is_file()), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object")
    return data


def gpt2_model_config(hf: dict[str, Any], path: Path) -> ModelConfig:
    """The ModelConfig computing what `GPT2LMHeadModel` with GPT2Config `hf` computes, or one
    line naming the field our GPT cannot reproduce (transformers configuration_gpt2.py)."""
    if hf.get("model_type") != "gpt2":
        raise DataError(
            f"{path}: model_type {hf.get('model_type')!r}; train.init_from reads GPT-2-layout "
            "folders (GPT2LMHeadModel) or llmforge checkpoints"
        )
    d = int(hf.get("n_embd", 768))  # GPT2Config's defaults are GPT-2 small's
    act = hf.get("activation_function", "gelu_new")
    problems = []
    if act not in ACTIVATIONS:
        problems.append(f"activation_function {act!r} (we have {', '.join(ACTIVATIONS)})")
    if hf.get("n_inner") not in (None, 4 * d):
        problems.append(f"n_inner {hf['n_inner']} (ours is 4 x n_embd)")
    if abs(float(hf.get("layer_norm_epsilon", LAYER_NORM_EPS)) - LAYER_NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (ours is 1e-5)")
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if bool(hf.get(flag, wanted)) != wanted:
            problems.append(f"{flag} {hf[flag]}")
    if problems:
        raise DataError(f"{path}: our GPT cannot compute this GPT-2: " + "; ".join(problems))
    try:
        return ModelConfig(
            vocab_size=int(hf.get("vocab_size", GPT2_VOCAB_SIZE)),
            context_length=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
            d_model=d,
            n_heads=int(hf.get("n_head", 12)),
            n_layers=int(hf.get("n_layer", 12)),
            dropout=float(hf.get("resid_pdrop", 0.1)),
            bias=True,
            positional="learned",
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            mlp=ACTIVATIONS[act],
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: bad GPT-2 config ({exc})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own types for bad files
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DataError(f"{path}: not readable weights ({reason})") from None


def _hf_state(folder: Path, arch: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from a GPT-2 folder's tensors (names with or without `transformer.`:
    the hub's gpt2 files have none; the attention-mask buffers of old .bin files dropped)."""
    weights = _hf_weights(folder)
    assert weights is not None  # read_base found it
    tensors = {
        name.removeprefix("transformer."): tensor.float()
        for name, tensor in _load_tensors(weights).items()
        if not name.endswith((".attn.bias", ".attn.masked_bias"))
    }

    def take(name: str) -> torch.Tensor:
        if name not in tensors:
            raise DataError(f"{weights}: no tensor {name!r}; not GPT-2 weights for {HF_CONFIG}")
        return tensors.pop(name)

    state = {"tok_emb.weight": take("wte.weight"), "pos_emb.weight": take("wpe.weight")}
    for i in range(arch.n_layers):
        hf, ours = f"h.{i}", f"blocks.{i}"
        for ln in ("ln_1", "ln_2"):
            state[f"{ours}.{ln}.weight"] = take(f"{hf}.{ln}.weight")
            state[f"{ours}.{ln}.bias"] = take(f"{hf}.{ln}.bias")
        for hf_name, our_name in GPT2_LINEARS:
            state[f"{ours}.{our_name}.weight"] = take(f"{hf}.{hf_name}.weight").t().contiguous()
            state[f"{ours}.{our_name}.bias"] = take(f"{hf}.{hf_name}.bias")
    state["ln_f.weight"], state["ln_f.bias"] = take("ln_f.weight"), take("ln_f.bias")
    head = tensors.pop("lm_head.weight", None)  # save_pretrained leaves a tied head out
    if arch.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    elif head is None:
        raise DataError(f"{weights}: tie_word_embeddings is false but there is no lm_head.weight")
    else:
        state["lm_head.weight"] = head
    if tensors:
        raise DataError(f"{weights}: tensors GPT-2 does not have: {sorted(tensors)[:3]}")
    return state


def _hf_tokenizer(folder: Path, vocab_size: int) -> str | None:
    """Our own export names its tokenizer in llmforge.json; another GPT-2 folder with GPT-2's
    vocabulary uses GPT-2's BPE (the hub's gpt2, distilgpt2 and their fine-tunes)."""
    if (folder / PROVENANCE).is_file():
        return _read_json(folder / PROVENANCE).get("tokenizer")
    return "gpt2" if vocab_size == GPT2_VOCAB_SIZE else None


def locate(ref: str, storage_root: str | Path | None = None) -> tuple[BaseKind, Path]:
    """What `ref` names: a GPT-2 folder, a checkpoint (file or folder holding one), or a run
    id under the storage root (its train version's checkpoint)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / HF_CONFIG).is_file() and _hf_weights(path) is not None:
            return "hf-gpt2", path
        if (path / CHECKPOINT_NAME).is_file():
            return "checkpoint", path / CHECKPOINT_NAME
        raise DataError(
            f"train.init_from={ref}: neither a Hugging Face GPT-2 folder ({HF_CONFIG} + "
            f"{' or '.join(HF_WEIGHTS)}) nor a folder with {CHECKPOINT_NAME}"
        )
    if path.is_file():
        return "checkpoint", path
    if "/" in ref or "\\" in ref:  # a path, not a run id
        raise DataError(f"train.init_from={ref}: no such file or folder")
    from model.export import checkpoint_for  # a run id

    try:
        return "checkpoint", checkpoint_for(ref, storage_root)
    except DataError as exc:
        raise DataError(f"train.init_from={ref}: {exc}") from None


def _files(kind: BaseKind, path: Path) -> list[Path]:
    if kind == "hf-gpt2":
        weights = _hf_weights(path)
        assert weights is not None  # locate found it
        return [path / HF_CONFIG, weights]
    return [path]


def base_input(ref: str, storage_root: str | Path | None = None) -> dict[str, str]:
    """How the base `ref` names enters a train version id: by content, as user files do
    (its files' hashes alone: planning a run loads no weights)."""
    kind, path = locate(ref, storage_root)
    return {"source": "init_from", "kind": kind, "sha256": content_sha256(_files(kind, path))}


def read_base(ref: str, storage_root: str | Path | None = None) -> Base:
    """The base model `ref` names, its config read and its content hashed; weights load when
    `state_dict` is first asked for (a GPT-2 folder) or now (a checkpoint holds both)."""
    kind, path = locate(ref, storage_root)
    if kind == "hf-gpt2":
        arch = gpt2_model_config(_read_json(path / HF_CONFIG), path / HF_CONFIG)
        tokenizer = _hf_tokenizer(path, arch.vocab_size)
        return Base(ref, kind, path, _files(kind, path), arch, tokenizer)
    state = load_checkpoint(path)
    arch = ModelConfig.from_dict(state["model_config"])
    base = Base(
        ref,
        kind,
        path,
        _files(kind, path),
        arch,
        state.get("tokenizer") or "gpt2",
        state.get("tokenizer_spec"),
    )
    base._state = state["model"]
    return base
