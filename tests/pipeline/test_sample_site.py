"""The sample website: deterministic, planted pages as labelled, served with the right statuses.

The quality checks below are small reference versions of the Gopher/C4/FineWeb rules with
datatrove's default thresholds (REFERENCE.md), so the site is checked independently of
`pipeline.filters`.
"""

import itertools
import re
import urllib.robotparser
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trafilatura
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from pydantic import ValidationError
from trafilatura.meta import reset_caches

from pipeline.errors import DataError
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import (
    KINDS,
    SampleSiteConfig,
    expected_fetchable_paths,
    generate_site,
    jaccard,
    load_ground_truth,
    pages_by_path,
    pages_of_kind,
    word_shingles,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("site")
    return root, generate_site(root)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_site(tmp_path / name, SampleSiteConfig(seed=seed))
    first = _files(tmp_path / "a")
    assert first == _files(tmp_path / "b")
    other = _files(tmp_path / "c")
    assert other["ground_truth.json"] != first["ground_truth.json"]
    assert other["index.html"] != first["index.html"]


def test_every_kind_is_present_in_the_configured_numbers(site):
    _, truth = site
    config = SampleSiteConfig()
    counts = Counter(p["kind"] for p in truth["pages"])
    assert set(counts) == set(KINDS)
    assert counts["article"] == config.articles
    assert counts["exact_duplicate"] == config.exact_duplicates
    assert counts["near_duplicate"] == config.near_duplicates
    assert counts["spam"] == config.spam_pages
    assert counts["link_farm"] == config.link_farms
    assert counts["short"] == config.short_pages
    assert counts["non_english"] == config.non_english
    assert counts["disallowed"] == config.disallowed_pages
    statuses = {p["kind"]: p["status"] for p in truth["pages"]}
    assert (statuses["not_found"], statuses["redirect"], statuses["server_error"]) == (
        404,
        301,
        500,
    )
    assert pages_by_path(truth)[pages_of_kind(truth, "redirect")[0]["redirect_to"]]["status"] == 200


def test_ground_truth_round_trips_and_links_duplicates(site):
    root, truth = site
    assert load_ground_truth(root) == truth
    paths = pages_by_path(truth)
    for copy in pages_of_kind(truth, "exact_duplicate", "near_duplicate"):
        original = paths[copy["duplicate_of"]]
        assert original["kind"] == "article"
        assert original["duplicate_group"] == copy["duplicate_group"] is not None
    for page in truth["pages"]:
        assert page["disallowed"] == page["path"].startswith("/private/")
        if page["status"] == 200:
            assert (root / page["file"]).is_file()
    with pytest.raises(ValueError, match="unknown page kind"):
        pages_of_kind(truth, "articles")


def test_articles_are_prose_of_the_right_size(site):
    _, truth = site
    articles = pages_of_kind(truth, "article")
    assert len({a["title"] for a in articles}) == len(articles)
    for article in articles:
        text = article["body_text"]
        assert 300 <= len(text.split()) <= 900, article["path"]
        paragraphs = [line for line in text.split("\n") if len(line.split()) > 10]
        assert len(paragraphs) >= 5
        assert all(re.match(r"\W*[A-Z].*[.!?\"]$", p) for p in paragraphs), article["path"]
        assert "{" not in text and "lorem ipsum" not in text.lower()
        assert len(article["comments"]) >= 3


# --- reference quality rules (datatrove defaults; numbers from REFERENCE.md) ---
_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”«»„…—–·")
_STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use cookies")


def _policy(line: str) -> bool:
    return any(phrase in line.lower() for phrase in _POLICY)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+(?:[-']\w+)*|[^\w\s]", text) if set(w) - _PUNCT]


def _dup_chars(items: list[str]) -> tuple[int, int]:
    seen, count, chars = set(), 0, 0
    for item in items:
        count, chars = (count + 1, chars + len(item)) if item in seen else (count, chars)
        seen.add(item)
    return count, chars


def quality_failure(text: str) -> str | None:
    """First failed rule of Gopher quality/repetition, C4 (FineWeb variant) and FineWeb."""
    words, lines = _words(text), text.split("\n")
    if len(words) < 50:  # Gopher App. A
        return "gopher_short_doc"
    if not 3 <= sum(map(len, words)) / len(words) <= 10:
        return "gopher_mean_word_length"
    if (
        len({"the", "be", "to", "of", "and", "that", "have", "with"} & {w.lower() for w in words})
        < 2
    ):
        return "gopher_stop_words"
    n_dup, dup_chars = _dup_chars(lines)
    if n_dup / len(lines) > 0.3 or dup_chars / len(text) > 0.2:  # Gopher Table A1
        return "gopher_dup_lines"
    for n, limit in ((2, 0.20), (3, 0.18), (4, 0.16)):
        grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        gram, count = grams.most_common(1)[0]
        if len(gram) * count / len(text) > limit:
            return f"gopher_top_{n}_gram"
    for n, limit in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)):
        seen, i, repeated = set(), 0, 0
        while i <= len(words) - n:
            gram = "".join(words[i : i + n])
            repeated, i = (repeated + len(gram), i + n) if gram in seen else (repeated, i + 1)
            seen.add(gram)
        if repeated / len(text) > limit:
            return f"gopher_dup_{n}_gram"
    if "{" in text or "lorem ipsum" in text.lower():
        return "c4_bad_string"
    kept = [
        ln for ln in lines if len(ln.split()) >= 3 and not any(p in ln.lower() for p in _POLICY)
    ]
    if sum(len(re.findall(r"[.!?](?:\s|$)", ln)) for ln in kept) < 5:  # C4
        return "c4_too_few_sentences"
    if sum(ln.endswith((".", "'", '"', "!", "?")) for ln in kept) / len(kept) < 0.12:  # FineWeb
        return "fineweb_line_punct_ratio"
    if sum(len(ln) <= 30 for ln in kept) / len(kept) > 0.67:
        return "fineweb_short_line_ratio"
    if _dup_chars(kept)[1] / len("".join(kept)) > 0.01:
        return "fineweb_char_dup_ratio"
    return None


def test_english_articles_pass_quality_rules_and_low_quality_pages_fail(site):
    _, truth = site
    for page in pages_of_kind(truth, "article", "disallowed", "exact_duplicate", "near_duplicate"):
        assert quality_failure(page["body_text"]) is None, page["path"]
    for page in pages_of_kind(truth, "spam"):
        assert quality_failure(page["body_text"]).startswith("gopher_"), page["path"]
    for page in pages_of_kind(truth, "short"):
        assert quality_failure(page["body_text"]) == "gopher_short_doc"
        assert len(page["body_text"].split()) < 50
    for page in pages_of_kind(truth, "link_farm"):
        assert quality_failure(page["body_text"]) is not None


def test_language_id_says_english_only_for_english_pages(site):
    _, truth = site
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    for page in pages_of_kind(truth, "article", "near_duplicate"):
        language, score = identifier.classify(page["body_text"].replace("\n", " "))
        assert language == "en" and score > 0.65, (page["path"], language, score)  # FineWeb
    foreign = pages_of_kind(truth, "non_english")
    assert {p["language"] for p in foreign} == {"fr", "de", "es"}
    for page in foreign:
        assert len(page["body_text"].split()) >= 200
        language, _ = identifier.classify(page["body_text"].replace("\n", " "))
        assert language == page["language"], page["path"]


def test_near_duplicates_are_close_and_distinct_articles_far(site):
    _, truth = site
    paths = pages_by_path(truth)
    for copy in pages_of_kind(truth, "near_duplicate"):
        score = jaccard(paths[copy["duplicate_of"]]["body_text"], copy["body_text"])
        assert 0.75 <= score <= 0.95
        assert copy["jaccard_to_original"] == pytest.approx(score, abs=1e-4)
    for copy in pages_of_kind(truth, "exact_duplicate"):
        assert copy["body_text"] == paths[copy["duplicate_of"]]["body_text"]
        assert copy["jaccard_to_original"] == 1.0
    shingles = [word_shingles(p["body_text"]) for p in pages_of_kind(truth, "article")]
    worst = max(len(a & b) / len(a | b) for a, b in itertools.combinations(shingles, 2))
    assert worst < 0.3


def test_trafilatura_recovers_the_body_and_no_boilerplate(site):
    root, truth = site
    reset_caches()  # trafilatura's deduplicate cache is process-wide; start from empty
    for page in pages_of_kind(truth, "article"):
        page_html = (root / page["file"]).read_text(encoding="utf-8")
        extracted = trafilatura.extract(
            page_html, favor_precision=True, include_comments=False, deduplicate=True
        )  # FineWeb's settings (REFERENCE.md)
        lines, body = extracted.split("\n"), page["body_text"].split("\n")
        assert sum(line in lines for line in body) / len(body) >= 0.9, page["path"]
        assert all(line in body for line in lines), page["path"]  # nothing but body lines
        for comment in page["comments"]:
            assert comment not in extracted
        assert "cookie" not in extracted.lower() and "newsletter" not in extracted.lower()


def test_links_reach_every_page_and_robots_disallows_private(site):
    root, truth = site
    robots = urllib.robotparser.RobotFileParser()
    robots.parse((root / "robots.txt").read_text().splitlines())
    for page in truth["pages"]:
        if page["kind"] != "robots":
            assert page["depth"] is not None and page["depth"] <= 3, page["path"]
        assert robots.can_fetch("llmforge", page["path"]) != page["disallowed"], page["path"]
    fetchable = expected_fetchable_paths(truth)
    assert "/" in fetchable and "/files/annual-report.pdf" in fetchable
    assert not any(p.startswith("/private/") for p in fetchable)
    assert "/files/annual-report.pdf" not in expected_fetchable_paths(truth, html_only=True)
    kinds = {pages_by_path(truth)[p]["kind"] for p in fetchable}
    assert kinds.isdisjoint({"not_found", "redirect", "server_error", "robots", "disallowed"})


def test_server_answers_with_planted_statuses_and_types(site):
    root, truth = site
    redirect = pages_of_kind(truth, "redirect")[0]
    article = pages_of_kind(truth, "article")[0]
    with serve_site(root) as base_url, httpx.Client(base_url=base_url) as client:
        assert base_url.startswith("http://127.0.0.1:")
        home = client.get("/")
        assert home.status_code == 200
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        assert home.content == (root / "index.html").read_bytes()
        page = client.get(article["path"] + "?utm_source=x")
        assert page.status_code == 200 and article["title"] in page.text
        moved = client.get(redirect["path"])
        assert moved.status_code == 301 and moved.headers["location"] == redirect["redirect_to"]
        followed = client.get(redirect["path"], follow_redirects=True)
        assert followed.status_code == 200 and followed.url.path == redirect["redirect_to"]
        assert client.get(pages_of_kind(truth, "not_found")[0]["path"]).status_code == 404
        assert client.get(pages_of_kind(truth, "server_error")[0]["path"]).status_code == 500
        pdf = client.get("/files/annual-report.pdf")
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF-")
        robots = client.get("/robots.txt")
        assert robots.headers["content-type"].startswith("text/plain")
        assert "Disallow: /private/" in robots.text
        assert client.get("/ground_truth.json").status_code == 404  # never served
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""


def test_small_config_and_bad_inputs(tmp_path):
    truth = generate_site(
        tmp_path / "small",
        SampleSiteConfig(articles=3, exact_duplicates=1, near_duplicates=1, posts_per_page=2),
    )
    assert len(pages_of_kind(truth, "listing")) > 1
    with pytest.raises(ValidationError):
        SampleSiteConfig(pages=3)
    with pytest.raises(ValidationError, match="near_duplicates"):
        SampleSiteConfig(articles=2, exact_duplicates=2, near_duplicates=1)
    with pytest.raises(DataError, match="ground_truth.json"):
        load_ground_truth(tmp_path / "nowhere")
    with pytest.raises(DataError), serve_site(tmp_path / "nowhere"):
        pass
    with pytest.raises(ValueError, match="127.0.0.1"), serve_site(tmp_path / "small", "0.0.0.0"):
        pass
