import random
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash
from pydantic import ValidationError

from pipeline.dedup import (
    BandTask,
    DedupConfig,
    Signer,
    candidate_probability,
    cluster_documents,
    find_duplicates,
    link_band,
    normalize_text,
    preference,
    run,
    shingle_hash,
    word_shingles,
)
from pipeline.documents import DOCUMENT_SCHEMA, atomic_write_table, shard_name
from pipeline.errors import DataError
from pipeline.stage import process_map
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def words() -> list[str]:
    return shakespeare_words()


def shakespeare_words() -> list[str]:
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
        table = pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA)
        atomic_write_table(table, folder / shard_name(i))
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


def outcome(removed: dict) -> set[tuple]:
    return {(i, r["reason"], r["duplicate_of"], r["cluster_id"]) for i, r in removed.items()}


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


def test_normalize_folds_case_space_punctuation_and_compatibility_forms():
    assert normalize_text("  Hello,\n\tWORLD!  ") == "hello world"
    assert normalize_text("“Don’t” — stop…") == normalize_text('"don\'t" - stop.')
    assert normalize_text("ＦＵＬＬ\u00a0width ﬁne") == "full width fine"  # NFKC
    assert normalize_text("end.Start") == "end start"
    assert normalize_text(None) == ""


def test_normalize_fast_paths_match_the_plain_definition():
    """NFKC, lower, every P* and whitespace character to a space, split and join."""
    punctuation = {c for c in map(chr, range(0x3000)) if unicodedata.category(c).startswith("P")}
    pool = [chr(c) for c in range(128)] + list("\u00a0\u3000\u2028“”’—…éİﬁＦ！東\u200b\u1680")
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pool) for _ in range(rng.randrange(40)))
        plain = unicodedata.normalize("NFKC", text).lower()
        plain = " ".join("".join(" " if c in punctuation else c for c in plain).split())
        assert normalize_text(text) == plain, repr(text)


def test_shingles_short_and_long_texts():
    assert word_shingles("", 5) == set()
    assert word_shingles("only three words", 5) == {b"only three words"}
    assert word_shingles("a b c d e f", 5) == {b"a b c d e", b"b c d e f"}


def test_config_bands_and_threshold():
    config = DedupConfig()
    assert (config.bands, config.rows, config.num_perm) == (14, 8, 112)
    assert config.threshold == pytest.approx(0.719, abs=1e-3)
    assert config.against == [] and config.band_splits == 1
    with pytest.raises(ValidationError):
        DedupConfig(bands=20, rows=8)  # 160 > 112 permutations
    with pytest.raises(ValidationError):
        DedupConfig(threshold=0.8)  # derived from bands/rows, not settable
    assert DedupConfig.model_validate(config.model_dump(mode="json")) == config


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_signatures_equal_datasketch_with_the_same_shingle_hash(words, ngram):
    """The vectorized batch gives datasketch's affine32 MinHash of word_shingles, text by text."""
    lengths = [0, 1, 2, 4, 5, 6, 50, 700, 3, 0]
    texts = [normalize_text(passage(words, 37 * i, n)) for i, n in enumerate(lengths)]
    texts.append(normalize_text("Héllo wörld, ünïcode: ça va? 東京 タワー ok"))
    signer = Signer(112, 7, ngram)
    batch = signer.sign(texts)
    for text, row in zip(texts, batch, strict=True):
        minhash = MinHash(num_perm=112, seed=7, scheme="affine32", hashfunc=shingle_hash)
        minhash.update_batch(word_shingles(text, ngram))
        assert np.array_equal(minhash.hashvalues, row), text[:40]
        assert np.array_equal(signer.sign([text])[0], row)  # batch-independent
    with pytest.raises(ValueError, match="normalized"):
        signer.sign(["two\nlines"])


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


def test_survivor_is_longest_then_smallest_id():
    rank = preference(pa.array(["m", "k", "x", "a"]), np.array([10, 10, 9, 11]))
    assert rank.tolist() == [2, 1, 3, 0]
    groups = np.zeros(4, np.int64)  # one exact group, no LSH edges
    c = cluster_documents(rank[:3], groups[:3], np.empty((2, 0), np.int64), exact=True)
    assert c.duplicate_of.tolist() == [1, 1, 1] and c.exact.tolist() == [True, False, True]
    assert c.removed.tolist() == [0, 2] and (c.clusters, c.largest_cluster) == (1, 3)


