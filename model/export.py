"""Export a trained checkpoint so it can be used elsewhere: safetensors, or Hugging Face GPT-2.

    from model.export import export, load_exported
    export(Path("versions/train/ab12/checkpoint.pt"), Path("out/mini"), "safetensors")
    model = load_exported(Path("out/mini"))  # a GPT in eval mode

`safetensors` (every preset): `model.safetensors` with our parameter names (a tied head is
stored once, as `lm_head.weight`) and `config.json` with the model config, the tokenizer, the
vocabulary size and where the weights came from (checkpoint, step, token dataset, the
training summary `train.json`). `load_exported` reads it back.

Both formats get a model card, `README.md` in Hugging Face's format (model/card.py): what the
model is, its data's lineage and counts, its evaluation, how to load it. Both also get the
tokenizer as Hugging Face files (`tokenizer.json`,
`tokenizer_config.json`, model/hf_tokenizer.py) from the checkpoint alone: GPT-2's, or the
BPE trained by the tokenize stage (its file text is in the checkpoint), so
`transformers.AutoTokenizer.from_pretrained(DIR)` gives the ids training used. Every file is
0644 (safetensors writes 0600).

`hf`: the layout `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads: `config.json`
with GPT2Config fields and `model.safetensors` with Hugging Face names, the Linear weights
transposed into GPT-2's Conv1D (in, out) layout. transformers is not needed to export. Our
choices that GPT-2 does not have are written so the logits stay the same (tested to 1e-4):
- GELU: ours is the exact erf form (`F.gelu`); HF GPT-2 defaults to `gelu_new` (tanh), so the
  config says `activation_function: "gelu"`, HF's exact one (`gelu_new` for mlp "gelu_tanh",
  the form of imported GPT-2 weights, model/base.py).
- LayerNorm eps: torch's default 1e-5, which is HF GPT-2's `layer_norm_epsilon` default.
- no biases (`bias=False`): GPT-2 always has them; zero biases compute the same thing.
- untied head: `tie_word_embeddings: false` and its own `lm_head.weight`.
- sinusoidal positions: our table, scaled sum `tok_emb * sqrt(d) + table`, becomes GPT-2's
  `wte = tok_emb * sqrt(d)` and `wpe = table` (context_length rows); since that scales the
  token embedding, a tied head is then written untied. Fine-tuning in transformers would
  train the positions, which ours keeps fixed; the exported `llmforge.json` notes it.

Rotary models (positional "rope", with RMSNorm and no biases: the modern recipe) export as
the Llama-family class whose blocks compute the same thing, all in transformers itself (no
trust_remote_code): gated SwiGLU MLP -> Qwen3ForCausalLM with QK-norm, LlamaForCausalLM
without; a plain MLP (ReLU² "relu2", or exact "gelu") -> ApertusForCausalLM with QK-norm
(per-head q/k RMSNorm, non-gated up/down MLP), ArceeForCausalLM without. Our parameter-free
RMSNorms become weights of ones; the fused qkv splits into q/k/v_proj; our rotation pairs
dimensions i and i + head_dim/2 as their `rotate_half` does; a normalized embedding
(`embed_norm`) is a function of the token alone, so the table is written normalized (and a
tied head then untied).

A vocabulary padded for speed (rows beyond `ModelConfig.vocab_size` in the token embedding or
lm_head, as nanoGPT's 50,304) is cut back to vocab_size: padded ids are never real tokens.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from model.base import GPT2_LINEARS
from model.card import CardContext, model_card
from model.checkpoint import CHECKPOINT_NAME, load_checkpoint
from model.config import ModelConfig
from model.gpt import GPT, RMS_EPS, mlp_hidden, rms_norm, sinusoidal_table
from model.hf_tokenizer import TOKENIZER_FILES, write_hf_tokenizer
from pipeline.errors import DataError

ExportFormat = Literal["safetensors", "hf"]
FORMATS: tuple[str, ...] = ("safetensors", "hf")
FORMAT_NAME = "llmforge-gpt"  # config.json "format" of our safetensors layout
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PROVENANCE = "llmforge.json"  # beside an hf export: where it came from, what was converted
CARD = "README.md"  # the model card (model/card.py)
VOCAB_KEYS = ("tok_emb.weight", "lm_head.weight")  # first dimension is the vocabulary


def unpadded_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict with vocabulary rows beyond cfg.vocab_size cut off, as fp32 tensors."""
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu", torch.float32)
        if name in VOCAB_KEYS and tensor.size(0) > cfg.vocab_size:
            tensor = tensor[: cfg.vocab_size]
        out[name] = tensor.contiguous()
    return out


