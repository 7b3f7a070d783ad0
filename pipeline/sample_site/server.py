"""Serve a generated sample site on 127.0.0.1, with the statuses its ground truth plants.

Paths come only from ground_truth.json (so ground_truth.json itself is never served): 200 with
the file and its Content-Type, 301 + Location for the redirect, 404 for the missing page and
anything unknown, 500 for the error page. Runs in a background thread for tests:

    with serve_site(site_dir) as base_url:
        httpx.get(base_url + "/")

or in the foreground: `python -m pipeline.sample_site.server SITE_DIR --port 8000`.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import DataError
from pipeline.sample_site.site import load_ground_truth

LOOPBACK = "127.0.0.1"  # the sample site is for local crawls only; never bind elsewhere
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".pdf": "application/pdf",
}


def _error_page(status: HTTPStatus) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{status.value} {status.phrase}</title></head>"
        f"<body><h1>{status.phrase}</h1></body></html>\n"
    ).encode()


def make_handler(site_dir: Path) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one site's files and ground truth."""
    site_dir = Path(site_dir)
    routes: dict[str, dict[str, Any]] = {p["path"]: p for p in load_ground_truth(site_dir)["pages"]}
    for page in routes.values():
        if page["status"] == 200 and not (site_dir / page["file"]).is_file():
            raise DataError(f"{site_dir / page['file']}: missing file for {page['path']}")

    class SampleSiteHandler(BaseHTTPRequestHandler):
        server_version = "llmforge-sample-site/1.0"

        def do_GET(self) -> None:
            self._respond(send_body=True)

        def do_HEAD(self) -> None:
            self._respond(send_body=False)

        def _respond(self, send_body: bool) -> None:
            page = routes.get(urlsplit(self.path).path)
            status = HTTPStatus(page["status"]) if page else HTTPStatus.NOT_FOUND
            headers = {"Content-Type": CONTENT_TYPES[".html"]}
            if status == HTTPStatus.OK:
                file = site_dir / page["file"]
                body = file.read_bytes()
                headers["Content-Type"] = CONTENT_TYPES.get(file.suffix, "application/octet-stream")
            else:
                body = _error_page(status)
                if status == HTTPStatus.MOVED_PERMANENTLY:
                    headers["Location"] = page["redirect_to"]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no line per request on stderr."""

    return SampleSiteHandler


def _server(site_dir: Path, host: str, port: int) -> ThreadingHTTPServer:
    if host != LOOPBACK:
        raise ValueError(f"sample site binds only {LOOPBACK}, not {host!r}")
    server = ThreadingHTTPServer((host, port), make_handler(site_dir))
    server.daemon_threads = True
    return server


@contextmanager
def serve_site(site_dir: Path, host: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Serve `site_dir` from a background thread; yields the base URL (port 0 = any free)."""
    server = _server(site_dir, host, port)
    thread = threading.Thread(target=server.serve_forever, name="sample-site", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_forever(site_dir: Path, port: int = 8000) -> None:
    """Serve in the foreground until Ctrl-C (for browsing or crawling by hand)."""
    with _server(site_dir, LOOPBACK, port) as server:
        print(f"serving {site_dir} at http://{LOOPBACK}:{server.server_address[1]} (Ctrl-C stops)")
        with suppress(KeyboardInterrupt):
            server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a generated sample site on 127.0.0.1.")
    parser.add_argument("site_dir", type=Path)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        serve_forever(args.site_dir, args.port)
    except DataError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
