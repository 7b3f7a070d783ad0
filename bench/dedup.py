"""Dedup benchmarks: signing speed, memory at scale, and quality on labelled near duplicates.

    python bench/dedup.py speed                  # our signer vs datasketch.MinHash.bulk
    python bench/dedup.py quality                # precision/recall vs exact 5-gram Jaccard
    python bench/dedup.py scale --docs 1000000   # the full stage, peak RSS (several minutes)
    python bench/dedup.py all --docs 20000       # everything, a quick scale run

Real text from ../shared/data/text (tinyshakespeare, dolma CC documents, the-verdict); the
scale run uses synthetic documents (Zipf words over a real vocabulary, 3% edited copies, 1%
exact copies) written shard by shard to a temp dir. One JSON line per measurement on stdout,
then a summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from datasketch import MinHash  # noqa: E402

from pipeline.dedup import (  # noqa: E402
    DedupConfig,
    Signer,
    band_hashes,
    candidate_probability,
    normalize_text,
    run,
    shingle_hash,
    word_shingles,
)
from pipeline.documents import (  # noqa: E402
    DOCUMENT_SCHEMA,
    atomic_write_table,
    read_table,
    shard_name,
)
from pipeline.stage import process_map, serial_map  # noqa: E402

SHARED = Path(os.environ.get("LLMFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TEXT = SHARED / "data" / "text"  # as tests/conftest.py finds it
BOILERPLATE = (  # added to some copies, as sites do
    "Share this article on Facebook Twitter and LinkedIn. Subscribe to our newsletter for weekly"
    " updates. Copyright 2024 All rights reserved. Privacy policy | Terms of use | Contact us."
    " This site uses cookies to improve your experience. Read more related stories below."
)
SUMMARY: list[tuple[str, str]] = []


def report(record: dict, name: str, summary: str) -> None:
    """One JSON line now; one row of the summary table at the end."""
    print(json.dumps(record), flush=True)
    SUMMARY.append((name, summary))


def paragraphs() -> list[list[str]]:
    """Paragraphs (lists of words) of every real text, in source order."""
    texts = [(TEXT / "tinyshakespeare/data/tinyshakespeare/input.txt").read_text()]
    texts.append((TEXT / "the-verdict/ch02/01_main-chapter-code/the-verdict.txt").read_text())
    for path in sorted((TEXT / "dolma-cc_en_head").rglob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.open()]
    return [p.split() for t in texts for p in t.replace("\r", "").split("\n\n") if p.split()]


def documents(rng: random.Random) -> list[list[list[str]]]:
    """Real documents of 300-800 words: runs of consecutive paragraphs."""
    docs, current, target = [], [], rng.randint(300, 800)
    for para in paragraphs():
        current.append(para[: 800 - sum(map(len, current))])
        if sum(map(len, current)) >= target:
            docs.append(current)
            current, target = [], rng.randint(300, 800)
    return docs


def speed(args: argparse.Namespace) -> None:
    """Docs/s from normalized text to signatures, ours vs datasketch.MinHash.bulk (+ shingling)."""
    rng = random.Random(0)
    words = [w for p in paragraphs() for w in p]
    starts = [rng.randrange(len(words) - args.words) for _ in range(args.speed_docs)]
    texts = [normalize_text(" ".join(words[s : s + args.words])) for s in starts]
    signer = Signer(args.num_perm, 1, 5)
    check = [MinHash(num_perm=args.num_perm, seed=1, hashfunc=shingle_hash) for _ in texts[:20]]
    for m, t in zip(check, texts, strict=False):
        m.update_batch(word_shingles(t, 5))
    compatible = bool((np.stack([m.hashvalues for m in check]) == signer.sign(texts[:20])).all())
    best = {"numpy": float("inf"), "datasketch": float("inf")}
    for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
        start = time.perf_counter()
        for i in range(0, len(texts), 1024):  # sign_shard's batch size
            signer.sign(texts[i : i + 1024])
        best["numpy"] = min(best["numpy"], time.perf_counter() - start)
        start = time.perf_counter()
        MinHash.bulk([word_shingles(t, 5) for t in texts], num_perm=args.num_perm, seed=1)
        best["datasketch"] = min(best["datasketch"], time.perf_counter() - start)
    rates = {k: len(texts) / v for k, v in best.items()}
    ratio = rates["numpy"] / rates["datasketch"]
    record = {"bench": "speed", "docs": len(texts), "words": args.words}
    record |= {"num_perm": args.num_perm, "numpy_docs_per_s": round(rates["numpy"])}
    record |= {"datasketch_bulk_docs_per_s": round(rates["datasketch"]), "ratio": round(ratio, 2)}
    record["datasketch_compatible"] = compatible
    summary = f"{rates['numpy']:,.0f} vs {rates['datasketch']:,.0f} docs/s (datasketch bulk)"
    report(record, "signing speed", f"{summary} = {ratio:.1f}x; compatible={compatible}")


def edited(doc: list[list[str]], vocab: list[str], rng: random.Random) -> list[list[str]]:
    """A copy with random edits: substitutions, insertions, deletions, moves, boilerplate."""
    paras = [p[:] for p in doc]
    rate = rng.choice([0.0, 0.01, 0.02, 0.04, 0.06, 0.09, 0.13])
    for op in rng.sample(["sub", "ins", "del", "move", "boiler"], rng.randint(1, 3)):
        if op == "move" and len(paras) > 1:
            paras.insert(rng.randrange(len(paras)), paras.pop(rng.randrange(len(paras))))
        elif op == "boiler":
            boilerplate = BOILERPLATE.split(" ")
            extra = boilerplate[: rng.randint(15, len(boilerplate))]
            paras = [extra, *paras] if rng.random() < 0.5 else [*paras, extra]
        else:
            for p in paras:
                for _ in range(round(len(p) * rate)):
                    i = rng.randrange(len(p))
                    if op == "sub":
                        p[i] = rng.choice(vocab)
                    elif op == "ins":
                        p.insert(i, rng.choice(vocab))
                    elif len(p) > 1:
                        del p[i]
    return paras


def pair_jaccards(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, Jaccard) of every pair sharing a word 5-gram: exact, from a sparse product."""
    shingles = [word_shingles(t, 5) for t in texts]
    column: dict[bytes, int] = {}
    cols = [[column.setdefault(s, len(column)) for s in doc] for doc in shingles]
    indptr = np.cumsum([0, *map(len, cols)])
    matrix = sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(cols), indptr))
    inter = sparse.triu(matrix @ matrix.T, 1).tocoo()
    size = np.diff(indptr)
    jaccard = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    return inter.row, inter.col, jaccard