def checkpoint_tokenizer(state: dict[str, Any]) -> Any:
    """The checkpoint's tiktoken Encoding (its trained tokenizer's file, or GPT-2 by name),
    None if a named one cannot be loaded here (no BPE files offline)."""
    from model.data import checkpoint_encoding

    try:
        return checkpoint_encoding(state)
    except DataError:
        return None


def _publish(path: Path) -> None:
    """Readable by all (0644): safetensors' save_file creates its file 0600."""
    os.chmod(path, 0o644)


def source_info(checkpoint: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Where the weights came from: checkpoint, step, data, and the training summary file."""
    checkpoint = Path(checkpoint).resolve()
    summary = checkpoint.parent / "train.json"
    return {
        "checkpoint": str(checkpoint),
        "step": state.get("step"),
        "tokens_seen": state.get("tokens_seen"),
        "token_dataset": state.get("token_dataset"),
        "train_summary": str(summary) if summary.is_file() else None,
    }


def our_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our names; a tied embedding is stored once (safetensors refuses shared tensors)."""
    tensors = unpadded_state(state, cfg)
    if cfg.tie_embeddings:
        tensors.pop("tok_emb.weight", None)
    return {name: t.clone() for name, t in tensors.items()}


def hf_config(cfg: ModelConfig, eot_token: int | None, tied: bool) -> dict[str, Any]:
    """GPT2Config fields (transformers' configuration_gpt2.py) describing our model."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,  # 4 * n_embd, as our MLP
        # exact erf GELU = our F.gelu (HF's default is gelu_new, the tanh form = gelu_tanh)
        "activation_function": "gelu_new" if cfg.mlp == "gelu_tanh" else "gelu",
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": 1e-5,  # torch.nn.LayerNorm's default eps
        "initializer_range": 0.02,
        "scale_attn_weights": True,  # 1/sqrt(head_dim), as scaled_dot_product_attention
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }


# (gated MLP, QK-norm) -> the transformers class with exactly those blocks.
LLAMA_FAMILY = {
    (True, True): ("Qwen3ForCausalLM", "qwen3"),
    (True, False): ("LlamaForCausalLM", "llama"),
    (False, True): ("ApertusForCausalLM", "apertus"),
    (False, False): ("ArceeForCausalLM", "arcee"),
}


def hf_family(cfg: ModelConfig) -> tuple[str, str]:
    """(architecture, model_type) of the transformers class that computes `cfg`'s model."""
    problems = []
    if cfg.positional == "rope":
        if cfg.norm != "rmsnorm":
            problems.append("rope with LayerNorm (Llama-family classes use RMSNorm)")
        if cfg.bias:
            problems.append("rope with biases (the Llama-family export has none)")
        if not problems:
            return LLAMA_FAMILY[(cfg.mlp == "swiglu", cfg.qk_norm)]
    else:
        for wanted, field in (
            (cfg.norm == "layernorm", f"norm={cfg.norm}"),
            (cfg.mlp in ("gelu", "gelu_tanh"), f"mlp={cfg.mlp}"),
            (not cfg.qk_norm, "qk_norm"),
            (not cfg.embed_norm, "embed_norm"),
        ):
            if not wanted:
                problems.append(f"{field} with {cfg.positional} positions (GPT-2 has no such)")
        if not problems:
            return "GPT2LMHeadModel", "gpt2"
    raise DataError("hf export: no transformers class fits this model: " + "; ".join(problems))


def llama_config(cfg: ModelConfig, eot_token: int | None, tied: bool) -> dict[str, Any]:
    """LlamaConfig-style fields (shared by the Qwen3, Apertus and Arcee configs)."""
    architecture, model_type = hf_family(cfg)
    act = {"swiglu": "silu", "relu2": "relu2", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[
        cfg.mlp
    ]  # transformers ACT2FN names
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": mlp_hidden(cfg),
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": act,
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": cfg.dropout,
        "initializer_range": 0.02,
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
        "pad_token_id": None,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    }


def llama_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict, bool, list[str]]:
    """(Llama-family tensors, whether the head stays tied, notes on what was converted)."""
    s = unpadded_state(state, cfg)
    d, notes = cfg.d_model, ["parameter-free RMSNorms written as weights of ones"]
    out: dict[str, torch.Tensor] = {}
    tied = cfg.tie_embeddings
    wte = s.get("tok_emb.weight", s["lm_head.weight"])
    if cfg.embed_norm:
        wte = rms_norm(wte)  # per row, exactly what forward computes per token
        notes.append("embedding RMS norm folded into embed_tokens")
        if tied:
            tied = False
            notes.append("tied head written untied (embed_tokens carries the norm)")
    out["model.embed_tokens.weight"] = wte
    apertus = hf_family(cfg)[1] == "apertus"
    norm_1, norm_2 = (
        ("attention_layernorm", "feedforward_layernorm")
        if apertus
        else ("input_layernorm", "post_attention_layernorm")
    )
    ones = torch.ones(d)
    for i in range(cfg.n_layers):
        ours, hf = f"blocks.{i}", f"model.layers.{i}"
        out[f"{hf}.{norm_1}.weight"] = ones
        out[f"{hf}.{norm_2}.weight"] = ones
        q, k, v = s[f"{ours}.attn.qkv.weight"].split(d, dim=0)  # nn.Linear (out, in) rows
        out[f"{hf}.self_attn.q_proj.weight"] = q
        out[f"{hf}.self_attn.k_proj.weight"] = k
        out[f"{hf}.self_attn.v_proj.weight"] = v
        out[f"{hf}.self_attn.o_proj.weight"] = s[f"{ours}.attn.proj.weight"]
        if cfg.qk_norm:
            out[f"{hf}.self_attn.q_norm.weight"] = torch.ones(cfg.head_dim)
            out[f"{hf}.self_attn.k_norm.weight"] = torch.ones(cfg.head_dim)
        if cfg.mlp == "swiglu":
            out[f"{hf}.mlp.gate_proj.weight"] = s[f"{ours}.mlp.gate.weight"]
        out[f"{hf}.mlp.up_proj.weight"] = s[f"{ours}.mlp.fc.weight"]
        out[f"{hf}.mlp.down_proj.weight"] = s[f"{ours}.mlp.proj.weight"]
    out["model.norm.weight"] = ones
    if not tied:
        out["lm_head.weight"] = s["lm_head.weight"]
    return {name: t.contiguous().clone() for name, t in out.items()}, tied, notes


