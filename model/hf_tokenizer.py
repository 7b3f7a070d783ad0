"""Hugging Face tokenizer files for a tiktoken Encoding (GPT-2's or one the tokenize stage
trained), so `transformers.AutoTokenizer.from_pretrained(DIR)` gives the ids tiktoken gives.

    from model.hf_tokenizer import write_hf_tokenizer
    write_hf_tokenizer(encoding, Path("out/mini"), model_max_length=256)

`tokenizer.json` is the `tokenizers` library's format, written here as plain JSON (neither
tokenizers nor transformers is needed to export):
- pre-tokenizer: the Encoding's own split regex, then the byte-to-unicode mapping of GPT-2
  (`ByteLevel`, use_regex false), so the model sees the same pieces tiktoken does;
- model: BPE whose vocab maps each token (as mapped unicode) to its tiktoken rank, and whose
  merges are, for each multi-byte token in rank order, the two parts BPE over lower ranks
  splits it into (tiktoken merges by the rank of the result, HF by merge order: the same
  order); `ignore_merges` makes a piece that is itself a token one id, as tiktoken does;
- `<|endoftext|>` an added special token, `split_special_tokens` so the literal string in text
  stays ordinary text (tiktoken encode_ordinary); decoder ByteLevel; no normalizer, no BOS.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (openai/gpt-2 encoder.py): bytes
    that are printable Latin-1 stay themselves, the other 68 map to U+0100 upwards."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """`token` merged greedily (lowest rank first) using only ranks below `max_rank`."""
    parts = [bytes([b]) for b in token]
    while True:
        best: tuple[int, int] | None = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def tokenizer_json(encoding: Any) -> dict[str, Any]:
    """The `tokenizer.json` content of a tiktoken Encoding (see the module docstring)."""
    ranks: dict[bytes, int] = encoding._mergeable_ranks  # tiktoken keeps no public accessor
    to_text = byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_text[b] for b in token)

    vocab = {text(token): rank for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) == 2:  # a token BPE cannot reach is still one id by ignore_merges
            merges.append(f"{text(parts[0])} {text(parts[1])}")
    added = [
        {
            "id": int(token_id),
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for name, token_id in sorted(encoding._special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": encoding._pat_str},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config(encoding: Any, model_max_length: int | None) -> dict[str, Any]:
    """`tokenizer_config.json`: the fast tokenizer class (no remote code) and EOT as BOS/EOS."""
    eot = "<|endoftext|>"
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": None,
        "pad_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        # A literal "<|endoftext|>" in text is ordinary text, as in tiktoken encode_ordinary
        # and the tokenize stage; EOT is added by id.
        "split_special_tokens": True,
        "model_max_length": model_max_length or int(1e30),
        "llmforge_tokenizer": encoding.name,
    }


def write_hf_tokenizer(encoding: Any, out_dir: Path, model_max_length: int | None = None) -> None:
    """Write tokenizer.json and tokenizer_config.json for `encoding` into `out_dir` (0644)."""
    out_dir = Path(out_dir)
    contents = {
        "tokenizer.json": _tokenizer_json_text(encoding),
        "tokenizer_config.json": _dump(tokenizer_config(encoding, model_max_length)),
    }
    for name, value in contents.items():
        path = out_dir / name
        path.write_text(value, encoding="utf-8")
        os.chmod(path, 0o644)


@functools.lru_cache(maxsize=4)
def _tokenizer_json_text(encoding: Any) -> str:
    """Cached by Encoding (a name names one tokenizer: GPT-2, or bpe-<vocab>-<sha12>): the
    merges of GPT-2's 50k tokens take a second to work out."""
    return _dump(tokenizer_json(encoding))


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=1) + "\n"
