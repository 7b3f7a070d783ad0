import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.dedup import (
    DedupConfig,
    Signer,
    candidate_probability,
    cluster_documents,
    find_duplicates,
    normalize_text,
    run,
    word_shingles,
)
from pipeline.documents import DOCUMENT_SCHEMA, DataError, atomic_write_table, shard_name
from pipeline.stage import process_map
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def words() -> list[str]:
    path = shared_data("text", "tinyshakespeare", "data", "tinyshakespeare", "input.txt")
    return path.read_text(encoding="utf-8").split()


def passage(words: list[str], start: int, n: int = 600) -> str:
    return " ".join(words[start : start + n])


def edit(text: str, positions: range, tag: str) -> str:
    """Replace the words at `positions` (each edit changes up to 5 word 5-grams)."""
    out = text.split()
    for p in positions:
        out[p] = f"{tag}{p}"
    return " ".join(out)


def jaccard(a: str, b: str) -> float:
    sa, sb = word_shingles(normalize_text(a), 5), word_shingles(normalize_text(b), 5)
    return len(sa & sb) / len(sa | sb)


def doc(id_: str, text: str) -> dict:
    return {
        "id": id_,
        "url": f"https://example.com/{id_}",
        "domain": "example.com",
        "title": id_,
        "text": text,
        "language": "en",
        "language_score": 0.99,
        "fetched_at": datetime(2024, 5, 1, tzinfo=UTC),
        "source_warc": "crawl.warc.gz",
        "source_offset": 0,
    }


def write_shards(folder: Path, shards: list[list[dict]]) -> Path:
    for i, docs in enumerate(shards):
        atomic_write_table(
            pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA), folder / shard_name(i)
        )
    return folder


def read_split(out: Path, split: str) -> list[dict]:
    return [
        row
        for p in sorted((out / split).glob("part-*.parquet"))
        for row in pq.read_table(p).to_pylist()
    ]


def dedup(tmp_path: Path, shards: list[list[dict]], config=None, pmap=None, name="run"):
    inp = write_shards(tmp_path / f"{name}-in", shards)
    out = tmp_path / f"{name}-out"
    kwargs = {"pmap": pmap} if pmap else {}
    result = run(config or DedupConfig(), inp, out, **kwargs)
    kept = {d["id"] for d in read_split(out, "data")}
    removed = {d["id"]: d for d in read_split(out, "removed")}
    return result, kept, removed, out


def test_normalize_folds_case_space_punctuation_and_compatibility_forms():
    assert normalize_text("  Hello,\n\tWORLD!  ") == "hello world"
    assert normalize_text("“Don’t” — stop…") == normalize_text('"don\'t" - stop.')
    assert normalize_text("ＦＵＬＬ\u00a0width ﬁne") == "full width fine"  # NFKC
    assert normalize_text("end.Start") == "end start"
    assert normalize_text(None) == ""


def test_shingles_short_and_long_texts():
    assert word_shingles("", 5) == set()
    assert word_shingles("only three words", 5) == {b"only three words"}
    assert word_shingles("a b c d e f", 5) == {b"a b c d e", b"b c d e f"}


def test_config_bands_and_threshold():
    config = DedupConfig()
    assert (config.bands, config.rows, config.num_perm) == (14, 8, 112)
    assert config.threshold == pytest.approx(0.719, abs=1e-3)
    with pytest.raises(ValidationError):
        DedupConfig(bands=20, rows=8)  # 160 > 112 permutations
    with pytest.raises(ValidationError):
        DedupConfig(threshold=0.8)  # derived from bands/rows, not settable
    assert DedupConfig.model_validate(config.model_dump(mode="json")) == config


def test_exact_duplicates_keep_one(tmp_path, words):
    text = passage(words, 1000, 200)
    copies = [
        doc("b", text),
        doc("a", text.upper()),
        doc("c", "  " + text.replace(" ", "\n  ").replace(",", " ,") + " !!"),
        doc("d", text.replace(".", "")),  # shortest
    ]
    other = doc("z", passage(words, 50_000, 200))
    result, kept, removed, _ = dedup(tmp_path, [copies + [other]])
    # Longest text survives: "c" (extra whitespace and punctuation).
    assert kept == {"c", "z"}
    assert {r["reason"] for r in removed.values()} == {"dedup_exact"}
    assert {(r["duplicate_of"], r["cluster_id"], r["stage"]) for r in removed.values()} == {
        ("c", "c", "dedup")
    }
    assert result.drops == {"dedup_exact": 3}
    assert result.extra["clusters"] == 1 and result.extra["largest_cluster"] == 4


