"""The data report, built from real stage versions of the generated sample site.

One crawl → extract → filter → dedup → tokenize chain is committed as storage versions; run
records then name all of it or only part of it (a run stopped early, a WARC-source run, a
version deleted since), and each test reads the report of one of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.crawl.crawler import CrawlConfig
from pipeline.dedup import DedupConfig
from pipeline.document_stage import documents_dir
from pipeline.errors import DataError
from pipeline.extract.extractor import ExtractConfig
from pipeline.extract.spec import warc_files_of
from pipeline.filters import FilterConfig
from pipeline.report import ReportConfig, build_report
from pipeline.report.collect import ReasonRow
from pipeline.report.render import _reasons_section, escape, render_html
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import SampleSiteConfig, generate_site
from pipeline.stages import execute, plan, version_input
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage, build_version
from pipeline.tokenize.tokenizer import TokenizeConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _build(storage, stage, config, source, inputs):
    return build_version(
        storage, plan(stage, config, inputs), lambda out: execute(stage, config, source, out)
    )


def _record(storage, run_id, versions):
    record = RunRecord.create(storage, {}, run_id)
    for version in versions:
        record.add_version(version if isinstance(version, dict) else version.summary())
    record.finish("completed")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Storage with the sample site's five data stages, and run records over them."""
    site_dir = tmp_path_factory.mktemp("site")
    generate_site(site_dir, SampleSiteConfig(seed=7))
    storage = Storage.at(tmp_path_factory.mktemp("storage"))
    with serve_site(site_dir) as base_url:
        config = CrawlConfig(
            seeds=[f"{base_url}/"],
            delay_seconds=0,
            per_host_concurrency=4,
            allow_private_addresses=True,  # the sample site is on 127.0.0.1
        )
        v = {"crawl": _build(storage, "crawl", config, None, [{"source": "seeds"}])}
    warcs = warc_files_of(v["crawl"])
    v["extract"] = _build(storage, "extract", ExtractConfig(), warcs, [version_input(v["crawl"])])
    upstream = v["extract"]
    for stage, config in [("filter", FilterConfig()), ("dedup", DedupConfig())]:
        source = documents_dir(upstream)
        v[stage] = upstream = _build(storage, stage, config, source, [version_input(upstream)])
    v["tokenize"] = _build(
        storage,
        "tokenize",
        TokenizeConfig(val_fraction=0.1),
        documents_dir(v["dedup"]),
        [version_input(v["dedup"])],
    )
    no_fineweb = _build(
        storage,
        "filter",
        FilterConfig.model_validate({"fineweb": {"enabled": False}}),
        documents_dir(v["extract"]),
        [version_input(v["extract"])],
    )
    gone = {**v["dedup"].summary(), "version_id": "0" * 16}  # deleted since (gc)
    stages = ["crawl", "extract", "filter", "dedup", "tokenize"]
    for run_id, versions in {
        "full": [v[s] for s in stages],
        "until-filter": [v[s] for s in stages[:3]],
        "warc-source": [v[s] for s in stages[1:4]],
        "no-fineweb": [v["crawl"], v["extract"], no_fineweb],
        "gone": [v["crawl"], v["extract"], v["filter"], gone],
        "empty": [],
    }.items():
        _record(storage, run_id, versions)
    return storage, {stage: version.manifest for stage, version in v.items()}


@pytest.fixture(scope="module")
def full(store, tmp_path_factory):
    storage, manifests = store
    paths = build_report(storage, "full")
    return paths, Path(paths.markdown).read_text(), manifests


def test_report_files_are_written_into_the_run_folder(full, store):
    paths, _, _ = full
    storage, _ = store
    assert paths.dir == storage.report_folder("full")
    assert sorted(p.name for p in paths.dir.local_path().iterdir()) == [
        "clusters.png",
        "funnel.png",
        "report.html",
        "report.md",
        "signals.png",
    ]
    for image in paths.images.values():
        data = Path(image).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, image
    assert not [
        p for p in paths.dir.local_path().parent.iterdir() if p.name.startswith(".")
    ]  # no temp dir


