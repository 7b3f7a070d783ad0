"""Evaluation-set contamination: word 13-grams shared by evaluation items and training documents.

    index = NgramIndex({"hellaswag": hellaswag_texts(path)})
    for text in training_texts:
        index.scan(text)
    index.report()  # per set: items, items with 13-grams, contaminated items and their fraction

Text is normalized as lm-evaluation-harness's decontamination janitor does
(`lm_eval/decontamination/janitor.py`): lowercased, ASCII punctuation deleted, split on
whitespace; an item is contaminated when any of its word 13-grams occurs in a training
document, the n GPT-3 used (Brown et al. 2020, appendix C) and the harness's default. An item
shorter than 13 words has no 13-gram and cannot be checked: it is counted apart
(`too_short`), not as clean. N-grams are kept as 64-bit hashes (blake2b per word, combined by
a polynomial rolling hash in numpy), so an index over eval sets stays small and a training
document is checked with one sorted search.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError

NGRAM = 13  # GPT-3 appendix C; lm-evaluation-harness Janitor(ngram_n=13)
_DELETE = str.maketrans("", "", string.punctuation)  # the janitor's delete_chars
_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1 64-bit prime: odd, so no hash bits are lost


def normalize_words(text: str) -> list[str]:
    """Lowercased words with ASCII punctuation removed, split on whitespace."""
    return text.lower().translate(_DELETE).split()


@lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def ngram_hashes(text: str, n: int = NGRAM) -> np.ndarray:
    """64-bit hashes of the word n-grams of `text` (uint64; empty if it has < n words)."""
    words = normalize_words(text)
    count = len(words) - n + 1
    if count < 1:
        return np.zeros(0, dtype=np.uint64)
    h = np.fromiter((_word_hash(w) for w in words), dtype=np.uint64, count=len(words))
    acc = np.zeros(count, dtype=np.uint64)
    for k in range(n):  # acc = sum h[i+k] * M^(n-1-k) mod 2^64: order matters
        acc = acc * _MULTIPLIER + h[k : k + count]
    return acc


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based unique costs ~0.3 ms a call on small arrays."""
    values = np.sort(values)
    if values.size < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


Item = str | list[str]  # an evaluation item: one text, or texts whose n-grams are pooled


def item_hashes(item: Item, n: int = NGRAM) -> np.ndarray:
    """Sorted unique n-gram hashes of an item; n-grams never span two of its texts."""
    parts = [item] if isinstance(item, str) else item
    hashes = [ngram_hashes(part, n) for part in parts]
    return _sorted_unique(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))


class NgramIndex:
    """The n-grams of named evaluation sets, and which of them training text has shown."""

    def __init__(self, sets: dict[str, Iterable[Item]], n: int = NGRAM):
        self.n = n
        self.items: dict[str, list[np.ndarray]] = {
            name: [item_hashes(item, n) for item in items] for name, items in sets.items()
        }
        every = [h for items in self.items.values() for h in items]
        self.ngrams = _sorted_unique(np.concatenate(every) if every else np.zeros(0, np.uint64))
        self.seen = np.zeros(self.ngrams.size, dtype=bool)
        self.documents = 0
        self.contaminated_documents = 0

    def _positions(self, hashes: np.ndarray) -> np.ndarray:
        """Indexes into self.ngrams of those `hashes` that are eval n-grams."""
        if not self.ngrams.size or not hashes.size:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self.ngrams, hashes)
        pos = np.minimum(pos, self.ngrams.size - 1)
        return pos[self.ngrams[pos] == hashes]

    def matches(self, text: str) -> int:
        """How many of the text's n-grams (with repeats) are eval n-grams; records nothing."""
        return int(self._positions(ngram_hashes(text, self.n)).size)

    def scan(self, text: str) -> int:
        """Check one training document: mark the eval n-grams it contains; return their count."""
        found = self._positions(ngram_hashes(text, self.n))
        self.seen[found] = True
        self.documents += 1
        self.contaminated_documents += bool(found.size)
        return int(found.size)

    def report(self) -> dict[str, Any]:
        """Per set: items, too_short (no n-gram), contaminated, fraction of the checkable."""
        out: dict[str, Any] = {
            "ngram": self.n,
            "train_documents": self.documents,
            "train_documents_with_eval_ngrams": self.contaminated_documents,
        }
        for name, items in self.items.items():
            checkable = [h for h in items if h.size]
            hit = sum(bool(self.seen[self._positions(h)].any()) for h in checkable)
            out[name] = {
                "items": len(items),
                "too_short": len(items) - len(checkable),
                "contaminated": hit,
                "fraction": hit / len(checkable) if checkable else None,
            }
        return out


def iter_jsonl_items(
    path: Path | str, check: Callable[[Any], str | None], limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """The items of an evaluation JSONL file, each passed through `check` (a problem string or
    None); a bad line is one DataError naming the file and the line number. Shared by the
    contamination check and HellaSwag scoring (model/hellaswag.py), which checks more."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot open evaluation file ({exc.strerror})") from None
    count = 0
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if problem := check(item):
                raise DataError(f"{path}:{lineno}: {problem}")
            count += 1
            yield item


def _text_item_problem(item: Any) -> str | None:
    ok = (
        isinstance(item, dict)
        and isinstance(item.get("ctx"), str)
        and isinstance(item.get("endings"), list)
        and all(isinstance(e, str) for e in item["endings"])
    )
    return None if ok else "not a HellaSwag item (ctx, endings)"


def hellaswag_texts(path: Path | str, limit: int | None = None) -> Iterator[list[str]]:
    """Per HellaSwag item, its context followed by each of its endings (ctx + " " + ending, as
    scored): the item counts if its context or any ending with it was trained on."""
    for item in iter_jsonl_items(path, _text_item_problem, limit):
        yield [f"{item['ctx']} {ending}" for ending in item["endings"]]


def text_file_items(path: Path | str) -> list[str]:
    """Items of a plain text evaluation file: its blank-line separated paragraphs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read evaluation file ({exc})") from None
    return [part for part in text.split("\n\n") if part.strip()]


def eval_file_texts(path: Path | str) -> list[Item]:
    """A JSONL file is read as HellaSwag items, anything else as paragraphs of text."""
    if str(path).endswith(".jsonl"):
        return list(hellaswag_texts(path))
    return text_file_items(path)


def token_dataset_texts(token_dir: Any, split: str, decode, eot_token: int) -> Iterator[str]:
    """The documents of a token dataset's split as text (`decode(ids) -> str`, the tokenizer's
    decode; the closing end-of-text token left out): GPT-2 BPE decodes back to the original
    text, so the documents dataset the tokens came from is not needed. `token_dir` is a local
    folder or a store URL/Folder."""
    from pipeline.documents import iter_batches, list_shards
    from pipeline.store.fs import as_folder

    for shard in list_shards(as_folder(token_dir) / split):
        for batch in iter_batches(shard, columns=["tokens"]):
            for ids in batch.column(0).to_pylist():
                yield decode(ids[:-1] if ids and ids[-1] == eot_token else ids)
