"""The real labelling page in headless Chromium (Debian's package), driven by Playwright.

Opens the page with the token, labels the whole batch with the keyboard, asks for the next
batch with 'n', waits for it and saves a screenshot. Skips when /usr/bin/chromium is absent
(.ci/run installs it).
"""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")

from test_labelling import TOKEN, free_port, start_server, write_images  # noqa: E402

from batchal.labelling import init_project  # noqa: E402

CHROMIUM = os.environ.get("BATCHAL_CHROMIUM", "/usr/bin/chromium")
# Screenshots are copied out of the test's temporary folder only when this names a folder
# (a plain Path("") would be ".", the repository root).
SCREENSHOT_DIR = os.environ.get("BATCHAL_SCREENSHOT_DIR") or None

ALL_IMAGES_LOADED = "[...document.querySelectorAll('.item img')].every(i => i.complete && i.naturalWidth > 0)"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def test_label_a_batch_with_the_keyboard_then_get_the_next(tmp_path):
    truth = write_images(tmp_path / "images", count=40)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="bald", batch_size=6, mc_samples=4)
    port = free_port()
    server = start_server(tmp_path / "proj", port)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
            )
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
            page.wait_for_selector(".item img")
            page.wait_for_function(ALL_IMAGES_LOADED)
            cards = page.locator(".item")
            assert cards.count() == 6
            first_ids = [cards.nth(i).get_attribute("data-id") for i in range(6)]
            for i in range(6):
                page.keyboard.press(str(i))  # digit class names: each digit key gives its own class
                page.wait_for_function(f"document.querySelectorAll('.item.done').length >= {i + 1}")
            assert "6 of 6 labelled in this batch" in page.locator("#progress").inner_text()
            before = tmp_path / "labelled.png"
            page.screenshot(path=str(before), full_page=True)
            page.keyboard.press("n")
            page.wait_for_function(
                "ids => { const now = [...document.querySelectorAll('.item')].map(e => e.dataset.id);"
                " return now.length > 0 && now.every(id => !ids.includes(id)); }",
                arg=first_ids, timeout=120_000,
            )
            page.wait_for_selector("#plot circle", timeout=30_000)
            page.wait_for_function(ALL_IMAGES_LOADED)
            after = tmp_path / "next-batch.png"
            page.screenshot(path=str(after), full_page=True)
            browser.close()
        assert before.stat().st_size > 10_000 and after.stat().st_size > 10_000
        if SCREENSHOT_DIR is not None:
            Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy(before, Path(SCREENSHOT_DIR) / "labelling-batch-labelled.png")
            shutil.copy(after, Path(SCREENSHOT_DIR) / "labelling-next-batch.png")
        from batchal.labelling.store import Store

        labels = Store(tmp_path / "proj").current_labels()
        assert sorted(labels) == sorted(int(i) for i in first_ids)
        assert sorted(labels.values()) == sorted(str(d) for d in range(0, 6))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()


def test_named_classes_get_number_keys_in_order(tmp_path):
    write_images(tmp_path / "images", count=12)
    init_project(tmp_path / "proj", tmp_path / "images", ["cat", "dog", "bird"], model="mnist_cnn", strategy="random", batch_size=3)
    port = free_port()
    server = start_server(tmp_path / "proj", port)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
            page.wait_for_selector(".item img")
            assert "2: dog" in page.locator(".item").first.inner_text()
            page.keyboard.press("2")
            page.wait_for_function("document.querySelectorAll('.item.done').length >= 1")
            first = int(page.locator(".item").first.get_attribute("data-id"))
            browser.close()
        from batchal.labelling.store import Store

        assert Store(tmp_path / "proj").current_labels() == {first: "dog"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
