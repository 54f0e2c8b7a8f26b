"""The real labelling page in headless Chromium (Debian's package), driven by Playwright.

Opens the page with the token, labels the whole batch with the keyboard, asks for the next
batch with 'n', waits for it and saves a screenshot. Skips when /usr/bin/chromium is absent
(.ci/run installs it).
"""

import contextlib
import os
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")

from test_labelling import TOKEN, free_port, start_server, write_images  # noqa: E402

from batchal.labelling import init_project  # noqa: E402

from browser_support import CHROMIUM, NO_CHROMIUM, launch  # noqa: E402
# Screenshots are copied out of the test's temporary folder only when this names a folder
# (a plain Path("") would be ".", the repository root).
SCREENSHOT_DIR = os.environ.get("BATCHAL_SCREENSHOT_DIR") or None

ALL_IMAGES_LOADED = "[...document.querySelectorAll('.item img')].every(i => i.complete && i.naturalWidth > 0)"

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=NO_CHROMIUM)


class Served:
    """A project served by ``batchal label serve`` on one port, killed and restarted on it at will."""

    def __init__(self, project_dir, port=None):
        self.project_dir, self.port = project_dir, port or free_port()
        self.process = start_server(project_dir, self.port)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self):
        self.process = start_server(self.project_dir, self.port)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait()


@contextlib.contextmanager
def labelling_page(project_dir, port=None, **page_options):
    """(page, served): the project served, its page open in Chromium with the owner's token and its
    first batch shown; the browser closed and the server stopped afterwards."""
    served = Served(project_dir, port)
    try:
        with playwright.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(**page_options)
            page.goto(f"http://127.0.0.1:{served.port}/?token={TOKEN}")
            page.wait_for_selector(".item img")
            yield page, served
            browser.close()
    finally:
        served.stop()


def test_label_a_batch_with_the_keyboard_then_get_the_next(tmp_path):
    truth = write_images(tmp_path / "images", count=40)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="bald", batch_size=6, mc_samples=4)
    with labelling_page(tmp_path / "proj", viewport={"width": 1200, "height": 1000}) as (page, _):
        page.wait_for_function(ALL_IMAGES_LOADED)
        cards = page.locator(".item")
        assert cards.count() == 6 + 2  # 6 picks and 2 random items for the accuracy estimate
        first_ids = [cards.nth(i).get_attribute("data-id") for i in range(8)]
        for i in range(8):
            page.keyboard.press(str(i))  # digit class names: each digit key gives its own class
            page.wait_for_function(f"document.querySelectorAll('.item.done').length >= {i + 1}")
        page.wait_for_function("document.getElementById('queue').textContent === ''")
        assert "8 of 8 done in your part of this batch" in page.locator("#progress").inner_text()
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
    assert before.stat().st_size > 10_000 and after.stat().st_size > 10_000
    if SCREENSHOT_DIR is not None:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(before, Path(SCREENSHOT_DIR) / "labelling-batch-labelled.png")
        shutil.copy(after, Path(SCREENSHOT_DIR) / "labelling-next-batch.png")
    from batchal.labelling.store import Store

    labels = Store(tmp_path / "proj").current_labels()
    assert sorted(labels) == sorted(int(i) for i in first_ids)
    assert sorted(labels.values()) == sorted(str(d) for d in range(0, 8))


def test_named_classes_get_number_keys_in_order(tmp_path):
    write_images(tmp_path / "images", count=12)
    init_project(tmp_path / "proj", tmp_path / "images", ["cat", "dog", "bird"], model="mnist_cnn", strategy="random", batch_size=3)
    with labelling_page(tmp_path / "proj") as (page, _):
        assert "2: dog" in page.locator(".item").first.inner_text()
        page.keyboard.press("2")
        page.wait_for_function("document.querySelectorAll('.item.done').length >= 1")
        page.wait_for_function("document.getElementById('queue').textContent === ''")  # acknowledged by the server
        first = int(page.locator(".item").first.get_attribute("data-id"))
    from batchal.labelling.store import Store

    assert Store(tmp_path / "proj").current_labels() == {first: "dog"}