def test_survivor_ties_go_to_smallest_id():
    hv = np.zeros((3, 112), dtype=np.uint32)
    c = cluster_documents(
        ["m", "k", "x"], [10, 10, 9], ["h", "h", "h"], hv, exact=True, bands=14, rows=8, seed=1
    )
    assert c.survivor.tolist() == [1, 1, 1] and c.exact.tolist() == [True, False, True]


def test_verification_checks_past_a_false_positive_neighbour():
    """a, b, c share one bucket; only a ~ c. Linking sorted neighbours (a-b, b-c) would miss it."""
    hv = np.random.default_rng(0).integers(0, 2**32, size=(3, 128), dtype=np.uint32)
    hv[:, :8] = hv[0, :8]  # band 0 equal for all three
    hv[2, 112:] = hv[0, 112:]  # a, c also agree on the 16 spare positions: 24/128 = 0.19
    common = dict(exact=True, bands=14, rows=8, seed=1)
    c = cluster_documents(["a", "b", "c"], [5, 5, 5], ["1", "2", "3"], hv, **common)
    assert c.survivor.tolist() == [0, 0, 0] and c.candidate_pairs == 2
    c = cluster_documents(
        ["a", "b", "c"], [5, 5, 5], ["1", "2", "3"], hv, verify_threshold=0.15, **common
    )
    assert c.survivor.tolist() == [0, 1, 0]
    assert (c.candidate_pairs, c.verified_away_pairs) == (3, 2)


def test_near_duplicate_removed_and_unrelated_kept(tmp_path, words):
    original = passage(words, 2000)
    variant = edit(original, range(3, 600, 62), "zq")  # 10 edits
    assert 0.8 < jaccard(original, variant) < 0.9
    unrelated = [doc(f"u{i}", passage(words, 10_000 + 5_000 * i)) for i in range(4)]
    result, kept, removed, _ = dedup(
        tmp_path, [[doc("orig", original), *unrelated[:2]], [doc("var", variant), *unrelated[2:]]]
    )
    survivor = "orig" if len(original) >= len(variant) else "var"
    gone = ({"orig", "var"} - {survivor}).pop()
    assert kept == {survivor, "u0", "u1", "u2", "u3"} and set(removed) == {gone}
    assert removed[gone]["reason"] == "dedup_near"
    assert removed[gone]["duplicate_of"] == removed[gone]["cluster_id"] == survivor
    assert result.drops == {"dedup_near": 1} and result.extra["candidate_pairs"] >= 1


def test_chain_of_copies_has_one_survivor(tmp_path, words):
    a = passage(words, 3000)
    b = edit(a, range(0, 600, 60), "b")  # a ~ b, b ~ c, a ~ c less so
    c = edit(b, range(30, 600, 60), "c")
    d = edit(a, range(15, 600, 80), "d")
    docs = [doc(n, t) for n, t in zip("abcd", [a, b, c, d], strict=True)]
    result, kept, removed, _ = dedup(tmp_path, [docs[:2], docs[2:]])
    assert len(kept) == 1
    survivor = kept.pop()
    assert {r["cluster_id"] for r in removed.values()} == {survivor}
    assert result.extra["largest_cluster"] == 4 and result.extra["clusters"] == 1


def corpus(words: list[str]) -> list[dict]:
    """12 unrelated passages, 4 with an exact and two near copies; two exact pairs."""
    docs = [doc(f"u{i:02d}", passage(words, 20_000 + 4_000 * i, 300)) for i in range(12)]
    for i in range(0, 12, 3):
        base = docs[i]["text"]
        docs.append(doc(f"x{i:02d}", base.lower()))  # exact copy, same length: id tie-break
        docs.append(doc(f"n{i:02d}", edit(base, range(i, 300, 70), "n")))
        docs.append(doc(f"m{i:02d}", edit(base, range(i + 30, 300, 80), "m")))
    tie = passage(words, 80_000, 300)
    docs += [doc("v1", tie), doc("v0", tie.upper())]  # same length: the smaller id survives
    docs.append(doc("short1", "To be, or not to be."))
    docs.append(doc("short2", "to be or NOT to be"))
    return docs


def outcome(removed: dict) -> set[tuple]:
    return {(i, r["reason"], r["duplicate_of"], r["cluster_id"]) for i, r in removed.items()}


