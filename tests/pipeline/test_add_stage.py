"""Adding a stage is its own package plus one line in `pipeline/stages.py`.

A hypothetical "lowercase" document stage (its config, its run, its Stage) is written into a
scratch package and inserted between dedup and tokenize with one line; config parsing, version
plans, the run order, the CLI, the flows and prefect.yaml pick it up, and it runs on documents.
"""

import textwrap

import pytest

from pipeline import stages
from pipeline.documents import DOCUMENT_SCHEMA, ShardWriter, read_table, shard_name
from pipeline.errors import ConfigError

PACKAGE = '''
"""Lowercase every document's text (a stage written only to show what adding one takes)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.document_stage import open_documents, reading_documents, resolve_documents
from pipeline.documents import list_shards, read_table
from pipeline.stage import ParallelMap, ShardResult, Stage, StageResult
from pipeline.store.fs import as_folder


class LowercaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_chars: int = 0  # documents shorter than this are dropped


@dataclass(frozen=True)
class LowercaseTask:
    shard: Path
    out: Any  # the output Folder (picklable as its URL)
    config: LowercaseConfig


def lowercase_shard(task: LowercaseTask) -> ShardResult:
    table = read_table(task.shard)
    keep = pc.greater_equal(pc.utf8_length(table["text"]), task.config.min_chars)
    kept = table.filter(keep)
    kept = kept.set_column(
        kept.schema.get_field_index("text"), "text", pc.utf8_lower(kept["text"])
    )
    with task.out.output(f"data/{task.shard.name}") as path:  # published atomically
        pq.write_table(kept, path)
    dropped = len(table) - len(kept)
    return ShardResult(
        task.shard.name, len(table), len(kept), {"too_short": dropped} if dropped else {}
    )


def run(config: LowercaseConfig, source: Any, out: Any, pmap: ParallelMap) -> StageResult:
    documents, _ = source
    tasks = [LowercaseTask(s, as_folder(out), config) for s in list_shards(documents)]
    return StageResult.from_shards(pmap(lowercase_shard, tasks, "lowercase"))


STAGE = Stage(
    name="lowercase",
    config=LowercaseConfig,
    code=("lowercase_stage/*.py",),
    resolve=resolve_documents("lowercase"),
    run=reading_documents(run),
    standalone=open_documents,
)
'''


@pytest.fixture
def lowercase(tmp_path, monkeypatch):
    """The new package on sys.path, and the one line that lists it."""
    package = tmp_path / "code" / "lowercase_stage"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    import lowercase_stage

    listed = list(stages.STAGES)
    # The one line: `lowercase.STAGE,` between `dedup.STAGE,` and `tokenize.STAGE,`.
    listed.insert(stages.names().index("tokenize"), lowercase_stage.STAGE)
    monkeypatch.setattr(stages, "STAGES", listed)
    monkeypatch.setattr(stages, "ROOT", tmp_path / "code")  # its code globs, for this test
    return package


def documents(folder, texts):
    folder.mkdir(parents=True)
    with ShardWriter(folder / shard_name(0), DOCUMENT_SCHEMA) as writer:
        for i, text in enumerate(texts):
            writer.write({"id": f"doc-{i}", "url": f"https://example.com/{i}", "text": text})
    return folder


def test_a_new_stage_is_one_package_plus_one_line(lowercase, tmp_path):
    from pipeline.config import load_config

    # Its config section parses, with the same one-line errors as every other section.
    config = load_config(None, ["lowercase.min_chars=5", "run.until=lowercase"])
    assert config.lowercase.min_chars == 5
    with pytest.raises(ConfigError, match="config error: lowercase.min_charz: unknown key"):
        load_config(None, ["lowercase.min_charz=5"])

    # The run order, and what reads it: tokenize now reads lowercase's version.
    assert stages.stages_to_run(config)[-3:] == ["filter", "dedup", "lowercase"]
    assert stages.upstream("lowercase") == "dedup" and stages.upstream("tokenize") == "lowercase"

    # Its version id follows its config and its own code.
    inputs = [{"stage": "dedup", "version_id": "0" * 16}]
    plan = stages.plan("lowercase", config.lowercase, inputs)
    assert plan.version_id != stages.plan("lowercase", type(config.lowercase)(), inputs).version_id
    (lowercase / "__init__.py").write_text((lowercase / "__init__.py").read_text() + "# edit\n")
    assert stages.plan("lowercase", config.lowercase, inputs).version_id != plan.version_id

    # The CLI lists it; the flows and prefect.yaml's stage deployments pick it up.
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.data import stage_flow
    from flows.deploy import YAML_MARKER, prefect_yaml

    listing = CliRunner().invoke(app, ["stages"])
    assert listing.exit_code == 0 and "lowercase" in listing.output, listing.output
    assert stage_flow("lowercase", config).name == "lowercase"
    yaml = prefect_yaml(f"x\n{YAML_MARKER}\n  # comment\n")
    assert "name: lowercase, parameters: {stage: lowercase," in yaml

    # It runs on a documents folder, and tokenize runs on what it wrote.
    docs = documents(tmp_path / "docs", ["Hello World, Again", "Hi", "MIXED Case text here"])
    out = tmp_path / "lowercased"
    manifest = stages.run_standalone(
        "lowercase", config.lowercase, docs, out, stages.serial_map, config.source
    )
    assert manifest["counts"]["docs_out"] == 2 and manifest["counts"]["drops"] == {"too_short": 1}
    texts = read_table(out / "data" / shard_name(0))["text"].to_pylist()
    assert texts == ["hello world, again", "mixed case text here"]
    tokens = stages.run_standalone(
        "tokenize", config.tokenize, out, tmp_path / "tokens", stages.serial_map, config.source
    )
    assert tokens["counts"]["docs_out"] == 2
