"""Gather what a data report shows from a run record and the dataset versions it names.

Everything here is plain data (counts, a few sample rows, signal arrays); `plots.py` draws
it and `render.py` writes it out. Reads only the columns it needs, and the text of only the
sampled documents, so the report stays cheap on a large run. A stage the run did not reach,
or a version folder that is gone, becomes a note instead of an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pipeline.documents import SHARD_GLOB, iter_batches, read_schema, read_table, readable
from pipeline.errors import DataError
from pipeline.filters.base import Rule
from pipeline.filters.config import FILTERS
from pipeline.stages import names
from pipeline.store.fs import Folder
from pipeline.store.runs import RunRecord
from pipeline.store.versions import MANIFEST, Storage

DOCUMENT_STAGES = ("extract", "filter", "dedup")  # stages with data/ and removed/


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples_per_reason: int = 3  # enough to see what a reason catches, short enough to scan
    sample_chars: int = 200  # first characters of a sample's text
    top_domains: int = 20
    largest_clusters: int = 5  # duplicate clusters listed with their survivor
    histogram_bins: int = 30
    dpi: int = 100


@dataclass
class StageInfo:
    stage: str
    version_id: str
    folder: Folder  # the version's folder (local or remote)
    counts: dict[str, Any]  # manifest counts: docs_in, docs_out, drops, extra
    config: dict[str, Any] | None  # None when the version folder is gone
    reused: bool

    @property
    def present(self) -> bool:
        return self.config is not None


@dataclass
class FunnelRow:
    stage: str
    docs_in: int
    docs_out: int
    text_bytes: int | None = None  # UTF-8 bytes of the kept documents' text
    tokens: int | None = None  # exact at tokenize, else estimated from text_bytes
    tokens_exact: bool = False


@dataclass
class Sample:
    url: str
    text: str  # first `sample_chars` characters, whitespace collapsed
    detail: str | None = None  # e.g. the URL of the document kept in a duplicate's place


@dataclass
class ReasonRow:
    stage: str
    reason: str
    docs: int
    share: float  # of the stage's input documents
    samples: list[Sample] = field(default_factory=list)


@dataclass
class DomainRow:
    domain: str
    kept: int
    removed: int
    top_reason: str | None


@dataclass
class ClusterInfo:
    sizes: dict[int, int]  # cluster size (survivor included) -> number of clusters
    exact_near: dict[int, tuple[int, int]]  # size -> (exact, near) removed documents
    largest: list[tuple[int, str, list[str]]]  # (size, survivor URL or id, member URLs)


@dataclass
class ReportData:
    run: dict[str, Any]
    stages: dict[str, StageInfo]
    notes: list[str]
    funnel: list[FunnelRow]
    reasons: list[ReasonRow]
    signals: list[SignalData]
    domains_kept: list[DomainRow]
    domains_removed: list[DomainRow]
    clusters: ClusterInfo | None
    contamination: dict[str, Any] | None = None  # eval.json's 13-gram overlap, if evaluated
    kept: list[Sample] = field(default_factory=list)  # what the last document stage kept
    kept_stage: str | None = None


def _shards(folder: Folder) -> list[str]:
    """The shard files of `folder` in name order: local paths, or URLs on a remote root."""
    return [folder.url_of(name) for name in folder.list(SHARD_GLOB)]


def read_folder(folder: Folder, columns: list[str]) -> pa.Table:
    """The wanted columns of every shard in `folder`, concatenated; a column an older shard
    lacks reads as nulls."""
    tables = []
    for path in _shards(folder):
        names = read_schema(path).names
        tables.append(read_table(path, [c for c in columns if c in names]))
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(tables, promote_options="default")


def _texts(folder: Folder, ids: set[str]) -> dict[str, str]:
    """Text of the given documents only: the rest of the text column is never loaded."""
    found: dict[str, str] = {}
    for path in _shards(folder):
        try:
            with readable(path) as source:
                table = pq.read_table(
                    source, columns=["id", "text"], filters=[("id", "in", list(ids))]
                )
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        found.update(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))
    return found


def _snippet(text: str | None, chars: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= chars else flat[:chars].rstrip() + "…"


def load_stages(storage: Storage, record: RunRecord) -> tuple[dict[str, StageInfo], list[str]]:
    """The run's data stages in pipeline order, each from its manifest when it still exists."""
    stages, notes = {}, []
    versions = record.data.get("versions", {})
    for stage in names("data"):
        summary = versions.get(stage)
        if summary is None:
            notes.append(f"{stage}: not part of this run")
            continue
        folder = storage.version_folder(stage, summary["version_id"])
        counts, config = summary.get("counts", {}), None
        if storage.has_version(stage, summary["version_id"]):
            manifest = folder.read_json(MANIFEST)
            counts, config = manifest.get("counts", counts), manifest.get("config", {})
        else:
            notes.append(f"{stage}: version {summary['version_id']} is gone; counts from run.json")
        stages[stage] = StageInfo(
            stage, summary["version_id"], folder, counts, config, summary.get("reused", False)
        )
    return stages, notes


