"""Each committed version as a Prefect asset: the UI's asset graph shows the chain from the
seeds or WARC files to the model.

    publish_asset(storage, version, config)  # in a stage's flow, once its version is known

The asset key is the version folder's URL (`file:///abs/storage/versions/extract/<id>`,
`s3://bucket/prefix/versions/extract/<id>`); its upstream assets are the versions named in its
manifest's inputs, plus what came from outside the store (the crawl's seed URLs, the user's
WARC or document files); its metadata are the version's counts. A reused version is not
materialized again, as Prefect emits nothing for a cached task either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
from prefect.cache_policies import NO_CACHE

from pipeline.config import PipelineConfig
from pipeline.stage import scalar_extras
from pipeline.store.fs import is_url
from pipeline.store.versions import Storage, Version


def asset_key(location: str | Path) -> str:
    """A URL as it is; a local path as its absolute file:// URL (asset keys are URIs)."""
    text = str(location)
    return text if is_url(text) else Path(text).resolve().as_uri()


def version_key(storage: Storage, stage: str, version_id: str) -> str:
    """The asset key of a version: where its folder lives in the store."""
    return asset_key(storage.version_folder(stage, version_id).url)


def upstream_keys(storage: Storage, version: Version, config: PipelineConfig) -> list[str]:
    """Asset keys of what `version` was made from, as its manifest's inputs name them: other
    versions, and inputs from outside the store (the crawl's seed URLs, the user's files)."""
    keys = []
    for entry in version.manifest.get("inputs", []):
        kind = entry.get("source")
        if "stage" in entry and "version_id" in entry:
            keys.append(version_key(storage, entry["stage"], entry["version_id"]))
        elif kind == "seeds":
            keys += (version.manifest.get("config") or {}).get("seeds", [])
        elif kind == "files":
            keys += [asset_key(path) for path in config.source.warc_paths]
        elif kind == "documents":
            keys += [asset_key(path) for path in config.source.paths]
    return keys


def _metadata(version: Version) -> dict[str, Any]:
    """The counts, with only the scalar extras (lists of files or samples stay in the
    manifest: an event payload is no place for them)."""
    counts = version.manifest.get("counts", {})
    extra = scalar_extras(counts)
    return {
        "stage": version.stage,
        "version_id": version.version_id,
        "docs_in": counts.get("docs_in"),
        "docs_out": counts.get("docs_out"),
        "drops": counts.get("drops", {}),
        **extra,
    }


def _asset(key: str, stage: str, name: str | None = None) -> Asset | None:
    """The asset of `key`, or None (logged) if Prefect refuses it as a key (a path with a
    space, a URL with a query): a missing node in the graph must not fail the stage."""
    try:
        return Asset(key=key, properties=AssetProperties(name=name) if name else None)
    except ValueError as exc:
        get_run_logger().warning("%s: %s is not a valid asset key: %s", stage, key, exc)
        return None


def _record(key: str, metadata: dict[str, Any]) -> None:
    """The materializing task's body: the counts go out with its materialization event."""
    add_asset_metadata(key, metadata)


def publish_asset(storage: Storage, version: Version, config: PipelineConfig) -> None:
    """Materialize `version` as an asset with its inputs upstream (nothing when reused)."""
    if version.reused:
        return
    key = version_key(storage, version.stage, version.version_id)
    asset = _asset(key, version.stage, f"{version.stage} {version.version_id}")
    if asset is None:
        return
    upstream = upstream_keys(storage, version, config)
    task = materialize(
        asset,
        asset_deps=[a for k in upstream if (a := _asset(k, version.stage)) is not None],
        name=f"{version.stage}-asset",
        cache_policy=NO_CACHE,
        persist_result=False,
    )(_record)
    task(key, _metadata(version))