def test_rgb_images_with_a_users_model_suggestions_enter_undo_next_and_export(tmp_path):
    from test_labelling_models import CLASSES, USER_MODEL, colour_images

    from batchal.labelling import export_labels
    from batchal.labelling.store import Store

    truth = colour_images(tmp_path / "images", count=36)
    (tmp_path / "net.py").write_text(USER_MODEL)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model=f"{tmp_path / 'net.py'}:make", strategy="bald", batch_size=6, mc_samples=4)
    store = Store(tmp_path / "proj")
    name_of = {i: os.path.basename(p) for i, p in store.item_paths().items()}
    with labelling_page(tmp_path / "proj", viewport={"width": 1250, "height": 1100}) as (page, _):
        page.wait_for_function(ALL_IMAGES_LOADED)
        ids = [int(page.locator(".item").nth(i).get_attribute("data-id")) for i in range(page.locator(".item").count())]
        for n, item in enumerate(ids):  # keys 1, 2, 3 are red, green, blue
            page.keyboard.press(str(CLASSES.index(truth[name_of[item]]) + 1))
            page.wait_for_function(f"document.querySelectorAll('.item.done').length >= {n + 1}")
        page.keyboard.press("n")
        page.wait_for_function("ids => [...document.querySelectorAll('.item')].every(e => !ids.includes(Number(e.dataset.id)))",
                               arg=ids, timeout=120_000)
        page.wait_for_selector(".why b")  # the model's suggestions are shown
        page.wait_for_function(ALL_IMAGES_LOADED)
        # The strategy's picks first (random items carry no suggestion): move to them with the arrows.
        cards = page.locator(".item")
        count = cards.count()
        second = [int(cards.nth(i).get_attribute("data-id")) for i in range(count)]
        picked = [i for i in range(count) if cards.nth(i).locator(".why b").count()]
        assert len(picked) == 6
        suggested = {second[i]: cards.nth(i).locator(".why b").inner_text() for i in picked}
        accepted = []
        for n in range(3):  # Enter accepts the suggestion of the highlighted item
            page.evaluate(f"() => {{ cursor = {picked[n]}; render(); }}")
            page.keyboard.press("Enter")
            accepted.append(second[picked[n]])
            page.wait_for_function(f"document.querySelectorAll('.item.done').length >= {n + 1}")
        # The third label must have reached the server before the undo: an undo of a label still
        # in the page's queue only drops it there (no history row), which on a busy machine
        # happened here and made the history count below 0.
        page.wait_for_function("document.getElementById('queue').textContent === ''")
        page.keyboard.press("u")  # undo the third
        page.wait_for_function("document.querySelectorAll('.item.done').length === 2")
        page.wait_for_function("document.getElementById('queue').textContent === ''")
        rest = [i for i in range(count) if second[i] not in accepted[:2]]
        for n, i in enumerate(rest, start=2):
            page.evaluate(f"() => {{ cursor = {i}; render(); }}")
            page.keyboard.press(str(CLASSES.index(truth[name_of[second[i]]]) + 1))
            page.wait_for_function(f"document.querySelectorAll('.item.done').length >= {n + 1}")
        page.wait_for_function("document.getElementById('queue').textContent === ''")
        page.wait_for_function("document.getElementById('info').textContent.includes('information')")
        shot = tmp_path / "rgb.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_DIR is not None:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "labelling-rgb.png")
    labels = Store(tmp_path / "proj").current_labels()
    assert [labels[i] for i in accepted[:2]] == [suggested[i] for i in accepted[:2]]
    assert all(labels[i] == truth[name_of[i]] for i in ids + [i for i in second if i not in accepted[:2]])
    history = Store(tmp_path / "proj").label_history()
    assert sum(1 for row in history if row["undoes"] is not None) == 1
    assert len(export_labels(tmp_path / "proj", "csv").strip().splitlines()) == 1 + len(ids) + len(second)


def test_a_page_on_another_port_cannot_label_through_the_logged_in_cookie(tmp_path):
    import http.server
    import threading

    from batchal.labelling.store import Store

    write_images(tmp_path / "images", count=12)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="random", batch_size=3)
    item = min(Store(tmp_path / "proj").item_paths())
    port, evil_port = free_port(), free_port()
    target = f"http://127.0.0.1:{port}/api/labels"
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "index.html").write_text(f"""<!doctype html><body>
<form id="form" method="POST" action="{target}" enctype="text/plain"><input name='{{"id": {item}, "label": "3", "x": "' value='"}}'></form>
<iframe id="frame" src="http://127.0.0.1:{port}/"></iframe>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include", body: JSON.stringify({{id: {item}, label: "4"}})}})
  .finally(() => {{ document.title = "fetched"; document.getElementById("form").submit(); }});
</script></body>""")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "evil"), **k)
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", evil_port), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with labelling_page(tmp_path / "proj", port) as (page, _):  # logged in: the cookie is set
            responses = []
            page.on("response", lambda r: responses.append((r.url, r.status)))
            page.goto(f"http://127.0.0.1:{evil_port}/")
            page.wait_for_url(target, timeout=30_000)  # the form was submitted and answered
            assert "cross-origin request refused" in page.content()
        assert Store(tmp_path / "proj").label_history() == []
        assert (target, 403) in responses
    finally:
        evil.shutdown()


def test_labels_typed_while_the_server_restarts_are_kept_and_sent_when_it_is_back(tmp_path):
    """Issue 33, item 4: kill -9 the server, type on (the page keeps the changes and retries), restart
    it on the same port a few seconds later: every label typed meanwhile reaches the server, in order."""
    write_images(tmp_path / "images", count=30)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="random", batch_size=6)
    with labelling_page(tmp_path / "proj") as (page, served):
        ids = [int(x) for x in page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.id)")]
        page.keyboard.press("1")
        page.wait_for_function("document.getElementById('queue').textContent === ''")
        served.kill()
        for key in "234":
            page.keyboard.press(key)
        page.wait_for_function("document.getElementById('queue').textContent.startsWith('server unreachable')", timeout=30_000)
        page.wait_for_timeout(4_000)  # longer than the page's old retry window (about 3 s)
        served.restart()
        page.wait_for_function("document.getElementById('queue').textContent === ''", timeout=60_000)
        assert page.locator(".item.failed").count() == 0
    from batchal.labelling.store import Store

    assert Store(tmp_path / "proj").current_labels() == dict(zip(ids[:4], ["1", "2", "3", "4"]))
