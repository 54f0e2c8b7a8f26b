"""The labelling service: API with a test client, durability across a real kill, concurrency, export."""

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from batchal.labelling import Project, export_labels, init_project  # noqa: E402
from batchal.labelling.app import create_app  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402

TOKEN = "test-token-123"
CLASSES = [str(d) for d in range(10)]
FAST = TrainConfig(epoch_samples=128, max_epochs=2, patience=1)


def write_images(folder, count=60):
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    truth = {}
    for i in range(count):
        img = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        name = f"{i:03d}.png" if i % 3 else f"{i:03d}.jpg"
        Image.fromarray(img).resize((20, 20)).save(folder / name)
        truth[name] = str(digits.target[i])
    return truth


@pytest.fixture
def project_dir(tmp_path):
    truth = write_images(tmp_path / "images")
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model="mnist_cnn", strategy="batchbald", batch_size=5, mc_samples=5)
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    return tmp_path / "proj"


@pytest.fixture
def client(project_dir):
    project = Project(project_dir, train_config=FAST)
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        c.project = project
        yield c


def test_requests_without_the_token_are_refused(project_dir):
    app = create_app(Project(project_dir), TOKEN)
    with TestClient(app) as anonymous:
        for method, path in [("get", "/api/batch"), ("get", "/api/status"), ("post", "/api/next"), ("get", "/api/items/1/image"), ("get", "/")]:
            response = getattr(anonymous, method)(path, **({"json": {}} if method == "post" else {}))
            assert response.status_code == 401, path
        assert anonymous.post("/api/labels", json={"id": 1, "label": "3"}).status_code == 401
        assert anonymous.get("/api/batch", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get("/?token=wrong", follow_redirects=False).status_code == 401
        # The first visit with the token sets a cookie; later requests need nothing else.
        first = anonymous.get(f"/?token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303 and "batchal_token" in first.headers["set-cookie"]
        assert anonymous.get("/api/batch").status_code == 200
        assert "Label this batch" in anonymous.get("/").text


def test_label_a_batch_and_read_it_back(client):
    batch = client.get("/api/batch").json()
    assert len(batch["items"]) == 5 + 1 and batch["classes"] == CLASSES  # 5 picks and 1 random item for the accuracy estimate
    assert sum(item["random"] for item in batch["items"]) == 1
    assert all(item["label"] is None and item["image_url"] == f"/api/items/{item['id']}/image" for item in batch["items"])
    image = client.get(batch["items"][0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] in ("image/png", "image/jpeg")
    first = batch["items"][0]["id"]
    answer = client.post("/api/labels", json={"id": first, "label": "7", "annotator": "ann"}).json()
    assert answer["ok"] and answer["label"] == "7"
    again = client.get("/api/batch").json()
    assert again["batch_id"] == batch["batch_id"] and again["items"][0]["label"] == "7"
    status = client.get("/api/status").json()
    assert status["labelled"] == 1 and status["batch_labelled"] == 1 and status["items"] == 60 and status["state"] == "idle"


def test_first_batch_is_diverse(client):
    ids = [item["id"] for item in client.get("/api/batch").json()["items"]]
    assert len(set(ids)) == 6  # 5 picks, 1 random
    paths = client.project.store.item_paths()
    assert sorted(ids) != list(range(1, 6)) and all(i in paths for i in ids)


@pytest.mark.parametrize("body, status, message", [
    ("not json", 400, "must be JSON"),
    ("[1, 2]", 400, "JSON object"),
    ('{"label": "3"}', 400, "id must be an integer"),
    ('{"id": "1", "label": "3"}', 400, "id must be an integer"),
    ('{"id": 1}', 400, "label must be a string"),
    ('{"id": 1, "label": "cat"}', 400, "label must be one of"),
    ('{"id": 99999, "label": "3"}', 404, "no item with id 99999"),
    ('{"id": 1, "label": "3", "annotator": 5}', 400, "annotator"),
])
def test_malformed_label_requests_get_a_4xx_with_a_message(client, body, status, message):
    response = client.post("/api/labels", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_images_are_served_by_id_only(client):
    assert client.get("/api/items/99999/image").status_code == 404
    assert client.get("/api/items/abc/image").status_code == 400
    assert client.get("/api/items/..%2F..%2Fetc%2Fpasswd/image").status_code in (400, 404)
    assert client.get("/api/items/1/../../../etc/passwd").status_code == 404


def label_current_batch(client, truth, annotator="a"):
    paths = client.project.store.item_paths()
    for item in client.get("/api/batch").json()["items"]:
        name = os.path.basename(paths[item["id"]])
        assert client.post("/api/labels", json={"id": item["id"], "label": truth[name], "annotator": annotator}).status_code == 200


def test_next_batch_retrains_in_the_background_and_avoids_labelled_items(client, project_dir):
    truth = json.loads((project_dir.parent / "truth.json").read_text())
    first = client.get("/api/batch").json()
    label_current_batch(client, truth)
    assert client.post("/api/next", json={}).status_code == 202
    client.project.wait(120)
    status = client.get("/api/status").json()
    assert status["state"] == "idle", status["error"]
    second = client.get("/api/batch").json()
    assert second["batch_id"] != first["batch_id"] and len(second["items"]) == 5 + 1
    labelled = {item["id"] for item in first["items"]}
    assert not labelled & {item["id"] for item in second["items"]}
    label_current_batch(client, truth)
    client.post("/api/next", json={})
    client.project.wait(120)
    history = client.get("/api/status").json()["accuracy"]
    assert len(history) >= 1 and history[-1]["labelled"] == 12 and 0 <= history[-1]["accuracy"] <= 1
    # On the 2 random items only (one per batch), with a 95% interval around it.
    assert history[-1]["held_out"] == 2 and history[-1]["low"] <= history[-1]["accuracy"] <= history[-1]["high"]


def test_relabelling_keeps_the_history_and_export(client):
    item = client.get("/api/batch").json()["items"][0]["id"]
    client.post("/api/labels", json={"id": item, "label": "1", "annotator": "a"})
    client.post("/api/labels", json={"id": item, "label": "2", "annotator": "a"})  # a changes their mind: their latest counts
    assert client.get("/api/batch").json()["items"][0]["label"] == "2"
    rows = list(csv.DictReader(io.StringIO(export_labels(client.project.dir, "csv"))))
    assert len(rows) == 1 and rows[0]["label"] == "2" and rows[0]["times_labelled"] == "2" and rows[0]["annotator"] == "a"
    data = json.loads(export_labels(client.project.dir, "json"))
    assert [h["label"] for h in data["items"][0]["history"]] == ["1", "2"]
    # Another annotator disagrees: a tie is a tie, the item has no training label until a third vote.
    client.post("/api/labels", json={"id": item, "label": "3", "annotator": "b"})
    assert client.get("/api/batch").json()["items"][0]["label"] is None
    rows = list(csv.DictReader(io.StringIO(export_labels(client.project.dir, "csv"))))
    assert rows[0]["label"] == "" and rows[0]["flag"] == "unresolved" and rows[0]["annotators"] == "a=2;b=3"
    assert json.loads(export_labels(client.project.dir, "json"))["items"][0]["unresolved"] == {"2": 1, "3": 1}
    client.post("/api/labels", json={"id": item, "label": "3", "annotator": "c"})
    assert client.get("/api/batch").json()["items"][0]["label"] == "3"  # 2 votes to 1
    with pytest.raises(ValueError, match="csv or json"):
        export_labels(client.project.dir, "xml")


def test_two_annotators_at_once_lose_nothing(project_dir):
    project = Project(project_dir)
    app = create_app(project, TOKEN)
    ids = list(project.store.item_paths())
    acknowledged = []
    lock = threading.Lock()

    def annotate(name, items):
        with TestClient(app) as c:
            for n, item in enumerate(items):
                r = c.post("/api/labels", json={"id": item, "label": str(n % 10), "annotator": name},
                           headers={"Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200
                with lock:
                    acknowledged.append(r.json()["label_id"])

    # Overlapping items: both label ids[10:30]; each also has items of its own.
    threads = [threading.Thread(target=annotate, args=("alice", ids[:30])), threading.Thread(target=annotate, args=("bob", ids[10:40]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = project.store.label_history()
    assert len(acknowledged) == 60 and sorted(r["id"] for r in history) == sorted(acknowledged)
    assert len(project.store.current_labels()) == 40
    assert {r["annotator"] for r in history if r["item_id"] in ids[10:30]} == {"alice", "bob"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project_dir, port):
    # Short trainings (the page and the store are under test here, not the model).
    proc = subprocess.Popen([sys.executable, "-m", "batchal.cli", "label", "serve", str(project_dir), "--port", str(port), "--token", TOKEN,
                             "--epoch-samples", "128", "--max-epochs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start: " + (proc.stdout.read() if proc.stdout else ""))


def test_kill_and_restart_loses_no_acknowledged_label_and_shows_the_same_batch(project_dir):
    import httpx

    port = free_port()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    proc = start_server(project_dir, port)
    try:
        base = f"http://127.0.0.1:{port}"
        batch = httpx.get(f"{base}/api/batch", headers=headers).json()
        acknowledged = {}
        for n, item in enumerate(batch["items"][:4]):
            r = httpx.post(f"{base}/api/labels", json={"id": item["id"], "label": str(n)}, headers=headers)
            assert r.status_code == 200
            acknowledged[item["id"]] = str(n)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_server(project_dir, port)
    try:
        again = httpx.get(f"http://127.0.0.1:{port}/api/batch", headers=headers).json()
        assert again["batch_id"] == batch["batch_id"]
        assert [i["id"] for i in again["items"]] == [i["id"] for i in batch["items"]]
        assert {i["id"]: i["label"] for i in again["items"] if i["label"] is not None} == acknowledged
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": ["a"]}, "at least two distinct"),
    ({"classes": ["a", "a"]}, "at least two distinct"),
    ({"strategy": "nope"}, "--strategy"),
    ({"batch_size": 0}, "--batch-size"),
    ({"model": "nope"}, "--model"),
])
def test_init_refuses_bad_settings(tmp_path, kwargs, message):
    write_images(tmp_path / "images", count=3)
    args = {"classes": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=message):
        init_project(tmp_path / "p", tmp_path / "images", **args)


def test_init_refuses_an_empty_folder_and_an_existing_project(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG or JPEG"):
        init_project(tmp_path / "p", tmp_path / "empty", ["a", "b"])
    write_images(tmp_path / "images", count=3)
    init_project(tmp_path / "p", tmp_path / "images", ["a", "b"])
    with pytest.raises(FileExistsError):
        init_project(tmp_path / "p", tmp_path / "images", ["a", "b"])