def test_funnel_has_the_manifest_numbers(full):
    _, markdown, manifests = full
    funnel = _section(markdown, "## 1. Funnel")
    for stage, manifest in manifests.items():
        counts = manifest["counts"]
        removed = counts["docs_in"] - counts["docs_out"]
        row = f"| {stage} | `{manifest['version_id']}` | {counts['docs_in']:,} | "
        assert row + f"{counts['docs_out']:,} | {removed:,} |" in funnel
    extra = manifests["tokenize"]["counts"]["extra"]
    total = extra["tokens_train"] + extra["tokens_val"]
    assert f"{total:,} (train {extra['tokens_train']:,}, val {extra['tokens_val']:,})" in funnel
    assert f"gpt2: {extra['tokens_per_byte']:.3f} tokens/byte on val" in funnel
    assert "![funnel](funnel.png)" in funnel


def test_every_drop_reason_is_listed_with_samples(full):
    _, markdown, manifests = full
    removals = _section(markdown, "## 2. Removals")
    reasons = 0
    for stage in ("crawl", "extract", "filter", "dedup"):
        for reason, count in manifests[stage]["counts"]["drops"].items():
            reasons += 1
            assert f"| `{reason}` | {count:,} |" in removals
            samples = _samples(removals, reason)
            assert len(samples) == min(count, 3), reason
            if stage in ("filter", "dedup"):  # documents: URL, then the start of their text
                assert all(" — “" in line for line in samples), samples
    assert reasons >= 8  # the sample site plants crawl errors, bad pages and duplicates
    for line in _samples(removals, "dedup_near"):
        assert "duplicate of http" in line


def test_extract_reasons_are_explained_beside_their_heading():
    row = ReasonRow("extract", "extract_not_http", 2, 0.5)
    data = SimpleNamespace(
        reasons=[row], stages={"extract": SimpleNamespace(counts={"docs_in": 4})}, kept=[]
    )
    lines = _reasons_section(data)
    assert (
        "#### `extract_not_http` (2): the record's target URI is not http(s)"
        " (dns:, ftp:, ... records)" in lines
    )


def test_histograms_for_the_measured_signals_with_thresholds(full, store):
    paths, markdown, manifests = full
    signals = _section(markdown, "## 3. Filter signals")
    config = manifests["filter"]["config"]
    assert f"min_doc_words = {config['gopher_quality']['min_doc_words']}" in signals
    assert f"line_punct_thr = {config['fineweb']['line_punct_thr']:g}" in signals
    assert f"min_score = {config['language']['min_score']:g}" in signals
    # A signal whose rule removed documents gets a histogram even if not a "main" one.
    assert "`gopher_quality.bullet_lines_ratio`" in signals
    assert "![filter signals](signals.png)" in signals
    storage, _ = store
    partial = Path(build_report(storage, "no-fineweb").markdown).read_text()
    assert "`gopher_quality.word_count`" in partial and "`fineweb." not in partial


def test_top_domains_and_duplicate_clusters(full):
    _, markdown, manifests = full
    kept = manifests["dedup"]["counts"]["docs_out"]
    assert f"| 127.0.0.1 | {kept:,} |" in _section(markdown, "## 4. Top domains")
    clusters = _section(markdown, "## 5. Duplicate clusters")
    extra = manifests["dedup"]["counts"]["extra"]
    assert (
        f"{extra['clusters']:,} clusters of 2+ documents; largest {extra['largest_cluster']}"
        in clusters
    )
    drops = manifests["dedup"]["counts"]["drops"]
    table = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", clusters, re.M)
    assert sum(int(n) for _, n, _, _ in table) == extra["clusters"]
    assert sum(int(e) for _, _, e, _ in table) == drops.get("dedup_exact", 0)
    assert sum(int(n) for _, _, _, n in table) == drops.get("dedup_near", 0)


def test_html_is_self_contained_and_escapes_document_text(full):
    paths, _, _ = full
    page = Path(paths.html).read_text()
    assert page.count('src="data:image/png;base64,') == len(paths.images)
    assert ".png" not in page.replace("data:image/png", "")
    assert "<table>" in page and "<h2>5. Duplicate clusters</h2>" in page
    hostile = "<script>alert(1)</script> a|b *bold* [x](javascript:y)"
    assert escape(hostile) == (
        r"&lt;script&gt;alert(1)&lt;/script&gt; a\|b \*bold\* \[x\](javascript:y)"
    )
    rendered = render_html(f"| cell |\n|---|\n| {escape(hostile)} |\n", "t")
    assert "<script>" not in rendered and "<em>" not in rendered and "<a " not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a|b *bold*" in rendered


