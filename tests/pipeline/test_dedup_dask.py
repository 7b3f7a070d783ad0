"""The dedup stage on a Dask cluster of worker processes gives byte-identical output."""

import pytest

from pipeline.dedup import DedupConfig
from tests.pipeline.test_dedup import corpus, dedup, outcome, shakespeare_words

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def dask_map(client):
    """A ParallelMap over the cluster: every unit is pickled to a worker process."""

    def pmap(fn, items, name=""):
        return client.gather(client.map(fn, items, pure=False))

    return pmap


def test_dask_cluster_matches_serial_byte_for_byte(tmp_path, client):
    docs = corpus(shakespeare_words())
    _, _, _, v1 = dedup(tmp_path, [docs[:10]], name="v1")  # an earlier version to dedup against
    config = DedupConfig(against=[str(v1)], band_splits=2, verify_threshold=0.5)
    shards = [docs[10:][i::3] for i in range(3)]
    serial = dedup(tmp_path, shards, config, name="serial")
    dask = dedup(tmp_path, shards, config, dask_map(client), name="dask")
    assert serial[1] == dask[1] and serial[1]  # kept ids
    assert outcome(serial[2]) == outcome(dask[2]) and serial[2]
    reasons = {r["reason"] for r in serial[2].values()}
    assert reasons == {"dedup_exact_previous", "dedup_near_previous", "dedup_exact"}
    for split in ("data", "removed", "signatures"):
        files = sorted((serial[3] / split).iterdir())
        assert [f.name for f in files] == [f.name for f in sorted((dask[3] / split).iterdir())]
        for f in files:
            assert f.read_bytes() == (dask[3] / split / f.name).read_bytes(), (split, f.name)
    assert serial[0].drops == dask[0].drops and serial[0].extra["candidate_pairs"] > 0
