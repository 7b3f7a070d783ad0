"""Every data stage, in plain Python, measured against the sample site's ground truth.

One crawl of the generated site feeds extract → filter → dedup → tokenize (with the default,
FineWeb-like settings), and each stage is checked against what the generator planted.
"""

from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

from pipeline import crawl, dedup, extract, filters, tokenize
from pipeline.crawl.crawler import CrawlConfig
from pipeline.dedup import DedupConfig
from pipeline.extract.extractor import ExtractConfig
from pipeline.filters import FilterConfig
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import (
    DISALLOWED_PREFIX,
    SampleSiteConfig,
    expected_fetchable_paths,
    generate_site,
    pages_of_kind,
)
from pipeline.stage import process_map, serial_map
from pipeline.tokenize.tokenizer import TokenizeConfig, decode_tokens


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    truth = generate_site(site_dir, SampleSiteConfig(seed=7))
    with serve_site(site_dir) as base_url:
        yield base_url, truth


@pytest.fixture(scope="module")
def outputs(site, tmp_path_factory):
    """Run the five stages once; each test inspects one of them."""
    base_url, _ = site
    root = tmp_path_factory.mktemp("stages")
    out = {name: root / name for name in ("crawl", "extract", "filter", "dedup", "tokenize")}
    for path in out.values():
        path.mkdir()
    results = {}
    config = CrawlConfig(
        seeds=[f"{base_url}/"],
        delay_seconds=0,
        per_host_concurrency=4,
        allow_private_addresses=True,
    )
    results["crawl"] = crawl.crawl(config, out["crawl"])
    warcs = sorted((out["crawl"] / "warc").glob("*.warc.gz"))
    results["extract"] = extract.run(ExtractConfig(), warcs, out["extract"], process_map(2))
    results["filter"] = filters.run(FilterConfig(), out["extract"] / "data", out["filter"])
    results["dedup"] = dedup.run(DedupConfig(), out["filter"] / "data", out["dedup"])
    results["tokenize"] = tokenize.run(
        TokenizeConfig(val_fraction=0.1), out["dedup"] / "data", out["tokenize"], serial_map
    )
    return out, results


def _rows(folder: Path) -> list[dict]:
    return [
        row
        for shard in sorted(folder.glob("part-*.parquet"))
        for row in pq.read_table(shard).to_pylist()
    ]


def _path(url: str) -> str:
    return urlsplit(url).path


def test_crawl_fetches_every_allowed_page_and_nothing_disallowed(site, outputs):
    _, truth = site
    out, results = outputs
    index = _rows(out["crawl"] / "index")
    stored = {_path(r["url"]) for r in index if r["warc_file"]}
    assert stored == set(expected_fetchable_paths(truth, html_only=True))
    disallowed = [r for r in index if _path(r["url"]).startswith(DISALLOWED_PREFIX)]
    assert disallowed and all(r["status"] is None for r in disallowed)
    assert all(r["error"] == "robots_disallowed" for r in disallowed)
    errors = {_path(r["url"]): r["error"] for r in index if r["error"]}
    for kind, error in [
        ("not_found", "http_404"),
        ("server_error", "http_500"),
        ("non_html", "not_html"),
        ("redirect", "redirect"),
    ]:
        (page,) = pages_of_kind(truth, kind)
        assert errors[page["path"]] == error, kind
    counts = results["crawl"]
    assert counts.docs_in == counts.docs_out + sum(counts.drops.values())


def test_extracted_text_matches_the_body(site, outputs):
    _, truth = site
    out, _ = outputs
    docs = {_path(d["url"]): d for d in _rows(out["extract"] / "data")}
    articles = pages_of_kind(truth, "article")
    recalls = []
    for page in articles:
        body_lines = [line for line in page["body_text"].split("\n") if line.strip()]
        text = docs[page["path"]]["text"]
        recalls.append(sum(line in text for line in body_lines) / len(body_lines))
        assert "cookie" not in text.lower(), page["path"]
        assert docs[page["path"]]["language"] == "en"
    assert min(recalls) >= 0.8 and sum(recalls) / len(recalls) >= 0.95


def test_filter_removes_planted_low_quality_and_keeps_articles(site, outputs):
    _, truth = site
    out, _ = outputs
    removed = {_path(r["url"]): r["reason"] for r in _rows(out["filter"] / "removed")}
    kept = {_path(d["url"]) for d in _rows(out["filter"] / "data")}
    for page in pages_of_kind(truth, "spam", "short", "non_english"):
        assert page["path"] in removed, page["kind"]
    for page in pages_of_kind(truth, "non_english"):
        assert removed[page["path"]].startswith("language_")
    link_farms = pages_of_kind(truth, "link_farm")
    assert all(p["path"] not in kept for p in link_farms)  # no text extracted, or filtered
    articles = pages_of_kind(truth, "article")
    assert sum(p["path"] in kept for p in articles) == len(articles)


def test_dedup_keeps_one_survivor_per_planted_group(site, outputs):
    _, truth = site
    out, _ = outputs
    kept = {_path(d["url"]) for d in _rows(out["dedup"] / "data")}
    removed = {_path(r["url"]): r for r in _rows(out["dedup"] / "removed")}
    groups: dict[str, list[str]] = {}
    for page in truth["pages"]:
        if page.get("duplicate_group"):
            groups.setdefault(page["duplicate_group"], []).append(page["path"])
    assert groups
    for members in groups.values():
        assert sum(path in kept for path in members) == 1, members
        for path in members:
            if path in removed:
                assert removed[path]["reason"] in ("dedup_exact", "dedup_near")
                assert removed[path]["duplicate_of"] is not None
    unique_articles = [
        p["path"] for p in pages_of_kind(truth, "article") if not p.get("duplicate_group")
    ]
    assert all(path in kept for path in unique_articles)


def test_tokens_decode_back_to_the_documents(outputs):
    out, results = outputs
    texts = {d["id"]: d["text"] for d in _rows(out["dedup"] / "data")}
    token_rows = _rows(out["tokenize"] / "train") + _rows(out["tokenize"] / "val")
    assert {r["id"] for r in token_rows} == set(texts)
    for row in token_rows:
        assert decode_tokens("gpt2", row["tokens"]) == texts[row["id"]] + "<|endoftext|>"
    extra = results["tokenize"].extra
    assert extra["docs_val"] >= 1 and extra["tokens_train"] > 10_000
    assert (
        pq.read_schema(next((out["tokenize"] / "train").glob("*.parquet")))
        .field("tokens")
        .type.value_type
        == "uint16"
    )