def hf_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict, bool, list[str]]:
    """(HF GPT-2 tensors, whether the head stays tied, notes on what was converted)."""
    if hf_family(cfg)[1] != "gpt2":
        return llama_tensors(state, cfg)
    s = unpadded_state(state, cfg)
    d, notes = cfg.d_model, []
    out: dict[str, torch.Tensor] = {}

    def bias(name: str, size: int) -> torch.Tensor:
        return s[name] if name in s else torch.zeros(size)

    wte = s.get("tok_emb.weight", s["lm_head.weight"])
    tied = cfg.tie_embeddings
    if cfg.positional == "learned":
        out["transformer.wte.weight"] = wte
        out["transformer.wpe.weight"] = s["pos_emb.weight"]
    else:
        out["transformer.wte.weight"] = wte * math.sqrt(d)
        out["transformer.wpe.weight"] = sinusoidal_table(cfg.context_length, d)
        notes.append("sinusoidal positions written as wpe, sqrt(d_model) folded into wte")
        if tied:
            tied = False
            notes.append("tied head written untied (wte carries the sqrt(d_model) scale)")
    if not cfg.bias:
        notes.append("bias=False written as zero biases")
    for i in range(cfg.n_layers):
        ours, hf = f"blocks.{i}", f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            out[f"{hf}.{ln}.weight"] = s[f"{ours}.{ln}.weight"]
            out[f"{hf}.{ln}.bias"] = bias(f"{ours}.{ln}.bias", d)
        for hf_name, our_name in GPT2_LINEARS:
            weight = s[f"{ours}.{our_name}.weight"]  # nn.Linear: (out, in)
            out[f"{hf}.{hf_name}.weight"] = weight.t().contiguous()  # Conv1D: (in, out)
            out[f"{hf}.{hf_name}.bias"] = bias(f"{ours}.{our_name}.bias", weight.size(0))
    out["transformer.ln_f.weight"] = s["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", d)
    if not tied:
        out["lm_head.weight"] = s["lm_head.weight"]
    return {name: t.contiguous().clone() for name, t in out.items()}, tied, notes


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _is_export(folder: Path) -> bool:
    """An earlier export (ours or hf) that a rerun may replace."""
    names = {p.name for p in folder.iterdir()}
    return names <= {WEIGHTS, CONFIG, PROVENANCE, CARD, *TOKENIZER_FILES} and CONFIG in names