def labelled_set(rng: random.Random) -> list[tuple[str, str]]:
    """(id, text): real documents plus 0-3 edited copies each (10% of copies upper-cased)."""
    originals = documents(rng)
    vocab = sorted({w for d in originals for p in d for w in p})
    docs = [(f"o{i}", "\n\n".join(" ".join(p) for p in d)) for i, d in enumerate(originals)]
    for i, d in enumerate(originals):
        for k in range(rng.choice([0, 0, 1, 2, 3])):
            copy = "\n\n".join(" ".join(p) for p in edited(d, vocab, rng))
            docs.append((f"o{i}c{k}", copy.upper() if rng.random() < 0.1 else copy))
    return docs


def dedup_clusters(docs: list[tuple[str, str]], config: DedupConfig, shards: int) -> dict:
    """id -> cluster id (its own id when kept) after the full stage on `shards` shards."""
    rows = [dict.fromkeys(DOCUMENT_SCHEMA.names) | {"id": i, "text": t} for i, t in docs]
    cluster = {i: i for i, _ in docs}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(shards):
            table = pa.Table.from_pylist(rows[s::shards], schema=DOCUMENT_SCHEMA)
            atomic_write_table(table, Path(tmp, "in", shard_name(s)))
        run(config, Path(tmp, "in"), Path(tmp, "out"))
        for path in sorted(Path(tmp, "out", "removed").glob("*.parquet")):
            for r in read_table(path, ["id", "cluster_id"]).to_pylist():
                cluster[r["id"]] = r["cluster_id"]
    return cluster


