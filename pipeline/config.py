"""The run configuration: one TOML file per configuration in configs/, `--set key=value` on top.

Each stage's config model lives in its own package (CrawlConfig in pipeline/crawl/crawler.py,
...) and is the section named after the stage; this module composes them from the stage list
(`pipeline.stages.STAGES`). Unknown keys and wrong types fail with one line naming the
dotted key, e.g. `config error: filter.gopher_quality.min_doc_wordz: unknown key`.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from pipeline import stages
from pipeline.errors import ConfigError
from pipeline.extract.sources import DocumentsConfig
from pipeline.overrides import apply_override
from pipeline.stage import Stage

# The stage names as a type (`run.until`, the stage deployment's form).
StageName = Literal[tuple(stages.names())]  # type: ignore[valid-type]


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    storage_root: str = "storage"
    # Processes for per-shard work; this project's reference machine has 2 cores.
    workers: int = Field(default=2, ge=1)
    # "local": shards as Prefect tasks over a local process pool; "dask": on a Dask cluster.
    executor: Literal["local", "dask"] = "local"
    dask_address: str | None = None  # tcp://host:8786; None with executor="dask" = LocalCluster
    # Last stage to run: "tokenize" stops after the data half.
    until: StageName = stages.names()[-1]  # type: ignore[valid-type]
    # Train through this Prefect deployment ("train/gpu", e.g. on a GPU work pool) instead of
    # in-process; the flow waits for it and then reads the model version it built.
    train_deployment: str | None = None
    # Global concurrency limit (1 slot) held while training: two scheduled runs never train on
    # the same GPU at once. `llmforge serve` creates it.
    train_concurrency_limit: str = "llmforge-train"
    # Weekly crawls: dedup new documents against the dedup versions of earlier completed runs
    # with the same run.name, so last week's pages are not admitted again.
    dedup_against_previous_runs: bool = False
    # Before a committed version is reused, check its files against its manifest: "sha256"
    # hashes every file (~2 s per GB on 2 cores, bench/integrity.py), "size" only
    # compares sizes (misses an edit that keeps a file's size). CLI: --verify, or the
    # LLMFORGE_VERIFY environment variable.
    verify: Literal["sha256", "size"] = "sha256"


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str = ""  # e.g. "0 3 * * 1" (Mondays 03:00) for `llmforge serve`; "" = no schedule
    timezone: str = "UTC"


class SourceConfig(DocumentsConfig):
    """Where documents come from. With kind = "documents" the extract stage reads `paths`
    (Parquet/JSONL from other tools, see pipeline/extract/sources.py) instead of WARC files; the
    DocumentsConfig keys (text_column, columns, ...) also apply to `llmforge stage` inputs."""

    model_config = ConfigDict(extra="forbid")

    # "crawl": fetch from crawl.seeds; "warc": extract from existing WARC files (Common Crawl);
    # "documents": read documents other tools wrote (FineWeb Parquet, Dolma JSONL.gz, ...).
    kind: Literal["crawl", "warc", "documents"] = "crawl"
    warc_paths: list[str] = []
    # Part of the crawl's version id: change it (a date, "2026-W47") to crawl the same seeds
    # again instead of reusing the last crawl.
    snapshot: str = ""


class RunConfig(BaseModel):
    """The sections every run config has; `config_model` adds one per stage."""

    model_config = ConfigDict(extra="forbid")

    run: RunSettings = RunSettings()
    schedule: ScheduleConfig = ScheduleConfig()
    source: SourceConfig = SourceConfig()

    def stage_config(self, stage: str) -> BaseModel:
        return getattr(self, stage)


@functools.cache
def config_model(stage_list: tuple[Stage, ...], base: type[RunConfig] = RunConfig) -> type[Any]:
    """`base` with a section per stage (its own config model) and `run.until` one of them."""
    names = tuple(stage.name for stage in stage_list)
    until = Literal[names]  # type: ignore[valid-type]
    run = create_model("RunSettings", __base__=RunSettings, until=(until, names[-1]))
    sections: dict[str, Any] = {
        stage.name: (stage.config, Field(default_factory=stage.config)) for stage in stage_list
    }
    return create_model(
        "PipelineConfig", __base__=base, run=(run, Field(default_factory=run)), **sections
    )


DEFAULT_STAGES = tuple(stages.STAGES)


class PipelineConfig(config_model(DEFAULT_STAGES)):  # type: ignore[misc]
    """The whole run configuration: run settings, schedule, source, one section per stage."""


def current_model() -> type[PipelineConfig]:
    """PipelineConfig, or (a stage added to `stages.STAGES` at run time) a subclass with its
    section too."""
    listed = tuple(stages.STAGES)
    return PipelineConfig if listed == DEFAULT_STAGES else config_model(listed, PipelineConfig)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"config error: {key}: unknown key"
    return f"config error: {key}: {error['msg']} (got {error.get('input')!r})"


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PipelineConfig:
    """Read a TOML config (or the defaults), apply --set overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config error: {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config error: {path}: unreadable ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config error: {path}: invalid TOML ({exc})") from None
    return config_from_dict(data, overrides)


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> PipelineConfig:
    """Validate a config mapping (a TOML file's, or a run record's) after --set overrides."""
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return current_model().model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None
