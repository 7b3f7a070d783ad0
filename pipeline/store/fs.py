"""One I/O layer for every file the project reads or writes: a `Folder` over fsspec.

A `Folder` is a local path or a URL (`s3://bucket/llmforge`, `file:///data`, `memory://x`);
the same calls work on both, so a stage, a Dask worker on another machine or a training rank
needs nothing but the folder's URL string (a `Folder` pickles as its URL). Shard tasks carry
URLs, never driver paths.

Writes are atomic everywhere: locally a temp file beside the target is renamed into place
(`atomic_path`, the one write-temp-then-rename helper of the project); on an object store a
single PUT is atomic by itself. Libraries that want a local path (warcio, trafilatura's
callers, torch) use `fetch` (read) and `output` (write): local folders hand out the real path,
remote ones a private temp copy that is uploaded when the block ends without error.

The model is datatrove's `DataFolder` (one folder type over fsspec for every reader and
writer); the code is our own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import DataError

HASH_CHUNK = 1 << 20  # 1 MiB reads when hashing: the bench/integrity.py sweet spot


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside `path`; on a clean exit it is renamed onto `path` (a reader sees the
    old file or the new one, never half of one); on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write a whole local file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def cache_base() -> Path:
    """This machine's llmforge state outside any storage root: `$LLMFORGE_CACHE`, default
    ~/.cache/llmforge (URL roots' locks and Prefect homes, the server registry, hardware
    measurements)."""
    return Path(os.environ.get("LLMFORGE_CACHE", "~/.cache/llmforge")).expanduser()


def dumps_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str) + "\n"


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a URL or path, and the path on it."""
    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as exc:
        raise DataError(f"{location}: unsupported storage location ({exc})") from None


def is_url(location: str | os.PathLike[str]) -> bool:
    return "://" in str(location)


