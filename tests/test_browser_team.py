"""The labelling page under a slow server and with a team, in headless Chromium (Debian's package).

The server runs in this process (uvicorn in a thread) so that the test can slow every label
down by DELAY seconds: keys typed with no pause must still put each label on the item it was
meant for. Two annotators on two pages at once must never label the same item (overlap 1), and
each one's undo must touch only their own label.
"""

import contextlib
import os
import shutil
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from batchal.training import TrainConfig  # noqa: E402
playwright = pytest.importorskip("playwright.sync_api")

from test_labelling import free_port, write_images  # noqa: E402

from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.app import add_annotator, create_app  # noqa: E402

from browser_support import CHROMIUM, NO_CHROMIUM, launch  # noqa: E402
OWNER = "owner-token-for-tests"
DELAY = 0.35  # seconds per label: above the 300 ms the issue asks for

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=NO_CHROMIUM)


class SlowServer:
    """The app on a free port in a thread, every label answered after DELAY seconds."""

    def __init__(self, project: Project):
        real = project.add_label

        def slow_label(*args, **kwargs):
            time.sleep(DELAY)
            return real(*args, **kwargs)

        project.add_label = slow_label
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(project, OWNER), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)



@contextlib.contextmanager
def slow_page(tmp_path, batch_size: int):
    """A project of digit classes behind the slow server, and the owner's page with its first batch loaded:
    (project, page, card ids)."""
    write_images(tmp_path / "images", count=40)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="random",
                 batch_size=batch_size)
    project = Project(tmp_path / "proj", train_config=TrainConfig(epoch_samples=128, max_epochs=2, patience=1))
    with SlowServer(project) as server, playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(f"http://127.0.0.1:{server.port}/?token={OWNER}")
        page.wait_for_selector(".item img")
        yield project, page, card_ids(page)
        browser.close()


def card_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.id)")]


def test_typing_a_whole_batch_at_once_against_a_slow_server_labels_every_item_as_meant(tmp_path):
    with slow_page(tmp_path, batch_size=10) as (project, page, ids):
        assert len(ids) == 10 + 2
        meant = {item: str((n * 7) % 10) for n, item in enumerate(ids)}
        started = time.time()
        for item in ids:  # no pause between keys: far faster than the server answers
            page.keyboard.press(meant[item])
        typed = time.time() - started
        # The page moved on at once: every card shows its label before the server has answered them all.
        shown = dict(zip(card_ids(page), page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.label)")))
        assert shown == meant
        page.wait_for_function("document.getElementById('queue').textContent === ''", timeout=60_000)
        assert page.locator(".item.failed").count() == 0
        # The batch is complete: the cursor left the grid (no card highlighted, so no key can land on one),
        # and the last card stayed in view on a 1366x768 screen.
        assert page.locator(".item.current").count() == 0
        assert page.evaluate("() => { const cards = document.querySelectorAll('.item'); const r = cards[cards.length - 1].getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }")
    assert typed < len(ids) * DELAY  # the keys were typed faster than the labels were acknowledged
    assert project.store.current_labels() == meant


def test_two_annotators_on_two_pages_never_share_an_item_and_undo_only_their_own(tmp_path):
    write_images(tmp_path / "images", count=40)
    classes = [str(d) for d in range(10)]
    init_project(tmp_path / "proj", tmp_path / "images", classes, model="mnist_cnn", strategy="random", batch_size=10)
    tokens = {name: add_annotator(tmp_path / "proj", name) for name in ("alice", "bob")}
    project = Project(tmp_path / "proj", train_config=TrainConfig(epoch_samples=128, max_epochs=2, patience=1))
    with SlowServer(project) as server, playwright.sync_playwright() as p:
        browser = launch(p)
        pages = {}
        for name, token in tokens.items():
            page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
            page.goto(f"http://127.0.0.1:{server.port}/?token={token}")
            page.wait_for_selector(".item img")
            page.wait_for_function(f"document.getElementById('who').textContent.includes('{name}')")
            pages[name] = page
        shares = {name: card_ids(page) for name, page in pages.items()}
        assert not set(shares["alice"]) & set(shares["bob"])  # nobody gets the other's items
        assert sorted(shares["alice"] + shares["bob"]) == sorted(project.current_batch()[1])
        key = {"alice": "1", "bob": "2"}
        for n in range(max(len(s) for s in shares.values())):  # both type at once, interleaved
            for name, page in pages.items():
                if n < len(shares[name]):
                    page.keyboard.press(key[name])
        for page in pages.values():
            page.wait_for_function("document.getElementById('queue').textContent === ''", timeout=60_000)
        given = project.store.annotator_labels()
        assert all(len(who) == 1 for who in given.values())  # no item labelled twice
        assert {i for i, who in given.items() if "alice" in who} == set(shares["alice"])
        assert {i for i, who in given.items() if "bob" in who} == set(shares["bob"])
        pages["alice"].keyboard.press("u")  # alice undoes her last label only
        pages["alice"].wait_for_function("document.getElementById('queue').textContent === ''")
        time.sleep(0.2)
        after = project.store.annotator_labels()
        assert set(after) == set(given) - {shares["alice"][-1]}
        assert {i for i, who in after.items() if "bob" in who} == set(shares["bob"])
        # A personal token cannot label an item that another annotator holds.
        r = pages["bob"].evaluate(f"""async () => (await fetch('/api/labels', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                                     body: JSON.stringify({{id: {shares['alice'][0]}, label: '3'}})}})).status""")
        assert r == 409
        browser.close()


def _labels_shown(page) -> list[str]:
    return page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.label)")


