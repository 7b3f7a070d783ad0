"""A deterministic sample website with ground truth, so every stage can be measured offline.

`generate_site(out_dir, SampleSiteConfig(seed=0))` writes HTML pages (by URL path), `robots.txt`,
a PDF and `ground_truth.json`. Besides clean English articles it plants what a real crawl
meets: exact and near duplicates, keyword spam, link farms, too-short pages, non-English
pages, a robots.txt `Disallow`ed folder, a 404 link, a 301 redirect, a 500 and a non-HTML
file. `pipeline.sample_site.server.serve_site` serves it on 127.0.0.1.

    python -m pipeline.sample_site.site /tmp/site --seed 0
    python -m pipeline.sample_site.server /tmp/site --port 8000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.errors import DataError
from pipeline.sample_site import html, prose

KINDS = (
    "article", "exact_duplicate", "near_duplicate", "spam", "link_farm", "short", "non_english",
    "disallowed", "listing", "not_found", "redirect", "server_error", "non_html", "robots",
)  # fmt: skip
POST_KINDS = ("article", "exact_duplicate", "near_duplicate", "spam", "link_farm", "short")
GROUND_TRUTH = "ground_truth.json"
DISALLOWED_PREFIX = "/private/"
SHINGLE_WORDS = 5  # word 5-grams, as FineWeb's MinHash dedup (REFERENCE.md)


class SampleSiteConfig(BaseModel):
    """How many pages of each kind; small by default because the demo trains on it."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    articles: int = Field(40, ge=1)
    exact_duplicates: int = Field(4, ge=0)  # copies of distinct articles
    near_duplicates: int = Field(4, ge=0)  # edited copies of other distinct articles
    spam_pages: int = Field(3, ge=0, le=len(prose.SPAM_KEYWORDS))
    link_farms: int = Field(2, ge=0)
    short_pages: int = Field(3, ge=0)
    non_english: int = Field(4, ge=0)  # cycles French, German, Spanish
    disallowed_pages: int = Field(2, ge=0)  # under robots.txt `Disallow: /private/`
    posts_per_page: int = Field(10, ge=1)  # listing pagination
    min_article_words: int = Field(300, ge=50)  # Gopher needs >= 50 words (Gopher App. A)
    max_article_words: int = Field(850, ge=50)  # hard cap (the brief asks ~300-900)
    # Near duplicates are edited until word 5-gram Jaccard with the original falls in this band:
    # above FineWeb's ~0.72 MinHash threshold (14 bands x 8 rows, REFERENCE.md), below identity.
    near_jaccard_min: float = Field(0.78, gt=0, lt=1)
    near_jaccard_max: float = Field(0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> SampleSiteConfig:
        if self.exact_duplicates + self.near_duplicates > self.articles:
            raise ValueError("exact_duplicates + near_duplicates must be <= articles")
        if self.min_article_words > self.max_article_words:
            raise ValueError("min_article_words must be <= max_article_words")
        if self.near_jaccard_min > self.near_jaccard_max:
            raise ValueError("near_jaccard_min must be <= near_jaccard_max")
        return self


def word_shingles(text: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams (words = runs of letters/digits)."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}


def jaccard(a: str, b: str, n: int = SHINGLE_WORDS) -> float:
    sa, sb = word_shingles(a, n), word_shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _page(path: str, kind: str, status: int = 200, **fields: Any) -> dict[str, Any]:
    page = {
        "path": path, "kind": kind, "status": status, "file": None, "depth": None,
        "title": None, "language": None, "body_text": None, "comments": [],
        "duplicate_group": None, "duplicate_of": None, "jaccard_to_original": None,
        "redirect_to": None, "disallowed": path.startswith(DISALLOWED_PREFIX),
    }  # fmt: skip
    page.update(fields)
    return page


def _slug(title: str, taken: set[str]) -> str:
    """A unique ASCII slug of at most ~60 characters, cut at a word boundary."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    base = base if len(base) <= 60 else base[:60].rsplit("-", 1)[0]
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


_SUBSTITUTES = {
    "often": "frequently", "many": "numerous", "usually": "typically", "rarely": "seldom",
    "now": "today", "still": "even now", "several": "a few", "local": "nearby", "said": "remarked",
    "because": "as", "although": "though", "remarkably": "strikingly", "plan": "intend",
    "quietly": "gradually", "explained": "told us", "few": "hardly any", "every": "each",
}  # fmt: skip
_AUXILIARIES = {"have", "has", "is", "are", "was", "were", "can"}
_INSERTS = ["also", "reportedly", "certainly", "largely", "probably"]


def near_copy(rng: random.Random, lines: list[str], low: float, high: float) -> list[str]:
    """A syndicated copy: word substitutions and inserted adverbs until Jaccard is in [low, high].

    Each edit changes at most 2 x 5 shingles, so the walk down from 1.0 stops just below a
    target drawn inside the band (a 300-word body moves ~0.03 per edit at most).
    """
    target = rng.uniform(low + 0.02, high)
    original, words = "\n".join(lines), [line.split(" ") for line in lines]
    candidates = [i for i, line in enumerate(words) if len(line) > 12]  # paragraphs, not headings
    for _ in range(10_000):
        if jaccard(original, "\n".join(" ".join(w) for w in words)) <= target:
            break
        line = words[rng.choice(candidates)]
        spots = [i for i, w in enumerate(line) if w in _SUBSTITUTES or w in _AUXILIARIES]
        i = rng.choice(spots) if spots else rng.randrange(1, len(line))
        if line[i] in _SUBSTITUTES:
            line[i] = _SUBSTITUTES[line[i]]
        else:
            line.insert(i + 1, rng.choice(_INSERTS))
    copy = [" ".join(w) for w in words]
    score = jaccard(original, "\n".join(copy))
    if not low <= score <= high:
        raise DataError(f"sample site: near duplicate Jaccard {score:.3f} outside [{low}, {high}]")
    return copy


def generate_site(out_dir: Path, config: SampleSiteConfig | None = None) -> dict[str, Any]:
    """Write the site under `out_dir` and return its ground truth (also in ground_truth.json).

    Files already in `out_dir` are overwritten, never deleted; the server only serves paths
    listed in the ground truth, so leftovers are harmless.
    """
    builder = _SiteBuilder(config or SampleSiteConfig())
    pages, files = builder.build()
    truth = {
        "seed": builder.config.seed,
        "site_name": builder.site.name,
        "config": builder.config.model_dump(),
        "pages": sorted(pages, key=lambda p: p["path"]),
    }
    out_dir = Path(out_dir)
    for path, data in files.items():
        file = out_dir / _file_of(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
    text = json.dumps(truth, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    (out_dir / GROUND_TRUTH).write_text(text, encoding="utf-8")
    return json.loads(text)


def _file_of(path: str) -> str:
    return "index.html" if path == "/" else path.lstrip("/")


class _SiteBuilder:
    """Builds the page records, then renders them; every random draw is keyed by the seed."""

    def __init__(self, config: SampleSiteConfig):
        self.config = config
        self.seed = config.seed
        self.rng = random.Random(f"sample-site:{config.seed}")
        paper = self.rng.choice(html.PAPERS)
        self.site = html.SiteChrome(name=f"The {prose.place_name(self.rng)} {paper}")
        self.taken: set[str] = set()  # slugs in use
        self.topics = self.rng.sample(sorted(prose.TOPICS), len(prose.TOPICS))
        self.titles = self.rng.sample(prose.TITLES, len(prose.TITLES))  # a deck: varied titles

    def _rng(self, *key: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *key))))

    def article(self, i: int, folder: str, kind: str) -> dict[str, Any]:
        cfg = self.config
        writer = prose.EnglishWriter(self._rng(folder, i), self.topics[i % len(self.topics)])
        title = writer.title(self.titles[(i + len(folder)) % len(self.titles)])
        body = writer.body(cfg.min_article_words, cfg.max_article_words)
        comments = writer.comments(writer.rng.randint(3, 6))
        return _page(
            f"/{folder}/{_slug(title, self.taken)}.html",
            kind,
            title=title,
            language="en",
            body_text="\n".join(body),
            comments=comments,
            topic=prose.TOPICS[writer.topic][0],
            byline=(prose.person_name(writer.rng), html.date(writer.rng)),
        )

    def copies(self, originals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Print views (exact) of the first originals, partners' edited copies of the rest."""
        cfg, copies = self.config, []
        for k, original in enumerate(originals):
            original["duplicate_group"] = group = f"group-{k:02d}"
            slug = original["path"].rsplit("/", 1)[1]
            same = {key: original[key] for key in ("title", "language", "topic", "byline")}
            common = dict(same, duplicate_group=group, duplicate_of=original["path"])
            if k < cfg.exact_duplicates:
                body, path, kind = original["body_text"], f"/print/{slug}", "exact_duplicate"
            else:
                partner = self.rng.choice(html.PARTNERS)
                lines = original["body_text"].split("\n")
                lines = near_copy(self.rng, lines, cfg.near_jaccard_min, cfg.near_jaccard_max)
                body, kind = "\n".join(lines), "near_duplicate"
                path = f"/syndicated/{_slug(partner, set())}-{slug}"
                common["title"] = f"{original['title']} ({partner})"
            score = round(jaccard(original["body_text"], body), 4)
            copies.append(_page(path, kind, body_text=body, jaccard_to_original=score, **common))
        return copies

    def planted(self) -> list[dict[str, Any]]:
        """Spam, link farms, short notices and non-English pages."""
        cfg, pages = self.config, []

        def add(folder: str, kind: str, title: str, lines: list[str], lang: str = "en") -> None:
            path = f"/{folder}/{_slug(title, self.taken)}.html"
            pages.append(_page(path, kind, title=title, language=lang, body_text="\n".join(lines)))

        for i, words in enumerate(self.rng.sample(prose.SPAM_KEYWORDS, cfg.spam_pages)):
            title = prose.title_case(f"{words[0]} {words[1]} {words[3]}")
            add("deals", "spam", title, prose.spam_body(self._rng("spam", i), words))
        for i in range(cfg.link_farms):
            anchors = prose.link_farm_anchors(self._rng("links", i), 60)
            add("links", "link_farm", f"Top Partner Sites {i + 1}", anchors)
        for i in range(cfg.short_pages):
            add("notes", "short", f"Notice {i + 1}", prose.short_body(self._rng("short", i)))
        for i in range(cfg.non_english):
            lang = ("fr", "de", "es")[i % 3]
            title, lines = prose.foreign_page(self._rng(lang, i), lang, 220, 5)
            add(lang, "non_english", title, lines, lang)
        return pages

    def build(self) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        cfg = self.config
        articles = [self.article(i, "articles", "article") for i in range(cfg.articles)]
        n_copies = cfg.exact_duplicates + cfg.near_duplicates
        originals = self.rng.sample(articles, n_copies)
        posts = articles + self.copies(originals) + self.planted()
        posts = self.rng.sample(posts, len(posts))  # listing order mixes kinds
        private = [self.article(i, "private", "disallowed") for i in range(cfg.disallowed_pages)]
        # The redirect points at an article with no copies: trafilatura's deduplicate cache
        # (FineWeb setting) drops a paragraph seen more than twice in one process.
        target = next((a for a in articles if a not in originals), articles[0])["path"]
        specials = [
            _page("/robots.txt", "robots", file="robots.txt"),
            _page("/files/annual-report.pdf", "non_html", file="files/annual-report.pdf"),
            _page("/gallery/summer-photos.html", "not_found", 404),
            _page("/live/results.html", "server_error", 500),
            _page("/2019/" + target.rsplit("/", 1)[1], "redirect", 301, redirect_to=target),
        ]
        pages = posts + private + specials
        files = self.render(pages, posts, private, specials)
        for page in pages:
            for render_only in ("topic", "byline"):
                page.pop(render_only, None)
            if page["file"] is None and page["path"] in files:
                page["file"] = _file_of(page["path"])
        _set_depths(pages, files)
        return pages, files

    def render(self, pages: list, posts: list, private: list, specials: list) -> dict[str, bytes]:
        """HTML of listings (appended to `pages`) and posts, robots.txt and the PDF."""
        size, site = self.config.posts_per_page, self.site
        chunks = [posts[i : i + size] for i in range(0, len(posts), size)] or [[]]
        site.listing_paths = ["/"] + [f"/page/{n}.html" for n in range(2, len(chunks) + 1)]
        kinds = {p["kind"]: p["path"] for p in specials}
        links = [(kinds[kind], text) for kind, text in html.SPECIAL_LINKS.items()]
        links += [(p["path"], f"Members only: {p['title']}") for p in private]
        private_paths = [p["path"] for p in private]
        site.footer_links = html.footer_links(private_paths)
        files: dict[str, bytes] = {}
        for n, chunk in enumerate(chunks):
            path = site.listing_paths[n]
            title = site.name if n == 0 else f"Latest stories, page {n + 1}"
            files[path] = html.listing(site, title, chunk, n, links if n == 0 else []).encode()
            pages.append(_page(path, "listing", title=title, language="en"))
        for page in posts + private:
            related = [p for p in self.rng.sample(posts, min(5, len(posts))) if p is not page][:4]
            more = private_paths if page["kind"] == "disallowed" else []
            files[page["path"]] = html.post(site, page, related, more).encode()
        files["/robots.txt"] = html.robots_txt(DISALLOWED_PREFIX).encode()
        files["/files/annual-report.pdf"] = html.pdf(f"{site.name}: annual report")
        return files


def _set_depths(pages: list[dict[str, Any]], files: dict[str, bytes]) -> None:
    """Link depth from `/` as a polite crawler sees it; fails on any broken link.

    BFS over the hrefs actually written (and the redirect); disallowed pages get a depth
    but are not expanded, since a crawler that obeys robots.txt never reads their links.
    """
    known = {p["path"]: p for p in pages}
    graph = {
        path: html.internal_links(data.decode("utf-8"))
        for path, data in files.items()
        if path == "/" or path.endswith(".html")
    }
    for page in pages:
        if page["redirect_to"]:
            graph[page["path"]] = [page["redirect_to"]]
    for source, targets in graph.items():
        for target in targets:
            if target not in known:
                raise DataError(f"sample site: {source} links to unknown page {target}")
    queue, known["/"]["depth"] = deque(["/"]), 0
    while queue:
        path = queue.popleft()
        if known[path]["disallowed"]:
            continue
        for target in graph.get(path, []):
            if known[target]["depth"] is None:
                known[target]["depth"] = known[path]["depth"] + 1
                queue.append(target)


def load_ground_truth(site_dir: Path | str) -> dict[str, Any]:
    path = Path(site_dir) / GROUND_TRUTH
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no ground truth (run generate_site first)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def pages_of_kind(truth: dict[str, Any], *kinds: str) -> list[dict[str, Any]]:
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown page kind(s): {sorted(unknown)}")
    return [p for p in truth["pages"] if p["kind"] in kinds]


def pages_by_path(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["path"]: p for p in truth["pages"]}


def expected_fetchable_paths(truth: dict[str, Any], html_only: bool = False) -> list[str]:
    """Paths a polite crawler starting at `/` gets a 200 for (robots.txt itself excluded)."""
    return [
        p["path"]
        for p in truth["pages"]
        if p["status"] == 200
        and not p["disallowed"]
        and p["depth"] is not None
        and p["kind"] != "robots"
        and not (html_only and p["kind"] == "non_html")
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    truth = generate_site(args.out_dir, SampleSiteConfig(seed=args.seed))
    print(f"wrote {len(truth['pages'])} pages to {args.out_dir}")


if __name__ == "__main__":
    main()
