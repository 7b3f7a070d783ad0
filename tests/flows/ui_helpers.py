"""Headless Debian Chromium driven by Playwright, for tests that look at the Prefect UI.

Playwright's own browser downloads do not work offline, so it drives the system browser at
/usr/bin/chromium (`apt-get install chromium`). Requests to any host but 127.0.0.1 are
aborted: the tests must not depend on, or leak to, the outside world.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking/component/sync flags Chromium contacts Google hosts at
# start-up; QUIC and the GPU are useless headless in a container; --no-sandbox because CI
# containers run as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOT_LOCAL = re.compile(r"^(?!https?://127\.0\.0\.1[:/]|about:|data:|blob:)")
VIEWPORT = {"width": 1600, "height": 1000}


def require_browser() -> None:
    """Skip when Playwright or Debian's Chromium is missing; in CI (`CI` set) fail instead."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium `Browser`; closed (with its driver) on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def local_page(browser) -> Iterator:
    """A fresh (page, failed requests) pair; the page may only reach 127.0.0.1.

    The failed requests go into assertion messages: they say why the SPA shows nothing.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.route(NOT_LOCAL, lambda route: route.abort())
    page = context.new_page()
    failed: list[str] = []

    def on_response(response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("requestfailed", lambda request: failed.append(f"{request.failure} {request.url}"))
    page.on("response", on_response)
    try:
        yield page, failed
    finally:
        context.close()


def screenshot(page, path: Path) -> Path:
    """Save a full-page screenshot and print its path (pytest shows it with -s or on failure)."""
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
