"""The browser tests' one way to start Debian's chromium through Playwright (skipping, saying why, without it)."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

CHROMIUM = os.environ.get("BATCHAL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = f"no Chromium at {CHROMIUM} (apt-get install chromium)"


def launch(p):
    """A headless chromium from a started ``sync_playwright()``."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


@contextlib.contextmanager
def chromium_or_skip():
    """A headless chromium for the ``with`` block; the test skips where chromium or Playwright is missing."""
    if not shutil.which(CHROMIUM):
        pytest.skip(NO_CHROMIUM)
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            yield browser
        finally:
            browser.close()
