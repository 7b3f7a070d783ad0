"""A storage root on any fsspec filesystem (s3://, gs://, file://, ...), mirrored locally.

Stages read and write local files (pyarrow, warcio and torch all want them), so a URL storage
root gets a local cache (`LLMFORGE_CACHE`, default ~/.cache/llmforge/<hash of the URL>): a
committed version is uploaded with its manifest last (object stores have no atomic rename, so
the manifest is the commit marker), and a version found only remotely is downloaded into the
cache before use. Run records are written through and read through the same way.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import fsspec

from pipeline.errors import DataError

MANIFEST = "manifest.json"


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise DataError(f"storage root {url}: unsupported filesystem ({exc})") from None


def cache_dir(url: str) -> Path:
    import hashlib

    base = Path(os.environ.get("LLMFORGE_CACHE", "~/.cache/llmforge")).expanduser()
    return (base / hashlib.sha256(url.encode()).hexdigest()[:12]).resolve()


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def push_tree(local: Path, url: str) -> None:
    """Upload a committed version; the manifest goes last so readers never see half of one."""
    fs, base = filesystem(url)
    files = sorted(p for p in local.rglob("*") if p.is_file() and not p.is_symlink())
    for path in sorted(files, key=lambda p: p.name == MANIFEST):
        target = f"{base}/{path.relative_to(local).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), target)


def pull_tree(url: str, local: Path) -> bool:
    """Download a committed version (one with a manifest) into `local`; False if absent."""
    fs, base = filesystem(url)
    if not fs.exists(f"{base}/{MANIFEST}"):
        return False
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.pull")
    try:
        for remote in fs.find(base):
            target = tmp / remote[len(base) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, local)
        except OSError:
            if not (local / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def push_file(local: Path, url: str) -> None:
    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), path)


def pull_file(url: str, local: Path) -> bool:
    fs, path = filesystem(url)
    if not fs.exists(path):
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.pull")
    fs.get_file(path, str(tmp))
    os.replace(tmp, local)
    return True


def list_names(url: str) -> list[str]:
    """Names of the entries directly under `url` (empty if it does not exist)."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