def band_task(tmp_path: Path, signatures: np.ndarray, verify: float | None) -> BandTask:
    from pipeline.dedup import band_hashes

    np.save(tmp_path / "bands.npy", band_hashes(signatures, 14, 8))
    np.save(tmp_path / "sigs.npy", signatures)
    return BandTask(
        0,
        0,
        1,
        (tmp_path / "bands.npy",),
        3,
        tmp_path / "edges.npy",
        (tmp_path / "sigs.npy",),
        verify,
    )


def test_verification_checks_past_a_false_positive_neighbour(tmp_path):
    """a, b, c share band 0; only a ~ c. Linking sorted neighbours (a-b, b-c) would miss it."""
    sig = np.random.default_rng(0).integers(0, 2**32, size=(3, 128), dtype=np.uint32)
    sig[:, :8] = sig[0, :8]  # band 0 equal for all three
    sig[2, 112:] = sig[0, 112:]  # a, c also agree on the 16 spare positions: 24/128 = 0.19
    result = link_band(band_task(tmp_path, sig, None))
    assert np.load(tmp_path / "edges.npy").tolist() == [[0, 1], [1, 2]]
    assert result.extra == {"candidate_pairs": 2, "verified_away_pairs": 0}
    result = link_band(band_task(tmp_path, sig, 0.15))
    assert np.load(tmp_path / "edges.npy").tolist() == [[0], [2]]
    assert result.extra == {"candidate_pairs": 2, "verified_away_pairs": 1}


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
    b = edit(a, range(0, 600, 100), "b")  # a ~ b, b ~ c at Jaccard ~0.9; a ~ c ~0.82
    c = edit(b, range(50, 600, 100), "c")
    d = edit(a, range(15, 600, 120), "d")
    docs = [doc(n, t) for n, t in zip("abcd", [a, b, c, d], strict=True)]
    result, kept, removed, _ = dedup(tmp_path, [docs[:2], docs[2:]])
    assert len(kept) == 1
    survivor = kept.pop()
    assert {r["cluster_id"] for r in removed.values()} == {survivor}
    assert result.extra["largest_cluster"] == 4 and result.extra["clusters"] == 1


@pytest.mark.parametrize("verify", [None, 0.6])
def test_same_result_whatever_the_layout(tmp_path, words, verify):
    docs = corpus(words)
    config = DedupConfig(verify_threshold=verify)
    ref, kept, removed, _ = dedup(tmp_path, [docs], config, name="one")
    assert removed and kept
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    layouts = {
        "three": ([shuffled[0::3], shuffled[1::3], shuffled[2::3]], config, None),
        "five": ([shuffled[i::5] for i in range(5)][::-1], config, process_map(2)),
        "splits": (
            [shuffled[:9], shuffled[9:]],
            config.model_copy(update={"band_splits": 3}),
            None,
        ),
    }
    for name, (shards, cfg, pmap) in layouts.items():
        result, kept2, removed2, _ = dedup(tmp_path, shards, cfg, pmap, name=name)
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
    assert sorted(p.name for p in out.iterdir()) == ["data", "removed", "signatures"]
    for split in ("data", "removed", "signatures"):
        assert sorted(p.name for p in (out / split).iterdir()) == [shard_name(i) for i in range(3)]
    sig = pq.read_table(out / "signatures" / shard_name(2))
    assert sig.column("id").to_pylist() == [d["id"] for d in docs[20:]]
    assert sig.schema.field("hashvalues").type == pa.list_(pa.uint32(), 112)
    assert pq.read_table(out / "data" / shard_name(0)).schema == DOCUMENT_SCHEMA
    assert result.extra["signatures"] == "signatures"
    assert set(result.extra["seconds"]) == {"sign", "index", "lsh", "cluster", "write"}


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
    signer = Signer(112, 1, ngram=1)  # unigrams: a text's shingles are exactly its words
    for s in (0.5, 0.72, 0.9):
        shared = round(2 * 200 * s / (1 + s))  # |A∩B| for |A| = |B| = 200
        texts = []
        for t in range(150):
            common = [f"c{t}x{k}" for k in range(shared)]
            texts.append(" ".join(common + [f"a{t}x{k}" for k in range(200 - shared)]))
            texts.append(" ".join(common + [f"b{t}x{k}" for k in range(200 - shared)]))
        sig = signer.sign(texts).reshape(150, 2, 112)
        bands = (sig[:, 0] == sig[:, 1]).reshape(150, 14, 8).all(axis=2)
        rate = bands.any(axis=1).mean()
        assert rate == pytest.approx(candidate_probability(s, 14, 8), abs=0.12), s


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
