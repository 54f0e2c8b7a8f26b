"""Build the documentation site and save a screenshot of its home page (docs/site-home.png).

Usage: python scripts/docs_screenshot.py [--out docs/site-home.png] [--page index.html]
Needs the docs extra (pip install -e ".[docs]"), Playwright and Debian's chromium (/usr/bin/chromium,
or $BATCHAL_CHROMIUM). The site is built into a temporary folder and served on loopback.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "site-home.png"))
    parser.add_argument("--page", default="index.html")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as site:
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"), "-d", site],
                       check=True, cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=os.environ.get("BATCHAL_CHROMIUM", "/usr/bin/chromium"), headless=True,
                                            args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/{args.page}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=args.out)
                browser.close()
        finally:
            server.shutdown()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
