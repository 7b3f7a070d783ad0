"""What checking a version before reuse costs: sizes only against sha256, on a ~1 GB version.

    python bench/integrity.py              # 1 GiB in 16 Parquet shards
    python bench/integrity.py --gib 0.25   # a quicker look

Writes a synthetic version (Parquet shards of incompressible binary values, so the bytes on
disk are the bytes hashed) into a temp dir under /tmp, commits it with build_version (which
hashes every file for the manifest), then times the reuse check (`load_version`) in each
mode: with the files in the page cache ("warm", the usual case right after a stage wrote
them) and after evicting them with posix_fadvise(DONTNEED) ("cold", read from disk), sha256
with one thread and with the default thread pool, and a second check in the same process
(cached). One JSON line per measurement, then a table. The temp data is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from pipeline.stage import StageResult  # noqa: E402
from pipeline.store import integrity  # noqa: E402
from pipeline.store.fs import Folder  # noqa: E402
from pipeline.store.versions import Storage, VersionPlan, build_version, load_version  # noqa: E402

VALUE_BYTES = 64 << 10  # one "document" per 64 KiB binary value


def write_shards(out: Folder, total_bytes: int, shards: int, seed: int = 0) -> StageResult:
    rng = np.random.default_rng(seed)
    per_shard = total_bytes // shards
    rows = max(1, per_shard // VALUE_BYTES)
    for i in range(shards):
        blob = rng.bytes(rows * VALUE_BYTES)
        values = pa.array([blob[j * VALUE_BYTES : (j + 1) * VALUE_BYTES] for j in range(rows)])
        table = pa.table({"id": pa.array(range(rows)), "payload": values})
        with out.output(f"data/part-{i:05d}.parquet") as path:
            pq.write_table(table, path, compression="none")
    return StageResult(docs_in=rows * shards, docs_out=rows * shards)


def evict(folder: Path) -> None:
    """Drop the files' pages from the page cache (no root needed for clean pages)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="version size in GiB")
    parser.add_argument("--shards", type=int, default=16)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="llmforge-bench-integrity-", dir="/tmp"))
    results = []

    def record(name: str, seconds: float, nbytes: int | None) -> None:
        """`nbytes` read and hashed in `seconds` (None: nothing read, a stat per file)."""
        row = {
            "measure": name,
            "seconds": round(seconds, 3),
            "MB_per_s": round(nbytes / 1e6 / seconds, 1) if nbytes and seconds > 0 else None,
        }
        results.append(row)
        print(json.dumps(row), flush=True)

    try:
        storage = Storage.at(tmp / "storage")
        plan = VersionPlan("tokenize", {"bench": True}, [], "bench")
        started = time.perf_counter()
        version = build_version(
            storage, plan, lambda out: write_shards(out, int(args.gib * (1 << 30)), args.shards)
        )
        nbytes = version.manifest["bytes_total"]
        record("write + commit (hashes for the manifest)", time.perf_counter() - started, nbytes)

        def check(mode: str, cold: bool, threads: int | None = None) -> float:
            integrity.clear_cache()
            if cold:
                evict(version.path)
            limit = integrity.MAX_HASH_THREADS
            if threads is not None:
                integrity.MAX_HASH_THREADS = threads
            try:
                t0 = time.perf_counter()
                load_version(Storage.at(storage.root, verify=mode), plan.stage, plan.version_id)
                return time.perf_counter() - t0
            finally:
                integrity.MAX_HASH_THREADS = limit

        threads = min(args.shards, os.cpu_count() or 1, integrity.MAX_HASH_THREADS)
        record("size, warm", check("size", cold=False), None)
        record("size, cold", check("size", cold=True), None)
        record("sha256, warm, 1 thread", check("sha256", cold=False, threads=1), nbytes)
        record(f"sha256, warm, {threads} threads", check("sha256", cold=False), nbytes)
        record(f"sha256, cold, {threads} threads", check("sha256", cold=True), nbytes)
        t0 = time.perf_counter()
        load_version(storage, plan.stage, plan.version_id)  # verified above: cached
        record("sha256, second check in one process (cached)", time.perf_counter() - t0, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nversion: {nbytes / 1e9:.2f} GB in {args.shards} Parquet shards")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python hashlib sha256\n")
    print(f"| {'measure':<48} | {'seconds':>8} | {'MB/s':>9} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 11}|")
    for row in results:
        speed = f"{row['MB_per_s']:.1f}" if row["MB_per_s"] else "-"
        print(f"| {row['measure']:<48} | {row['seconds']:>8.3f} | {speed:>9} |")


if __name__ == "__main__":
    main()
