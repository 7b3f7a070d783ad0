"""HellaSwag documents as the harness's stock task builds them (lm_eval/tasks/hellaswag/utils.py).

The stock task reads `ctx_a` and `ctx_b` (the context up to its last sentence, and the
unfinished noun phrase after it, which it capitalizes). HellaSwag's own files have both; files
that keep only `ctx` (the trimmed JSONL in ../shared/data/hellaswag) get them back by
splitting `ctx` at its last ". " when what follows starts in lower case, which is where
ActivityNet items put `ctx_b` ("A man is sitting on a roof. he" -> "... roof. He", the
harness's prompt for that item); any other context is all `ctx_a`, as a WikiHow item with an
empty `ctx_b` is.
"""

from __future__ import annotations

from typing import Any

from lm_eval.tasks.hellaswag.utils import preprocess  # the harness's own cleaning


def split_context(doc: dict[str, Any]) -> tuple[str, str]:
    """(ctx_a, ctx_b) of a HellaSwag item, from the fields or else from `ctx`."""
    if doc.get("ctx_a") is not None and doc.get("ctx_b") is not None:
        return doc["ctx_a"], doc["ctx_b"]
    head, sep, tail = doc["ctx"].rpartition(". ")
    if sep and tail[:1].islower():
        return head + ".", tail
    return doc["ctx"], ""


def process_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The stock task's _process_doc, on either file layout (an item without an activity
    label gets no "label: " in front)."""
    ctx_a, ctx_b = split_context(doc)
    ctx = ctx_a + " " + ctx_b.capitalize()
    label = doc.get("activity_label")  # every HellaSwag item has one; hand-made files may not
    return {
        "query": preprocess(f"{label}: {ctx}" if label else ctx),
        "choices": [preprocess(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


def process_docs(dataset):
    """What the task's `process_docs` names: a datasets.Dataset mapped item by item."""
    return dataset.map(process_doc)