def quality(args: argparse.Namespace) -> None:
    """Removals vs exact word 5-gram Jaccard: recall of pairs, removals with no near twin."""
    rng = random.Random(args.seed)
    docs = labelled_set(rng)
    texts = [normalize_text(t) for _, t in docs]
    row, col, jac = pair_jaccards(texts)
    max_j = np.zeros(len(docs))
    np.maximum.at(max_j, row, jac)
    np.maximum.at(max_j, col, jac)
    order = list(range(len(docs)))
    rng.shuffle(order)
    config = DedupConfig(verify_threshold=args.verify)
    cluster = dedup_clusters([docs[i] for i in order], config, shards=4)
    ids = [i for i, _ in docs]
    same = np.array([cluster[ids[a]] == cluster[ids[b]] for a, b in zip(row, col, strict=True)])
    removed = np.array([cluster[i] != i for i in ids])
    recall = {}
    for lo, hi in [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.01)]:
        sel = (jac >= lo) & (jac < hi)
        recall[f"{lo:.2f}-{min(hi, 1):.2f}"] = {
            "recall": round(float(same[sel].mean()), 4) if sel.any() else None,
            "pairs": int(sel.sum()),
        }
    high = jac >= 0.85
    false = removed & (max_j < 0.6)
    result = {
        "bench": "quality",
        "docs": len(docs),
        "verify_threshold": args.verify,
        "pairs_jaccard_ge_0.85": int(high.sum()),
        "recall_jaccard_ge_0.85": round(float(same[high].mean()), 4),
        "removed": int(removed.sum()),
        "removed_max_jaccard_lt_0.6": int(false.sum()),
        "false_removals_per_doc": round(float(false.sum() / len(docs)), 4),
        "precision_removed_max_jaccard_ge_0.6": round(1 - float(false.sum() / removed.sum()), 4),
        "removed_max_jaccard_lt_0.72": int((removed & (max_j < 0.72)).sum()),
        "recall_by_jaccard": recall,
    }
    summary = (
        f"recall(J>=0.85) {result['recall_jaccard_ge_0.85']} on {int(high.sum())} pairs; "
        f"removed {int(removed.sum())}/{len(docs)}, of them max J<0.6: {int(false.sum())} "
        f"({result['false_removals_per_doc']:.2%} of docs)"
    )
    report(result, "quality", summary)
    s_curve(texts, row, col, jac)


def s_curve(texts: list[str], row: np.ndarray, col: np.ndarray, jac: np.ndarray) -> None:
    """P(candidate) by Jaccard: theory 1-(1-s^r)^b vs the share of pairs sharing a band."""
    config = DedupConfig()
    signatures = Signer(config.num_perm, config.seed, config.ngram).sign(texts)
    bands = band_hashes(signatures, config.bands, config.rows)
    hit = (bands[:, row] == bands[:, col]).any(axis=0)
    points = []
    for lo in np.arange(0.3, 1.0, 0.05):
        sel = (jac >= lo) & (jac < lo + 0.05)
        mid = lo + 0.025
        points.append(
            {
                "jaccard": f"{lo:.2f}-{lo + 0.05:.2f}",
                "theory": round(candidate_probability(mid, config.bands, config.rows), 4),
                "empirical": round(float(hit[sel].mean()), 4) if sel.sum() >= 10 else None,
                "pairs": int(sel.sum()),
            }
        )
    record = {"bench": "s_curve", "bands": config.bands, "rows": config.rows, "points": points}
    curve = " ".join(f"{p['jaccard']}:{p['theory']}/{p['empirical']}" for p in points)
    report(record, "s-curve (theory/empirical)", curve)


