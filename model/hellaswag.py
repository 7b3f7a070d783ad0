"""HellaSwag multiple choice, completion style (build-nanogpt, llm.c).

Each item is a context and 4 endings. The model reads `ctx + " " + ending` for each ending;
the ending with the lowest summed token loss is its answer (acc), and the one with the lowest
mean per-token loss its length-normalized answer (acc_norm). GPT-2 124M scores 28.6% / 29.6%
this way; chance is 25% (REFERENCE, Evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.contamination import iter_jsonl_items
from pipeline.errors import DataError

# model(idx (B, T)) -> (logits (B, T, V), anything): GPT.forward without targets.
LogitsModel = Callable[[torch.Tensor], tuple[torch.Tensor, Any]]


def iter_items(path: Path | str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Validated items of a HellaSwag JSONL file; a bad line is an error naming its number."""
    return iter_jsonl_items(path, _problem, limit)


def _problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "expected a JSON object"
    if not isinstance(item.get("ctx"), str):
        return "field 'ctx' must be a string"
    endings = item.get("endings")
    if not isinstance(endings, list) or len(endings) != 4:
        return "field 'endings' must be a list of 4 strings"
    if not all(isinstance(e, str) and e for e in endings):
        return "field 'endings' must be a list of 4 non-empty strings"
    label = item.get("label")
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 4:
        return f"field 'label' must be 0..3, got {item.get('label')!r}"
    return None


def render(item: dict[str, Any], encode: Callable[[str], list[int]], context_length: int):
    """Token rows (4, L), a mask (4, L) of ending tokens, and the label.

    Rows are right-padded with 0 (masked out); a context too long for the model loses tokens
    from its left so every ending fits whole.
    """
    ctx = encode(item["ctx"])
    rows, masks = [], []
    for ending in item["endings"]:
        end = encode(" " + ending)  # GPT-2 BPE: the space belongs to the ending's first word
        tokens = (ctx + end)[-(context_length + 1) :]  # +1: the first token is never a target
        rows.append(tokens)
        masks.append([0] * (len(tokens) - len(end)) + [1] * min(len(end), len(tokens)))
    width = max(len(r) for r in rows)
    tokens = torch.zeros(4, width, dtype=torch.long)
    mask = torch.zeros(4, width, dtype=torch.long)
    for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m)
    return tokens, mask, int(item["label"])


@torch.no_grad()
def score(
    model: LogitsModel, tokens: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean loss (nats) of each row's ending tokens: two (4,) tensors."""
    logits, _ = model(tokens[:, :-1])  # (4, L-1, V): predictions for tokens 1..L-1
    targets = tokens[:, 1:]
    losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (4, L-1)
    target_mask = mask[:, 1:].float()
    summed = (losses * target_mask).sum(dim=1)
    return summed, summed / target_mask.sum(dim=1)


def evaluate_hellaswag(
    model: LogitsModel,
    path: Path | str,
    encode: Callable[[str], list[int]],
    context_length: int,
    device: torch.device | str = "cpu",
    limit: int | None = None,
) -> dict[str, Any]:
    """acc (lowest summed loss), acc_norm (lowest mean loss per token, build-nanogpt's) and
    acc_char (lowest loss per character of the ending: lm-evaluation-harness's acc_norm) over
    the file's items."""
    n = correct = correct_norm = correct_char = 0
    for item in iter_items(path, limit):
        tokens, mask, label = render(item, encode, context_length)
        summed, mean = score(model, tokens.to(device), mask.to(device))
        per_char = summed.cpu() / torch.tensor([float(len(e)) for e in item["endings"]])
        correct += int(summed.argmin().item() == label)
        correct_norm += int(mean.argmin().item() == label)
        correct_char += int(per_char.argmin().item() == label)
        n += 1
    if n == 0:
        raise DataError(f"{path}: no HellaSwag items")
    return {
        "n": n,
        "acc": correct / n,
        "acc_norm": correct_norm / n,
        "acc_char": correct_char / n,
        "path": str(path),
    }
