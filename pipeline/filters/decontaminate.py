"""Decontamination filter: drop training documents that share a word 13-gram with an eval set.

Off by default. Given evaluation files (`eval_paths`: HellaSwag JSONL, whose items are read as
context + each ending, or plain text files, read as blank-line separated paragraphs), a
document is dropped with reason `decontaminate_13gram` when more than `max_matches` of its word
13-grams occur in them: GPT-3 (Brown et al. 2020, appendix C) removed training documents
overlapping its benchmarks by 13-grams; the normalization is lm-evaluation-harness's janitor
(pipeline/contamination.py). The val split cannot be listed here: the tokenize stage draws it
later, from the dedup output; its overlap with the train split is reported in eval.json.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from pipeline.contamination import NGRAM, NgramIndex, eval_file_texts
from pipeline.filters.base import Document, DocumentFilter, Rule, Signals, StepConfig, text_of
from pipeline.store.integrity import file_sha256


class DecontaminateConfig(StepConfig):
    enabled: bool = False  # needs evaluation files; FineWeb's pipeline has no such step
    eval_paths: list[str] = Field(default_factory=list)  # HellaSwag .jsonl or text files
    ngram: int = Field(default=NGRAM, ge=1)  # word n-gram length (GPT-3: 13)
    max_matches: int | None = 0  # drop a document with more matching n-grams than this

    @model_validator(mode="after")
    def _needs_files(self) -> DecontaminateConfig:
        if self.enabled and not self.eval_paths:
            raise ValueError("decontaminate is enabled but eval_paths lists no evaluation file")
        return self

    def signals_key(self) -> dict[str, Any]:
        # The files' content, not their paths: an edited eval file is another configuration.
        return {"ngram": self.ngram, "eval_files": [_sha256(p) for p in self.eval_paths]}


def _sha256(path: str) -> str:
    try:
        return file_sha256(Path(path))
    except OSError as exc:
        from pipeline.errors import DataError

        raise DataError(f"{path}: cannot read evaluation file ({exc.strerror})") from None


@lru_cache(maxsize=4)
def _index(paths: tuple[str, ...], digests: tuple[str, ...], ngram: int) -> NgramIndex:
    """One index per process and set of files (the digests key the cache to their content)."""
    return NgramIndex({path: eval_file_texts(path) for path in paths}, ngram)


class DecontaminateFilter(DocumentFilter):
    """Reason: `decontaminate_13gram` (with the default ngram of 13)."""

    name = "decontaminate"
    signal_names = ("eval_ngram_matches",)
    rules = (Rule("eval_ngram_matches", ">", "max_matches", f"decontaminate_{NGRAM}gram"),)

    def __init__(self, config: DecontaminateConfig):
        super().__init__(config)
        paths = tuple(config.eval_paths)
        self.index = _index(paths, tuple(_sha256(p) for p in paths), config.ngram)
        if config.ngram != NGRAM:  # the reason names the n-gram length used
            reason = f"decontaminate_{config.ngram}gram"
            self.rules = (Rule("eval_ngram_matches", ">", "max_matches", reason),)

    def signals(self, doc: Document) -> Signals:
        return {"eval_ngram_matches": float(self.index.matches(text_of(doc)))}