@pytest.mark.parametrize("verify", [None, 0.6])
def test_same_result_whatever_the_layout(tmp_path, words, verify):
    docs = corpus(words)
    config = DedupConfig(verify_threshold=verify)
    ref, kept, removed, _ = dedup(tmp_path, [docs], config, name="one")
    assert removed and kept
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    layouts = {
        "three": ([shuffled[0::3], shuffled[1::3], shuffled[2::3]], None),
        "five": ([shuffled[i::5] for i in range(5)][::-1], process_map(2)),
    }
    for name, (shards, pmap) in layouts.items():
        result, kept2, removed2, _ = dedup(tmp_path, shards, config, pmap, name=name)
        assert kept2 == kept, name
        assert outcome(removed2) == outcome(removed), name
        for key in ("clusters", "largest_cluster", "candidate_pairs", "verified_away_pairs"):
            assert result.extra[key] == ref.extra[key], (name, key)


def test_counts_add_up_and_shards_keep_their_names(tmp_path, words):
    docs = corpus(words)
    shards = [docs[:20], [], docs[20:]]
    result, kept, removed, out = dedup(tmp_path, shards)
    assert result.docs_in == len(docs) == result.docs_out + sum(result.drops.values())
    assert len(kept) == result.docs_out and len(removed) == sum(result.drops.values())
    assert set(kept) | set(removed) == {d["id"] for d in docs}
    assert result.drops == {"dedup_exact": 6, "dedup_near": 8}
    assert "v0" in kept and removed["v1"]["duplicate_of"] == "v0"
    for split in ("data", "removed", "signatures"):
        assert sorted(p.name for p in (out / split).iterdir()) == [shard_name(i) for i in range(3)]
    assert not (out / "decisions").exists()
    sig = pq.read_table(out / "signatures" / shard_name(2))
    assert sig.column("id").to_pylist() == [d["id"] for d in docs[20:]]
    assert sig.schema.field("hashvalues").type == pa.list_(pa.uint32(), 112)
    assert result.extra["signatures"] == "signatures"


def test_switches_and_verification(tmp_path, words):
    original = passage(words, 5000)
    docs = [
        doc("a", original),
        doc("b", original.upper()),
        doc("c", edit(original, range(2, 600, 50), "e")),
    ]
    _, kept, removed, _ = dedup(tmp_path, [docs], DedupConfig(near=False), name="exact")
    assert kept == {"a", "c"} and removed["b"]["reason"] == "dedup_exact"
    _, kept, removed, _ = dedup(tmp_path, [docs], DedupConfig(exact=False), name="near")
    assert len(kept) == 1 and {r["reason"] for r in removed.values()} == {"dedup_near"}
    strict = DedupConfig(verify_threshold=0.99)
    result, kept, _, _ = dedup(tmp_path, [docs], strict, name="strict")
    assert kept == {"a", "c"} and result.extra["verified_away_pairs"] >= 1


def test_s_curve_matches_theory():
    """Candidate rate (any of 14 bands of 8 equal) of sets at a known Jaccard vs 1-(1-s^8)^14."""
    config = DedupConfig()
    signer = Signer(config.num_perm, config.seed)
    for s in (0.5, 0.72, 0.9):
        hits = 0
        trials = 150
        for t in range(trials):
            shared = round(2 * 200 * s / (1 + s))  # |A∩B| for |A| = |B| = 200
            common = [f"{s}-{t}-c{k}".encode() for k in range(shared)]
            a = signer.sign(common + [f"{t}a{k}".encode() for k in range(200 - shared)])
            b = signer.sign(common + [f"{t}b{k}".encode() for k in range(200 - shared)])
            bands = (a[: 14 * 8] == b[: 14 * 8]).reshape(14, 8).all(axis=1)
            hits += bool(bands.any())
        assert hits / trials == pytest.approx(candidate_probability(s, 14, 8), abs=0.12), s


def test_bad_input_names_the_file(tmp_path, words):
    with pytest.raises(DataError, match="no such file"):
        run(DedupConfig(), tmp_path / "missing", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / shard_name(0)).write_bytes(b"not parquet")
    with pytest.raises(DataError, match="part-00000.parquet"):
        run(DedupConfig(), bad, tmp_path / "out2")
    _, _, _, out = dedup(tmp_path, [[doc("a", passage(words, 0, 50))]])
    sigs = [out / "signatures" / shard_name(0)]
    with pytest.raises(DataError, match="signatures made with"):
        find_duplicates(DedupConfig(ngram=3), sigs, tmp_path / "decisions")