@pytest.mark.parametrize(
    ("run_id", "present", "absent"),
    [
        ("until-filter", ["| filter |", "No dedup stage in this run."], ["| dedup |"]),
        ("warc-source", ["| extract |", "- crawl: not part of this run"], ["| crawl |"]),
        ("gone", ["| dedup |", "is gone; counts from run.json", "The dedup version is gone."], []),
        ("empty", ["No data stage in this run.", "Nothing was removed."], ["![funnel]"]),
    ],
)
def test_runs_with_missing_stages_still_get_a_report(store, run_id, present, absent):
    storage, _ = store
    paths = build_report(storage, run_id)
    markdown = Path(paths.markdown).read_text()
    assert Path(paths.html).is_file()
    for text in present:
        assert text in markdown, text
    for text in absent:
        assert text not in markdown, text


def test_rebuilding_gives_the_same_report(store, full, tmp_path):
    storage, _ = store
    paths, markdown, _ = full
    again = build_report(storage, "full", tmp_path / "again", ReportConfig())
    assert Path(again.markdown).read_text() == markdown
    assert Path(again.html).read_text() == Path(paths.html).read_text()
    for key, image in paths.images.items():
        assert Path(again.images[key]).read_bytes() == Path(image).read_bytes(), key
    size = Path(again.images["funnel"]).stat().st_size
    replaced = build_report(storage, "full", tmp_path / "again", ReportConfig(dpi=50))
    assert Path(replaced.images["funnel"]).stat().st_size < size  # the new report, not the old
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temp or old copy left


def test_unknown_run_is_a_one_line_error(store):
    storage, _ = store
    with pytest.raises(DataError, match="run 'nope' not found"):
        build_report(storage, "nope")


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start : end if end >= 0 else None]


def _samples(removals: str, reason: str) -> list[str]:
    """The sample list items under a reason's `####` heading, continuation lines joined."""
    block = removals.split(f"#### `{reason}` (")[1].split("\n\n", 2)[1]
    return [item.strip() for item in ("\n" + block).split("\n- ")[1:]]


def test_contamination_section_from_the_evaluate_version(tmp_path):
    storage = Storage.at(tmp_path)
    folder = storage.version_folder("evaluate", "0e1e1e1e1e1e1e1e").local_path()
    folder.mkdir(parents=True)
    contamination = {
        "ngram": 13,
        "train_documents": 1200,
        "train_documents_with_eval_ngrams": 3,
        "val": {"items": 40, "too_short": 8, "contaminated": 2, "fraction": 2 / 32},
        "hellaswag": {"items": 10, "too_short": 0, "contaminated": 0, "fraction": 0.0},
    }
    (folder / "eval.json").write_text(json.dumps({"contamination": contamination}))
    _record(storage, "evaluated", [{"stage": "evaluate", "version_id": "0e1e1e1e1e1e1e1e"}])
    _record(storage, "not-evaluated", [])
    markdown = Path(build_report(storage, "evaluated").markdown).read_text()
    assert "## 6. Contamination" in markdown and "1,200 training documents" in markdown
    assert "| val | 40 | 8 | 2 | 6.25% |" in markdown
    assert "| hellaswag | 10 | 0 | 0 | 0.00% |" in markdown
    assert "Contamination" not in Path(build_report(storage, "not-evaluated").markdown).read_text()


def test_reasons_say_how_many_more_and_kept_documents_are_sampled(full):
    _, markdown, manifests = full
    removals = _section(markdown, "## 2. Removals")
    for stage in ("filter", "dedup"):
        for reason, count in manifests[stage]["counts"]["drops"].items():
            block = removals.split(f"#### `{reason}` (")[1].split("####", 1)[0]
            more = f"*… and {count - 3:,} more*"
            assert (more in block) == (count > 3), (reason, count)
    kept = manifests["dedup"]["counts"]["docs_out"]
    block = removals.split(f"### Kept: 3 of the {kept:,} documents dedup kept")[1]
    assert len([line for line in block.splitlines() if line.startswith("- http")]) == 3
    assert block.count(" — “") == 3  # each with the start of its text


def test_the_language_signal_counts_the_language_filters_removals(full):
    _, markdown, manifests = full
    signals = _section(markdown, "## 3. Filter signals")
    drops = manifests["filter"]["counts"]["drops"]
    removed = sum(v for k, v in drops.items() if k.startswith("language_"))
    assert removed > 0  # the sample site plants non-English pages
    (row,) = [line for line in signals.splitlines() if line.startswith("| `language.score`")]
    assert row.split(" | ")[-2] == f"{removed:,}"  # "removed by it"
