"""Word and domain lists for the URL and bad-words filters: built-in files and user files.

A list file has one entry per line; blank lines and `#` comments are skipped and entries are
lower-cased. The built-in lists (in `data/`) are short and written for this project; pass a
bigger curated list as a file (e.g. UT1's adult domains, which FineWeb's URL filter used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import DataError

DATA_DIR = Path(__file__).parent / "data"


def read_list(path: Path | str) -> list[str]:
    """The entries of a list file, in file order; a one-line DataError if it is unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc.__class__.__name__})") from None
    entries = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip().lower()
        if entry:
            entries.append(entry)
    return entries


def builtin_list(name: str) -> list[str]:
    """A list shipped in `pipeline/filters/data/`."""
    return read_list(DATA_DIR / name)


def digest(entries: Iterable[str]) -> str:
    """A short, order-free hash of a list: it stands for the list in the signals config."""
    return hashlib.sha256("\n".join(sorted(set(entries))).encode()).hexdigest()[:16]