class Folder:
    """A folder on one filesystem. Nothing touches the filesystem until a method is called."""

    def __init__(self, location: str | os.PathLike[str] | Folder):
        if isinstance(location, Folder):
            location = location.url
        text = str(location)
        if is_url(text) and not text.startswith("file://"):
            self.fs, path = filesystem(text)
            self.path = path.rstrip("/")
            protocol = text.split("://", 1)[0]
            self.url = f"{protocol}://{self.path}"
        else:
            local = Path(text.removeprefix("file://")).expanduser().absolute()
            self.fs, self.path, self.url = LocalFileSystem(), str(local), str(local)

    # -- identity ------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Folder) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Folder, (self.url,))  # a worker rebuilds it from the URL alone

    def __truediv__(self, name: str) -> Folder:
        return Folder(self.url_of(name))

    def url_of(self, name: str) -> str:
        """The URL (or local path) of `name` inside this folder."""
        name = str(name).strip("/")
        return f"{self.url}/{name}" if name else self.url

    def _path(self, name: str = "") -> str:
        name = str(name).strip("/")
        return f"{self.path}/{name}" if name else self.path

    def local_path(self, name: str = "") -> Path:
        """The real local path of `name` (local folders only)."""
        if not self.is_local:
            raise ValueError(f"{self.url}: not a local folder")
        return Path(self._path(name))

    # -- reading ---------------------------------------------------------------------------
    def _fresh(self, name: str = "") -> str:
        """The path of `name`, with any listing fsspec cached in this process forgotten (s3fs
        keeps them): other processes (Dask workers) may have written here since."""
        target = self._path(name)
        if not self.is_local:
            self.fs.invalidate_cache(target)
        return target

    def exists(self, name: str = "") -> bool:
        return self.fs.exists(self._fresh(name))

    def is_file(self, name: str = "") -> bool:
        return self.fs.isfile(self._fresh(name))

    def is_dir(self, name: str = "") -> bool:
        return self.fs.isdir(self._fresh(name))

    def list(self, pattern: str = "**", files_only: bool = True) -> list[str]:
        """Names relative to this folder matching a glob (`**` for everything below), sorted;
        an absent folder lists nothing. Temp files (`.name.*.tmp`) are never listed."""
        self._fresh()
        if not self.exists():
            return []
        base = self.path.rstrip("/") + "/"
        if pattern == "**":
            found = self.fs.find(self.path, withdirs=not files_only)
        else:
            found = self.fs.glob(base + pattern)
            if files_only:
                found = [p for p in found if self.fs.isfile(p)]
        names = [p[len(base) :] if p.startswith(base) else p for p in found]
        return sorted(n for n in names if n and not n.rsplit("/", 1)[-1].endswith(".tmp"))

    def infos(self) -> dict[str, dict[str, Any]]:
        """Every file below this folder and fsspec's details of it (size, and a change stamp:
        mtime/ino locally, ETag or creation time remotely), in one listing call."""
        self._fresh()
        if not self.exists():
            return {}
        base = self.path.rstrip("/") + "/"
        found = self.fs.find(self.path, detail=True)
        return {
            p[len(base) :]: info
            for p, info in sorted(found.items())
            if info.get("type", "file") == "file" and not p.rsplit("/", 1)[-1].endswith(".tmp")
        }

    def sizes(self) -> dict[str, int]:
        """Every file below this folder and its size, in one listing call."""
        return {name: int(info.get("size") or 0) for name, info in self.infos().items()}

    def size(self, name: str) -> int:
        return int(self.fs.size(self._fresh(name)))

    def open(self, name: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """A file object; for writing prefer `write_bytes`/`output` (atomic)."""
        if "w" in mode and self.is_local:
            Path(self._path(name)).parent.mkdir(parents=True, exist_ok=True)
        return self.fs.open(self._path(name), mode, **kwargs)

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(name))
        except FileNotFoundError:
            raise DataError(f"{self.url_of(name)}: no such file") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def read_json(self, name: str) -> Any:
        data = self.read_bytes(name)
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.url_of(name)}: not readable JSON ({exc})") from None

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.open(name, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path]:
        """A local path holding `name` for libraries that want one: the file itself when the
        folder is local, else a private temp copy removed after the block."""
        if self.is_local:
            yield Path(self._path(name))
            return
        with tempfile.TemporaryDirectory(prefix="llmforge-fetch-") as scratch:
            local = Path(scratch) / Path(name).name
            try:
                self.fs.get_file(self._path(name), str(local))
            except FileNotFoundError:
                raise DataError(f"{self.url_of(name)}: no such file") from None
            yield local

    def get(self, name: str, local: str | os.PathLike[str]) -> None:
        """Copy `name` (a file, or a folder with everything below it) to a local path."""
        source = self._path(name)
        if self.fs.isdir(source):
            for rel in (self / name).list():
                self.get(f"{name}/{rel}" if name else rel, Path(local) / rel)
            return
        with atomic_path(local) as tmp:
            self.fs.get_file(source, str(tmp))

    # -- writing ---------------------------------------------------------------------------
    def makedirs(self, name: str = "") -> None:
        if self.is_local:
            Path(self._path(name)).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, name: str, data: bytes | str) -> None:
        """Write a whole file atomically (a temp file renamed locally; one PUT remotely)."""
        payload = data.encode() if isinstance(data, str) else data
        if self.is_local:
            atomic_write(self._path(name), payload)
        else:
            self.fs.pipe_file(self._path(name), payload)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text)

    def write_json(self, name: str, value: Any) -> None:
        self.write_bytes(name, dumps_json(value))

    @contextlib.contextmanager
    def output(self, name: str) -> Iterator[Path]:
        """A local path to write `name` to; published atomically when the block ends cleanly
        (renamed into place locally, uploaded in one piece remotely), dropped on an error."""
        if self.is_local:
            with atomic_path(self._path(name)) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix="llmforge-out-") as scratch:
            local = Path(scratch) / Path(name).name
            yield local
            self.put(local, name)

    def put(self, local: str | os.PathLike[str], name: str) -> None:
        """Copy a local file into this folder (atomically, as `write_bytes`)."""
        if self.is_local:
            with atomic_path(self._path(name)) as tmp:
                shutil.copyfile(local, tmp)
        else:
            self.fs.put_file(str(local), self._path(name))

    def put_tree(self, local: str | os.PathLike[str], last: tuple[str, ...] = ()) -> None:
        """Upload every file below a local folder; the names in `last` go after all others
        (a manifest written last is the commit marker on an object store)."""
        root = Path(local)
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in sorted(files, key=lambda p: p.relative_to(root).as_posix() in last):
            self.put(path, path.relative_to(root).as_posix())

    def move(self, source: str, target: str) -> None:
        """Rename a file inside this folder, replacing `target`: atomic locally; on an object
        store a server-side copy then a delete (readers see the whole file or none)."""
        if self.is_local:
            Path(self._path(target)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path(source), self._path(target))
        else:
            self.fs.mv(self._path(source), self._path(target))

    def remove(self, name: str = "") -> None:
        """Delete a file or a folder with everything below it; absent is fine."""
        target = self._path(name)
        if self.is_local:
            path = Path(target)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(target, recursive=True)


def as_folder(location: str | os.PathLike[str] | Folder) -> Folder:
    return location if isinstance(location, Folder) else Folder(location)


def locate(location: str | os.PathLike[str] | Folder) -> tuple[Folder, str]:
    """The folder holding a file given by local path or URL, and its name there: how a task
    opens one input file it was handed as a string."""
    text = str(location).rstrip("/")
    parent, _, name = text.rpartition("/")
    if not name or (is_url(text) and parent.endswith(":/")):
        raise DataError(f"{location}: not a file location")
    return Folder(parent or "."), name