def synthetic_shards(folder: Path, docs: int, words: int, shard_size: int, seed: int) -> None:
    """Zipf-like words over the real vocabulary; 3% edited and 1% exact copies of recent docs."""
    counts: dict[str, int] = {}
    for p in paragraphs():
        for w in normalize_text(" ".join(p)).split():
            counts[w] = counts.get(w, 0) + 1
    vocab = sorted(counts, key=lambda w: (-counts[w], w))  # most frequent first
    rng, pyrng = np.random.default_rng(seed), random.Random(seed)
    recent: list[str] = []
    for s, lo in enumerate(range(0, docs, shard_size)):
        n = min(shard_size, docs - lo)
        lengths = rng.integers(words * 4 // 5, words * 6 // 5 + 1, n)
        draws = (len(vocab) * rng.random(int(lengths.sum())) ** 2.5).astype(np.int64).tolist()
        texts, at = [], 0
        for length in lengths.tolist():
            r = pyrng.random()
            if recent and r < 0.03:
                copy = pyrng.choice(recent).split()
                for _ in range(len(copy) // 60):  # ~1.7% substituted: Jaccard ~0.85
                    copy[pyrng.randrange(len(copy))] = pyrng.choice(vocab)
                texts.append(" ".join(copy))
            elif recent and r < 0.04:
                texts.append(pyrng.choice(recent).upper())
            else:
                texts.append(" ".join(map(vocab.__getitem__, draws[at : at + length])))
            at += length
        recent = texts[-1000:]
        ids = [f"d{lo + k:08d}" for k in range(n)]
        columns = dict.fromkeys(DOCUMENT_SCHEMA.names, pa.nulls(n))
        columns |= {"id": pa.array(ids), "text": pa.array(texts), "url": pa.array(ids)}
        table = pa.Table.from_arrays(
            [columns[f.name].cast(f.type) for f in DOCUMENT_SCHEMA], schema=DOCUMENT_SCHEMA
        )
        atomic_write_table(table, folder / shard_name(s))


class PeakMemory(threading.Thread):
    """Every 0.2 s, the summed RSS and PSS of process `pid` and all its children (psutil).

    RSS counts pages forked workers share with their parent once per process (an upper
    bound); PSS splits shared pages between the processes that map them (the true total).
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss, self.pss, self.stop = pid, 0, 0, threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            rss = pss = 0
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                for p in [root, *root.children(recursive=True)]:
                    info = p.memory_full_info()
                    rss, pss = rss + info.rss, pss + info.pss
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            time.sleep(0.2)


def measured_run(conn: Connection) -> None:
    """Run the stage in a process of its own: waits for (folder, workers), sends back the
    result and ru_maxrss (KiB) of itself and of its largest worker. Spawned before the data is
    generated, as Linux carries ru_maxrss over from the parent through fork and exec."""
    folder, workers = conn.recv()
    pmap = process_map(workers) if workers > 1 else serial_map
    result = run(DedupConfig(), folder / "in", folder / "out", pmap)
    usage = [
        resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    conn.send((result, *usage))


def du(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30


def scale(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmforge-dedup-bench-", dir=args.tmp))
    spawn = multiprocessing.get_context("spawn")
    conn, child_conn = spawn.Pipe()
    child = spawn.Process(target=measured_run, args=(child_conn,))
    child.start()
    try:
        start = time.perf_counter()
        synthetic_shards(root / "in", args.docs, args.words, args.shard_size, seed=2)
        generated = time.perf_counter() - start
        sampler = PeakMemory(child.pid)
        sampler.start()
        start = time.perf_counter()
        conn.send((root, args.workers))
        result, ru_self, ru_worker = conn.recv()
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        gib = 2**30
        record = {
            "bench": "scale",
            "docs": args.docs,
            "words": args.words,
            "shards": -(-args.docs // args.shard_size),
            "workers": args.workers,
            "generate_s": round(generated, 1),
            "dedup_s": round(seconds, 1),
            "docs_per_s": round(args.docs / seconds),
            "phases_s": result.extra["seconds"],
            "peak_pss_sum_gib": round(sampler.pss / gib, 3),
            "peak_rss_sum_gib": round(sampler.rss / gib, 3),
            "ru_maxrss_main_gib": round(ru_self * 1024 / gib, 3),  # KiB on Linux
            "ru_maxrss_largest_worker_gib": round(ru_worker * 1024 / gib, 3),
            "input_gib": round(du(root / "in"), 2),
            "output_gib": round(du(root / "out"), 2),
            "docs_out": result.docs_out,
            "drops": result.drops,
            "candidate_pairs": result.extra["candidate_pairs"],
            "verified_away_pairs": result.extra["verified_away_pairs"],
            "clusters": result.extra["clusters"],
        }
        summary = (
            f"{args.docs:,} docs x ~{args.words} words in {seconds:.0f} s "
            f"({record['docs_per_s']:,}/s, {args.workers} workers); peak memory of the "
            f"stage's processes: {record['peak_pss_sum_gib']:.2f} GiB PSS, "
            f"{record['peak_rss_sum_gib']:.2f} GiB RSS summed; "
            f"removed {args.docs - result.docs_out:,}"
        )
        report(record, "scale", summary)
    finally:
        child.kill()
        child.join()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["speed", "quality", "scale", "all"])
    parser.add_argument("--speed-docs", type=int, default=2000, help="documents to sign")
    parser.add_argument("--num-perm", type=int, default=128, help="speed: permutations")
    parser.add_argument("--repeat", type=int, default=3, help="speed: best of N")
    parser.add_argument("--verify", type=float, default=DedupConfig().verify_threshold)
    parser.add_argument("--no-verify", dest="verify", action="store_const", const=None)
    parser.add_argument("--seed", type=int, default=1, help="quality: edits and doc cuts")
    parser.add_argument("--docs", type=int, default=1_000_000, help="scale: documents")
    parser.add_argument("--words", type=int, default=None, help="words per doc (1000 / 500)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="scale: docs per shard")
    parser.add_argument("--workers", type=int, default=2, help="scale: processes")
    parser.add_argument("--tmp", default=None, help="scale: parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="scale: keep the temp dir")
    args = parser.parse_args()
    if args.what in ("speed", "all"):
        speed(argparse.Namespace(**{**vars(args), "words": args.words or 1000}))
    if args.what in ("quality", "all"):
        quality(args)
    if args.what in ("scale", "all"):
        scale(argparse.Namespace(**{**vars(args), "words": args.words or 500}))
    width = max(len(name) for name, _ in SUMMARY)
    print(f"\n{'measurement':<{width}} | result")
    for name, value in SUMMARY:
        print(f"{name:<{width}} | {value}")


if __name__ == "__main__":
    main()
