"""Incremental dedup: a second version deduplicated against the first one's signatures."""

import pytest

from pipeline.dedup import DedupConfig, run
from pipeline.errors import DataError
from tests.pipeline.test_dedup import dedup, doc, edit, outcome, passage, shakespeare_words


@pytest.fixture(scope="module")
def words() -> list[str]:
    return shakespeare_words()


@pytest.fixture
def earlier(tmp_path, words):
    """Version 1: three passages, one of them twice (the copy removed there)."""
    a, b, c = (passage(words, start, 400) for start in (1000, 9000, 17000))
    docs = [doc("p1", a), doc("p1x", a.upper()), doc("p2", b), doc("p3", c)]
    result, kept, removed, out = dedup(tmp_path, [docs[:2], docs[2:]], name="v1")
    assert kept == {"p1", "p2", "p3"} and set(removed) == {"p1x"}
    return out, a, b


@pytest.mark.parametrize("verify", [None, 0.5])
def test_new_documents_are_deduplicated_against_an_earlier_version(
    tmp_path, words, earlier, verify
):
    v1, a, b = earlier
    near_b = edit(b, range(5, 400, 80), "q")  # 5 edits: Jaccard ~0.88 to p2
    e = passage(words, 40_000, 400)
    new = [
        doc("q1", a.lower()),  # same normalized text as p1 (and p1x)
        doc("q2", near_b),
        doc("q3", near_b.upper()),  # exact copy of q2: joins q2's cluster, which holds p2
        doc("q4", passage(words, 30_000, 400)),  # new content
        doc("q5", e),
        doc("q6", edit(e, range(7, 400, 90), "r")),  # near copy of q5, nothing earlier
        doc("p3", passage(words, 50_000, 400)),  # same id as before, changed page: new content
    ]
    config = DedupConfig(against=[str(v1)], verify_threshold=verify)
    result, kept, removed, out = dedup(tmp_path, [new[:3], new[3:]], config, name="v2")
    q56 = "q5" if len(new[4]["text"]) >= len(new[5]["text"]) else "q6"
    gone = ({"q5", "q6"} - {q56}).pop()
    assert kept == {"q4", q56, "p3"}
    previous = f"previous:{v1.name}:"
    assert outcome(removed) == {
        ("q1", "dedup_exact_previous", "p1", previous + "p1"),
        ("q2", "dedup_near_previous", "p2", previous + "p2"),
        ("q3", "dedup_near_previous", "p2", previous + "p2"),
        (gone, "dedup_near", q56, q56),
    }
    assert result.drops == {"dedup_exact_previous": 1, "dedup_near": 1, "dedup_near_previous": 2}
    assert result.extra["earlier_documents"] == 4
    # Earlier documents are never written again, and this version's signatures cover only its own.
    signatures = sorted(p.name for p in (out / "signatures").iterdir())
    assert signatures == ["part-00000.parquet", "part-00001.parquet"]


def test_chained_versions_and_bad_folders(tmp_path, words, earlier):
    v1, a, _ = earlier
    _, kept, _, v2 = dedup(
        tmp_path,
        [[doc("n1", passage(words, 60_000, 300))]],
        DedupConfig(against=[str(v1)]),
        name="v2",
    )
    assert kept == {"n1"}
    config = DedupConfig(against=[str(v1), str(v2)])
    _, kept, removed, _ = dedup(
        tmp_path, [[doc("z1", a), doc("z2", passage(words, 60_000, 300))]], config, name="v3"
    )
    assert not kept and removed["z2"]["cluster_id"] == f"previous:{v2.name}:n1"
    with pytest.raises(DataError, match="signatures made with"):
        run(DedupConfig(ngram=3, against=[str(v1)]), v1 / "data", tmp_path / "out")
    with pytest.raises(DataError, match="signatures/"):
        run(DedupConfig(against=[str(tmp_path)]), v1 / "data", tmp_path / "out2")