def _text_bytes(folder: Folder) -> int:
    total = 0
    for path in _shards(folder):
        for batch in iter_batches(path, columns=["text"]):
            total += pc.sum(pc.binary_length(batch.column(0))).as_py() or 0
    return total


def collect_funnel(stages: dict[str, StageInfo]) -> list[FunnelRow]:
    """Documents in/out per stage; text bytes kept; tokens, estimated before tokenize at the
    tokens-per-byte rate tokenize measured on this run's final documents."""
    rows = []
    for info in stages.values():
        row = FunnelRow(info.stage, info.counts.get("docs_in", 0), info.counts.get("docs_out", 0))
        if info.stage in DOCUMENT_STAGES and info.present:
            row.text_bytes = _text_bytes(info.folder / "data")
        rows.append(row)
    extra = stages["tokenize"].counts.get("extra", {}) if "tokenize" in stages else {}
    tokens = extra.get("tokens_train", 0) + extra.get("tokens_val", 0)
    per_byte = tokens / extra["text_bytes"] if tokens and extra.get("text_bytes") else None
    for row in rows:
        if row.stage == "tokenize" and tokens:
            row.text_bytes, row.tokens, row.tokens_exact = extra.get("text_bytes"), tokens, True
        elif row.text_bytes is not None and per_byte is not None:
            row.tokens = round(row.text_bytes * per_byte)
    return rows


def _crawl_samples(info: StageInfo, reason: str, config: ReportConfig) -> list[Sample]:
    index = read_folder(info.folder / "index", ["url", "status", "content_type", "error"])
    error = reason.removeprefix("crawl_")
    hits = sorted((r for r in index.to_pylist() if r["error"] == error), key=lambda r: r["url"])
    samples = []
    for row in hits[: config.samples_per_reason]:
        detail = [f"HTTP {row['status']}" if row["status"] else "", row.get("content_type") or ""]
        samples.append(Sample(row["url"], "", ", ".join(d for d in detail if d) or None))
    return samples


def _removed_samples(
    info: StageInfo, removed: pa.Table, config: ReportConfig, kept_urls: dict[str, str]
) -> dict[str, list[Sample]]:
    """Per reason, the documents with the smallest ids: ids hash the URL, so this is a stable
    pseudo-random pick spread over the whole dataset."""
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(removed.to_pylist(), key=lambda r: r["id"]):
        picked = by_reason.setdefault(row["reason"], [])
        if len(picked) < config.samples_per_reason:
            picked.append(row)
    wanted = {row["id"] for rows in by_reason.values() for row in rows}
    texts = _texts(info.folder / "removed", wanted) if wanted else {}
    out = {}
    for reason, rows in by_reason.items():
        out[reason] = []
        for row in rows:
            detail = None
            if row.get("duplicate_of"):
                detail = "duplicate of " + kept_urls.get(row["duplicate_of"], row["duplicate_of"])
            text = _snippet(texts.get(row["id"]), config.sample_chars)
            out[reason].append(Sample(row["url"], text, detail))
    return out


def collect_kept(stages: dict[str, StageInfo], config: ReportConfig):
    """A sample of what the run kept: the last document stage's documents with the smallest
    ids (the same stable pseudo-random pick as the removal samples)."""
    for stage in reversed(DOCUMENT_STAGES):
        info = stages.get(stage)
        if info is None or not info.present or not _shards(info.folder / "data"):
            continue
        ids = read_folder(info.folder / "data", ["id", "url"]).to_pylist()
        picked = sorted(ids, key=lambda r: r["id"])[: config.samples_per_reason]
        texts = _texts(info.folder / "data", {r["id"] for r in picked}) if picked else {}
        samples = [
            Sample(r["url"], _snippet(texts.get(r["id"]), config.sample_chars)) for r in picked
        ]
        return samples, stage
    return [], None