def export(
    checkpoint: Path,
    out_dir: Path,
    fmt: ExportFormat = "safetensors",
    context: CardContext | None = None,
    license: str | None = None,
) -> dict[str, Any]:
    """Write the export of `checkpoint` into `out_dir` (replacing an earlier export there),
    with a model card `README.md` (model/card.py) from the checkpoint and `context`, the run
    behind it when known (`card_context`); `license` goes into the card's header.

    The folder is written beside `out_dir` and renamed into place, so a failure never leaves
    half an export. Returns the config that was written.
    """
    if fmt not in FORMATS:
        raise DataError(f"export: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not _is_export(out_dir))
    ):
        raise DataError(f"{out_dir}: exists and is not an earlier export; choose a new folder")
    state = load_checkpoint(checkpoint)
    cfg = ModelConfig.from_dict(state["model_config"])
    tokenizer = state.get("tokenizer") or "gpt2"
    encoding = checkpoint_tokenizer(state)
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": cfg.to_dict(),
        "tokenizer": tokenizer,
        "vocab_size": cfg.vocab_size,
        "eot_token": None if encoding is None else int(encoding.eot_token),
        "source": source_info(checkpoint, state),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        ours = our_tensors(state["model"], cfg)  # also what the card counts as parameters
        if fmt == "safetensors":
            save_file(ours, tmp / WEIGHTS, {"format": "pt"})
            written = info
        else:
            tensors, tied, notes = hf_tensors(state["model"], cfg)
            save_file(tensors, tmp / WEIGHTS, {"format": "pt"})
            make_config = hf_config if hf_family(cfg)[1] == "gpt2" else llama_config
            written = make_config(cfg, info["eot_token"], tied)
            _write_json(tmp / PROVENANCE, info | {"hf_conversions": notes})
        _write_json(tmp / CONFIG, written)
        architecture = (written.get("architectures") or [FORMAT_NAME])[0]
        params = sum(t.numel() for t in ours.values())
        card = model_card(state, checkpoint, fmt, context, architecture, params, license)
        (tmp / CARD).write_text(card, encoding="utf-8")
        if encoding is not None:  # tokenizer.json + tokenizer_config.json for AutoTokenizer
            write_hf_tokenizer(encoding, tmp, cfg.context_length)
        for path in tmp.iterdir():
            _publish(path)
        old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old")
        if out_dir.exists():
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def read_export_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; is {folder} an `llmforge export` folder?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if data.get("model_type"):
        kind = "GPT-2" if data["model_type"] == "gpt2" else data["model_type"]
        raise DataError(
            f"{folder}: a Hugging Face {kind} export; load it with "
            "transformers.AutoModelForCausalLM.from_pretrained"
        )
    if data.get("format") != FORMAT_NAME or "model_config" not in data:
        raise DataError(f"{path}: not an llmforge export (format {data.get('format')!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{path}: format_version {data['format_version']} is newer than this code")
    return data


def load_exported(folder: Path | str, device: torch.device | str = "cpu") -> GPT:
    """A GPT in eval mode from an `llmforge export --format safetensors` folder."""
    folder = Path(folder)
    data = read_export_config(folder)
    cfg = ModelConfig.from_dict(data["model_config"])
    try:
        tensors = load_file(folder / WEIGHTS)
    except FileNotFoundError:
        raise DataError(f"{folder / WEIGHTS}: not found") from None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise DataError(f"{folder / WEIGHTS}: not readable safetensors ({exc})") from None
    model = GPT(cfg)
    if cfg.tie_embeddings:
        tensors.setdefault("tok_emb.weight", tensors.get("lm_head.weight"))
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(tensors))
    unexpected = sorted(set(tensors) - set(wanted))
    if missing or unexpected:
        raise DataError(
            f"{folder}: weights do not fit the config: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name in VOCAB_KEYS:
        # A model built with a padded vocabulary keeps its extra rows as initialised.
        have, want = tensors[name], wanted[name]
        if have.size(0) < want.size(0):
            tensors[name] = torch.cat([have, want[have.size(0) :]])
    model.load_state_dict(tensors)
    return model.to(device).eval()


def checkpoint_for(ref: str | Path, storage_root: str | Path | None) -> Path:
    """The checkpoint a command means: a checkpoint file, a folder holding checkpoint.pt (a
    train version or `stage train` output), or a run id recorded under the storage root."""
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / CHECKPOINT_NAME).is_file():
            return path / CHECKPOINT_NAME
        raise DataError(f"{path}: no {CHECKPOINT_NAME} in this folder")
    if storage_root is None:
        raise DataError(f"{ref}: no such file or folder, and no storage root to find a run in")
    from pipeline.store.runs import RunRecord
    from pipeline.store.versions import Storage, load_version

    storage = Storage.at(storage_root)
    record = RunRecord.load(storage, str(ref))
    train = (record.data.get("versions") or {}).get("train")
    if not train:
        raise DataError(f"run '{ref}' has no train version (did it train?)")
    version = load_version(storage, "train", train["version_id"])
    if not version.folder.is_file(CHECKPOINT_NAME):
        where = version.folder.url_of(CHECKPOINT_NAME)
        raise DataError(f"{where}: not found (train version {train['version_id']})")
    if version.folder.is_local:
        return version.path / CHECKPOINT_NAME
    # A URL root: a local copy in a temp folder owned by this process, which the next run's
    # cleanup (or `llmforge runs gc`) removes once the process is gone.
    local = storage.new_tmp_dir(f"export-{version.version_id}") / CHECKPOINT_NAME
    version.folder.get(CHECKPOINT_NAME, local)
    return local
