"""The stage list: lookup, order, and code versions narrowed to what shapes each stage's output."""

import importlib.metadata
import shutil

import pytest

from pipeline import stages
from pipeline.errors import DataError


def test_stages_in_order_each_reading_the_one_before():
    assert stages.names() == [
        "crawl",
        "extract",
        "filter",
        "dedup",
        "tokenize",
        "train",
        "evaluate",
    ]
    assert [stages.upstream(name) for name in stages.names()] == [None, *stages.names()[:-1]]
    assert stages.names("model") == ["train", "evaluate"]
    with pytest.raises(DataError, match=r"unknown stage 'dedupe' \(stages: crawl, extract"):
        stages.by_name("dedupe")


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """The stages' code in a scratch copy of the repository, to edit freely."""
    for package in ("pipeline", "model"):
        shutil.copytree(
            stages.ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    monkeypatch.setattr(stages, "ROOT", tmp_path)
    return tmp_path


def versions() -> dict[str, str]:
    return {stage.name: stages.code_version(stage) for stage in stages.STAGES}


def changed_by(path) -> set[str]:
    """The stages whose code version changes when `path` is edited."""
    before = versions()
    path.write_text(path.read_text() + "\n# edited\n")
    after = versions()
    return {name for name in before if after[name] != before[name]}


def test_editing_a_file_changes_only_the_stages_that_use_it(repo_copy):
    assert changed_by(repo_copy / "model" / "plots.py") == set()  # a picture of the loss
    assert changed_by(repo_copy / "model" / "export.py") == set()
    assert changed_by(repo_copy / "model" / "hardware.py") == set()
    assert changed_by(repo_copy / "pipeline" / "documents.py") == {
        "crawl",
        "extract",
        "filter",
        "dedup",
        "tokenize",
    }
    assert changed_by(repo_copy / "pipeline" / "dedup" / "lsh.py") == {"dedup"}
    assert changed_by(repo_copy / "pipeline" / "langid.py") == {"extract", "filter"}
    assert changed_by(repo_copy / "model" / "gpt.py") == {"train", "evaluate"}


def test_a_library_upgrade_changes_the_stages_it_shapes(monkeypatch):
    before = versions()
    real = importlib.metadata.version

    def upgraded(name: str) -> str:
        return "99.0" if name in ("tiktoken", "trafilatura") else real(name)

    monkeypatch.setattr(importlib.metadata, "version", upgraded)
    after = versions()
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"extract", "tokenize", "evaluate"}