def _removed(info: StageInfo) -> pa.Table:
    return read_folder(
        info.folder / "removed", ["id", "url", "domain", "reason", "duplicate_of", "cluster_id"]
    )


def collect_reasons(stages: dict[str, StageInfo], config: ReportConfig) -> list[ReasonRow]:
    """Every drop reason in the manifests, with samples where the removed rows still exist."""
    rows = []
    for info in stages.values():
        drops = info.counts.get("drops", {})
        samples: dict[str, list[Sample]] = {}
        if info.present and info.stage == "crawl":
            samples = {r: _crawl_samples(info, r, config) for r in drops}
        elif info.present and info.stage in DOCUMENT_STAGES:
            kept: dict[str, str] = {}
            if info.stage == "dedup":
                table = read_folder(info.folder / "data", ["id", "url"])
                kept = dict(zip(table["id"].to_pylist(), table["url"].to_pylist(), strict=True))
            samples = _removed_samples(info, _removed(info), config, kept)
        docs_in = info.counts.get("docs_in", 0) or 1
        for reason, count in sorted(drops.items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                ReasonRow(info.stage, reason, count, count / docs_in, samples.get(reason, []))
            )
    return rows


def collect_domains(
    stages: dict[str, StageInfo], config: ReportConfig
) -> tuple[list[DomainRow], list[DomainRow]]:
    """Domains by kept documents (the last document stage) and by removed documents."""
    final = [s for s in DOCUMENT_STAGES if s in stages and stages[s].present]
    if not final:
        return [], []
    kept = Counter(read_folder(stages[final[-1]].folder / "data", ["domain"])["domain"].to_pylist())
    removed: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    for stage in final:
        table = read_folder(stages[stage].folder / "removed", ["domain", "reason"])
        for domain, reason in zip(
            table["domain"].to_pylist(), table["reason"].to_pylist(), strict=True
        ):
            removed[domain] += 1
            reasons.setdefault(domain, Counter())[reason] += 1

    def row(domain: str) -> DomainRow:
        top = reasons.get(domain)
        top_reason = min(top.items(), key=lambda kv: (-kv[1], kv[0]))[0] if top else None
        return DomainRow(domain or "(none)", kept[domain], removed[domain], top_reason)

    def top(counter: Counter[str]) -> list[str]:
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0] or ""))
        return [domain for domain, _ in ranked[: config.top_domains]]

    return [row(d) for d in top(kept)], [row(d) for d in top(removed)]


def collect_clusters(stages: dict[str, StageInfo], config: ReportConfig) -> ClusterInfo | None:
    """Cluster sizes from dedup's removed rows: size = 1 (the survivor) + removed members."""
    info = stages.get("dedup")
    if info is None or not info.present:
        return None
    removed = _removed(info).to_pylist()
    members: dict[str, list[dict[str, Any]]] = {}
    for row in removed:
        if row.get("cluster_id"):
            members.setdefault(row["cluster_id"], []).append(row)
    sizes: Counter[int] = Counter()
    exact_near: dict[int, list[int]] = {}
    for rows in members.values():
        size = 1 + len(rows)
        sizes[size] += 1
        split = exact_near.setdefault(size, [0, 0])
        for row in rows:
            split["exact" not in row["reason"]] += 1
    table = read_folder(info.folder / "data", ["id", "url"])
    urls = dict(zip(table["id"].to_pylist(), table["url"].to_pylist(), strict=True))
    ranked = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    largest = [
        (1 + len(rows), urls.get(cid, cid), sorted(r["url"] for r in rows))
        for cid, rows in ranked[: config.largest_clusters]
    ]
    split = {k: (v[0], v[1]) for k, v in sorted(exact_near.items())}
    return ClusterInfo(dict(sorted(sizes.items())), split, largest)