def test_undo_then_type_on_puts_every_label_on_its_card_against_a_slow_server(tmp_path):
    """Issue 33's sequence: 1 2 3 4 5 6 7 8 9 0, u, 7 8 9 with no pause while every label takes DELAY to
    answer (the undone label already sent): cards 1-9 keep 1..9, card 10 gets 7, 11 gets 8, 12 gets 9."""
    with slow_page(tmp_path, batch_size=12) as (project, page, ids):
        assert len(ids) >= 13  # 12 picks and the random audit items
        for key in "1234567890":
            page.keyboard.press(key)
        # The 10th label is on its way: sent, not yet answered (the last of the queue, being saved).
        page.wait_for_function("document.getElementById('queue').textContent.startsWith('1 change')", timeout=30_000)
        page.keyboard.press("u")
        for key in "789":
            page.keyboard.press(key)
        expected = [str(d) for d in range(1, 10)] + ["7", "8", "9"] + [""] * (len(ids) - 12)
        assert _labels_shown(page) == expected  # at once, on the page
        page.wait_for_function("document.getElementById('queue').textContent === ''", timeout=60_000)
        assert _labels_shown(page) == expected and page.locator(".item.failed").count() == 0
    assert project.store.current_labels() == {item: label for item, label in zip(ids, expected) if label}


def test_keys_past_the_end_and_while_the_next_batch_is_prepared_change_no_finished_card(tmp_path):
    """With the batch complete a label key is refused visibly; after n, while the next batch is being
    prepared and the old one is still on screen, keys are refused too: no finished card changes."""
    with slow_page(tmp_path, batch_size=6) as (project, page, ids):
        meant = [str(d) for d in range(1, 9)]
        for key in "12345678":
            page.keyboard.press(key)
        page.keyboard.press("9")  # past the end
        assert _labels_shown(page) == meant
        assert "key ignored" in page.locator("#error").inner_text()
        page.wait_for_function("document.getElementById('queue').textContent === ''", timeout=60_000)
        page.keyboard.press("n")
        page.wait_for_function("document.getElementById('next').disabled")
        for key in "12345":  # the old batch is still on screen while the model trains
            page.keyboard.press(key)
        assert _labels_shown(page) == meant
        assert "being prepared" in page.locator("#error").inner_text()
        page.wait_for_function("ids => [...document.querySelectorAll('.item')].every(e => !ids.includes(+e.dataset.id))",
                               arg=ids, timeout=120_000)
    labels = project.store.current_labels()
    assert {item: labels[item] for item in ids} == dict(zip(ids, meant))


