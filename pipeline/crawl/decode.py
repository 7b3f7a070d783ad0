"""Undo a response's Content-Encoding a slice at a time, so a byte cap can count decoded bytes.

A gzip stream inflates up to ~1000x (deflate's longest match, 258 bytes, costs ~2 bits), so a
cap on bytes received says little about the bytes a reader will hold: 1 MB on the wire can be
1 GB of zeros. `BodyDecoder.feed` yields the decoded bytes in slices of at most `SLICE` bytes,
so the caller can count them and stop at its cap without ever holding more than one slice.

    decoder = BodyDecoder("gzip")
    for piece in decoder.feed(chunk): ...
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

SLICE = 64 * 1024  # decoded bytes per step: the most this module holds at once
# Content codings undone here (RFC 9110 §8.4.1); the crawler asks only for these.
SUPPORTED = ("gzip", "x-gzip", "deflate")


class DecodeError(Exception):
    """An unsupported coding or a corrupt stream."""


class _Inflater:
    """One coding: gzip (any number of members, trailing garbage ignored) or deflate
    (zlib-wrapped as RFC 9110 says, or raw as some servers send it)."""

    def __init__(self, coding: str):
        self.gzip = coding != "deflate"
        self.stream: zlib._Decompress | None = None
        self.head = b""  # deflate: the first bytes, until the wrapper can be told
        self.members = 0
        self.done = False  # past the end of the (last) stream: ignore what follows

    def _start(self, data: bytes) -> bytes:
        if self.gzip:
            self.stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return data
        self.head += data
        if len(self.head) < 2:
            return b""
        cmf, flg = self.head[0], self.head[1]
        zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0  # RFC 1950 §2.2
        self.stream = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        data, self.head = self.head, b""
        return data

    def feed(self, data: bytes) -> Iterator[bytes]:
        while not self.done:
            if self.stream is None:
                if not data:
                    return
                data = self._start(data)
                if self.stream is None:
                    return
            try:
                out = self.stream.decompress(data, SLICE)
            except zlib.error as exc:
                if self.members:  # bytes after a complete gzip member: not another member
                    self.done = True
                    return
                raise DecodeError(str(exc)) from None
            data = self.stream.unconsumed_tail
            if out:
                yield out
            if self.stream.eof:
                self.members += 1
                data = self.stream.unused_data
                self.stream = None
                self.done = not self.gzip  # RFC 1952 §2.2: gzip is a series of members
            elif not data and len(out) < SLICE:
                return  # input used up and nothing pending (a full slice may leave more)


class BodyDecoder:
    """Decodes a body sent with `Content-Encoding: <coding>`; raises DecodeError at once for
    a coding it does not know, or for stacked codings ("gzip, gzip"), which the WARC readers
    downstream (warcio) would not undo either."""

    def __init__(self, content_encoding: str | None):
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1:
            raise DecodeError(f"stacked content codings {', '.join(codings)!r}")
        if codings and codings[0] not in SUPPORTED:
            raise DecodeError(f"unsupported content coding {codings[0]!r}")
        self.inflater = _Inflater(codings[0]) if codings else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.inflater is None:
            if data:
                yield data
            return
        yield from self.inflater.feed(data)


def decode_head(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The first `limit` decoded bytes of a whole body (b"" if it cannot be decoded)."""
    out = bytearray()
    try:
        for piece in BodyDecoder(content_encoding).feed(body):
            out += piece[: limit - len(out)]
            if len(out) >= limit:
                break
    except DecodeError:
        return b""
    return bytes(out)
