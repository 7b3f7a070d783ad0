"""Which assets a version names upstream: its input versions by URL, and outside inputs."""

from pathlib import Path

from flows.assets import asset_key, upstream_keys
from pipeline.config import load_config
from pipeline.store.versions import Storage, Version


def _version(stage, inputs, config=None):
    manifest = {"inputs": inputs, "config": config or {}, "counts": {}}
    return Version(stage, "v1", None, manifest, False)


def test_inputs_become_asset_keys(tmp_path):
    storage = Storage.at(tmp_path / "store")
    versions = tmp_path / "store" / "versions"
    config = load_config(
        None,
        [
            'source.kind="warc"',
            f"source.warc_paths=['{tmp_path}/cc/a.warc.gz', 'cc/b.warc.gz']",
        ],
    )
    seeds = ["https://example.com/", "http://127.0.0.1:8000/docs/"]
    crawl = _version("crawl", [{"source": "seeds", "snapshot": ""}], {"seeds": seeds})
    extract = _version("extract", [{"source": "files", "fingerprint": "f"}])
    evaluate = _version(
        "evaluate",
        [
            {"stage": "train", "version_id": "0123456789abcdef"},
            {"stage": "tokenize", "version_id": "fedcba9876543210"},
        ],
    )
    assert upstream_keys(storage, crawl, config) == seeds
    assert upstream_keys(storage, extract, config) == [
        f"file://{tmp_path}/cc/a.warc.gz",
        (Path.cwd() / "cc" / "b.warc.gz").as_uri(),  # relative paths resolve
    ]
    assert upstream_keys(storage, evaluate, config) == [
        f"file://{versions.resolve()}/train/0123456789abcdef",
        f"file://{versions.resolve()}/tokenize/fedcba9876543210",
    ]


def test_asset_keys_are_uris():
    assert (
        asset_key("s3://bucket/llmforge/versions/dedup/x")
        == "s3://bucket/llmforge/versions/dedup/x"
    )
    assert asset_key("/data/store/versions/dedup/x") == "file:///data/store/versions/dedup/x"
