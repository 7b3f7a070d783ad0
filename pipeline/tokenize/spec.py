"""The tokenize stage as the pipeline sees it: the dedup version's documents (or other tools'
files) into token shards (GPT-2's, or a BPE trained on the train split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.document_stage import open_documents, reading_documents, resolve_documents
from pipeline.errors import DataError
from pipeline.stage import ParallelMap, Stage, StageResult
from pipeline.tokenize.tokenizer import TokenizeConfig, get_encoding
from pipeline.tokenize.tokenizer import run as run_tokenize


def check(config: Any) -> None:
    """The tokenizer's BPE files load (from the cache, or once from the network); a trained
    tokenizer needs its trainer and GPT-2's files (the compression reference)."""
    section = config.tokenize
    if section.tokenizer == "train":
        try:
            import rustbpe  # noqa: F401
        except ImportError:
            raise DataError(
                "tokenize.tokenizer = 'train' needs rustbpe (pip install rustbpe)"
            ) from None
        get_encoding("gpt2")
    else:
        get_encoding(section.encoding)


def run(
    config: TokenizeConfig, source: tuple[Path, Any], out: Any, pmap: ParallelMap
) -> StageResult:
    return run_tokenize(config, source[0], out, pmap)


STAGE = Stage(
    name="tokenize",
    config=TokenizeConfig,
    code=(
        "pipeline/tokenize/*.py",
        "pipeline/documents.py",
        "pipeline/document_stage.py",
        "pipeline/stage.py",
    ),
    libraries=("tiktoken", "rustbpe"),  # rustbpe trains tokenizer = "train"
    resolve=resolve_documents("tokenize"),
    run=reading_documents(run, columns=["id", "text"]),
    check=check,
    standalone=open_documents,
)