# Plotted whenever measured: FineWeb's main rules (REFERENCE.md). Any other signal whose rule
# dropped documents in this run is plotted too, so every filter reason has its histogram.
MAIN_SIGNALS = (
    "gopher_quality.word_count",
    "gopher_quality.mean_word_length",
    "gopher_quality.alpha_words_ratio",
    "gopher_quality.stop_words",
    "gopher_repetition.dup_line_frac",
    "gopher_repetition.top_2_gram_frac",
    "fineweb.line_punct_ratio",
    "fineweb.short_line_ratio",
    "fineweb.char_dup_ratio",
    "language.score",
)
LOG_SIGNALS = frozenset({"gopher_quality.word_count"})  # spans 0..100,000 words
# The language filter decides in code rather than by Rule; its score cut-off as a Rule.
EXTRA_RULES = {"language": (Rule("score", "<", "min_score", "language_low_score"),)}
_NP_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


@dataclass
class SignalData:
    column: str  # <filter>.<signal>
    values: np.ndarray  # per measured document, NaN where not measurable
    outcome: np.ndarray  # 0 kept, 1 removed by this signal's rules, 2 removed for another reason
    thresholds: list[tuple[str, float]]  # (config field, value) as the filter version ran
    log: bool
    fails: int  # documents failing this signal's rules, whatever else removed them


def _signal_rules() -> dict[str, list[Rule]]:
    rules: dict[str, list[Rule]] = {}
    for name, cls in FILTERS.items():
        for rule in (*cls.rules, *EXTRA_RULES.get(name, ())):
            rules.setdefault(f"{name}.{rule.signal}", []).append(rule)
    return rules


def collect_signals(stages: dict[str, StageInfo]) -> tuple[list[SignalData], list[str]]:
    """The main signals from the filter version's attributes, with its configured thresholds."""
    info = stages.get("filter")
    if info is None or not info.present:
        return [], []
    shards = _shards(info.folder / "attributes")
    if not shards:
        return [], [f"filter: version {info.version_id} has no attributes/: no histograms"]
    rules = _signal_rules()
    dropped = set(info.counts.get("drops", {}))
    tripped = [c for c, rs in rules.items() if any(r.reason in dropped for r in rs)]
    names = read_schema(shards[0]).names
    wanted = [c for c in dict.fromkeys([*MAIN_SIGNALS, *tripped]) if c in names]
    table = read_folder(info.folder / "attributes", [*wanted, "reason"])
    final = table["reason"].to_pylist()
    out = []
    for column in wanted:
        values = table[column].to_numpy(zero_copy_only=False).astype(float)
        if np.isnan(values).all():
            continue
        filter_config = (info.config or {}).get(column.split(".")[0], {})
        thresholds, fails = [], np.zeros(len(values), bool)
        for rule in rules.get(column, []):
            limit = filter_config.get(rule.threshold)
            if limit is not None:  # None: the rule was off
                thresholds.append((rule.threshold, float(limit)))
                fails |= _NP_OPS[rule.op](values, limit)  # NaN compares False
        reasons = {r.reason for r in rules.get(column, [])}
        if column == "language.score":  # the filter drops by detected language in code, not
            reasons |= {r for r in dropped if r.startswith("language_")}  # by a Rule: its own
        outcome = np.array([0 if r is None else 1 if r in reasons else 2 for r in final])
        log = column in LOG_SIGNALS
        out.append(SignalData(column, values, outcome, thresholds, log, int(fails.sum())))
    return out, []


def collect_contamination(storage: Storage, record: RunRecord) -> dict[str, Any] | None:
    """The evaluate version's 13-gram overlap numbers (pipeline/contamination.py), if any."""
    version = (record.data.get("versions") or {}).get("evaluate")
    if not version:
        return None
    folder = storage.version_folder("evaluate", version["version_id"])
    if not folder.is_file("eval.json"):
        return None
    return folder.read_json("eval.json").get("contamination")


def collect_report(storage: Storage, run_id: str, config: ReportConfig) -> ReportData:
    record = RunRecord.load(storage, run_id)
    stages, notes = load_stages(storage, record)
    signals, signal_notes = collect_signals(stages)
    kept, removed = collect_domains(stages, config)
    kept_samples, kept_stage = collect_kept(stages, config)
    return ReportData(
        run={k: v for k, v in record.data.items() if k not in ("config", "versions")},
        stages=stages,
        notes=notes + signal_notes,
        funnel=collect_funnel(stages),
        reasons=collect_reasons(stages, config),
        signals=signals,
        domains_kept=kept,
        domains_removed=removed,
        clusters=collect_clusters(stages, config),
        contamination=collect_contamination(storage, record),
        kept=kept_samples,
        kept_stage=kept_stage,
    )