def test_an_attack_page_on_another_port_cannot_write_retrain_or_withdraw_through_the_label_studio_backend(tmp_path):
    """Issue 33's attack on the ML backend, in Chromium: a page on another loopback port sends no-cors
    text/plain fetches (a webhook that records a label, /train, a 6 MB /predict) and a form POST, with
    the browser holding the backend's basic-auth credentials (as a logged-in Label Studio user's would).
    Nothing is recorded, the batch is not replaced, and every request is refused."""
    import base64
    import http.server
    import json

    from batchal.integrations.label_studio import Backend, create_app as backend_app, label_config, tasks_for

    truth = write_images(tmp_path / "images", count=20)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mnist_cnn", strategy="random", batch_size=4)
    project = Project(tmp_path / "proj", train_config=TrainConfig(epoch_samples=128, max_epochs=2, patience=1))
    user, password = "batchal", "backend-secret-3"
    backend = Backend(project)
    port, evil_port = free_port(), free_port()
    server = uvicorn.Server(uvicorn.Config(backend_app(backend, (user, password)), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    good = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    import httpx

    assert httpx.post(f"{base}/setup", json={"project": "1.1", "schema": label_config([str(d) for d in range(10)])}, headers=good).status_code == 200
    batch_before = project.store.current_batch()
    item = batch_before[1][0]
    task = next(t for t in tasks_for(project) if t["data"]["batchal_id"] == project.store.item_path(item))
    webhook = json.dumps({"action": "ANNOTATION_CREATED", "task": task, "annotation": {
        "id": 1, "completed_by": 7, "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["3"]}}]}})
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "index.html").write_text(f"""<!doctype html><body>
<form id="form" method="POST" action="{base}/train" enctype="text/plain"><input name='{{"project": "1.1", "x": "' value='"}}'></form>
<script>
const big = "x".repeat(6 * 1024 * 1024);
Promise.allSettled([
  fetch("{base}/webhook", {{method: "POST", mode: "no-cors", credentials: "include", body: {json.dumps(webhook)}}}),
  fetch("{base}/train", {{method: "POST", mode: "no-cors", credentials: "include", body: '{{"project": "1.1"}}'}}),
  fetch("{base}/predict", {{method: "POST", mode: "no-cors", credentials: "include", body: big}}),
]).finally(() => {{ document.title = "fetched"; document.getElementById("form").submit(); }});
</script></body>""")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", evil_port), lambda *a, **k: Quiet(*a, directory=str(tmp_path / "evil"), **k))
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with playwright.sync_playwright() as p:
            browser = launch(p)
            context = browser.new_context(http_credentials={"username": user, "password": password})
            page = context.new_page()
            page.goto(f"{base}/health")  # the browser now holds the backend's credentials
            responses = []
            page.on("response", lambda r: responses.append((r.url.split("?")[0], r.status)))
            page.goto(f"http://127.0.0.1:{evil_port}/")
            page.wait_for_url(f"{base}/train", timeout=30_000)  # the form was submitted and answered
            browser.close()
        statuses = {url: status for url, status in responses if url.startswith(base)}
        assert {f"{base}/webhook", f"{base}/train", f"{base}/predict"} <= set(statuses), statuses  # every attack reached the server
        assert statuses and all(400 <= s < 500 for s in statuses.values()), statuses
        assert project.store.current_labels() == {} and project.store.label_history() == []
        assert project.store.current_batch() == batch_before  # no retraining replaced the batch
    finally:
        server.should_exit = True
        thread.join(10)
        evil.shutdown()
