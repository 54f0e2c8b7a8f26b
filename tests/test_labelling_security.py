"""The labelling service against a hostile page, malformed requests and damaged image folders:
every refusal a 4xx JSON error, never a 5xx, nothing written that should not be."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.app import MAX_BODY_BYTES, create_app  # noqa: E402
from test_labelling import CLASSES, FAST, TOKEN, write_images  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def project_dir(tmp_path):
    write_images(tmp_path / "images", count=20)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model="mnist_cnn", strategy="bald", batch_size=4, mc_samples=3)
    return tmp_path / "proj"


@pytest.fixture
def client(project_dir):
    project = Project(project_dir, train_config=FAST)
    with TestClient(create_app(project, TOKEN), base_url="http://127.0.0.1:8765") as c:
        c.cookies.set("batchal_token", TOKEN)  # a logged-in browser: the cookie alone authorises
        c.project = project
        yield c


def first_item(client):
    return client.get("/api/batch").json()["items"][0]["id"]


def test_another_origin_cannot_label_through_the_cookie(client):
    item = first_item(client)
    evil = "http://127.0.0.1:9999"
    # A form on another port: form encoding, Origin of that page.
    r = client.post("/api/labels", content=f"id={item}&label=3", headers={"Origin": evil, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    # A no-cors fetch: text/plain is all it can send.
    r = client.post("/api/labels", content=json.dumps({"id": item, "label": "3"}), headers={"Origin": evil, "Content-Type": "text/plain"})
    assert r.status_code == 403
    # Even with a matching Origin, only JSON changes state; a Referer from elsewhere is refused too.
    r = client.post("/api/labels", content=json.dumps({"id": item, "label": "3"}), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = client.post("/api/labels", json={"id": item, "label": "3"}, headers={"Referer": f"{evil}/attack.html"})
    assert r.status_code == 403
    r = client.post("/api/next", content="", headers={"Origin": evil, "Content-Type": "application/json"})
    assert r.status_code == 403
    assert client.project.store.label_history() == [] and client.project.store.batch_count() == 1
    # The page itself (same origin, JSON) works.
    r = client.post("/api/labels", json={"id": item, "label": "3"}, headers={"Origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200 and len(client.project.store.label_history()) == 1


def test_no_response_can_be_framed(client):
    for response in (client.get("/"), client.get("/api/batch"), client.get("/api/items/999999/image"),
                     client.post("/api/labels", content="x", headers={"Content-Type": "text/plain"})):
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("body, status", [
    ('{"id": 9223372036854775808, "label": "3"}', 404),          # 2^63: past SQLite's integers
    ('{"id": -1, "label": "3"}', 404),
    ('{"id": 1, "label": ' + "9" * 5000 + "}", 400),             # more than Python's 4,300 digits
    ('{"id": 1, "label": ' + "[" * 100_000 + "]" * 100_000 + "}", 413),  # deep nesting, and over the size limit
    ('{"id": 1, "label": ' + "[" * 5_000 + "]" * 5_000 + "}", 400),      # deep nesting within the limit
    ('{"id": 1.5, "label": "3"}', 400),
    ('"just a string"', 400),
    ("", 400),
])
def test_malformed_bodies_get_a_4xx_json_error(client, body, status):
    r = client.post("/api/labels", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and "error" in r.json()


@pytest.mark.parametrize("path", ["/api/items/9223372036854775808/image", "/api/items/99999999999999999999999/image", "/api/items/-5/image"])
def test_huge_item_ids_in_paths_are_404(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "error" in r.json()


def test_bodies_over_the_limit_are_413(client):
    big = json.dumps({"id": 1, "label": "3", "annotator": "x" * (MAX_BODY_BYTES + 1)})
    assert client.post("/api/labels", content=big, headers={"Content-Type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: read until the limit, then refused
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    assert client.post("/api/labels", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 413


def test_next_with_everything_labelled_writes_no_batch(client):
    project = client.project
    for item in project.store.item_paths():
        project.add_label(item, CLASSES[item % 10])
    batches = project.store.batch_count()
    for _ in range(3):
        r = client.post("/api/next", json={})
        assert r.status_code == 202 and r.json()["state"] == "done"
    assert project.store.batch_count() == batches
    assert client.get("/api/status").json()["done"] is True


def test_a_crash_between_training_and_selecting_leaves_no_accuracy_row(client, monkeypatch):
    import batchal.acquire as project_module  # the seam the service selects through

    project = client.project
    _, batch = project.current_batch()  # its random item makes the accuracy estimate
    for n, item in enumerate(batch + [i for i in project.store.item_paths() if i not in batch][: 12 - len(batch)]):
        project.add_label(item, CLASSES[n % 3])
    real_select = project_module.select

    def crash(*args, **kwargs):
        raise RuntimeError("killed while selecting")

    monkeypatch.setattr(project_module, "select", crash)
    project.request_next()
    project.wait(60)
    assert project.state == "failed" and project.store.accuracy_history() == []
    monkeypatch.setattr(project_module, "select", real_select)
    project.request_next()
    project.wait(60)
    assert project.state == "idle", project.error
    assert [row["labelled"] for row in project.store.accuracy_history()] == [12]


def test_a_damaged_folder_is_listed_at_init_and_the_rest_is_labelled(tmp_path):
    images = tmp_path / "images"
    truth = write_images(images, count=12)
    good = images / "000.jpg"
    (images / "truncated.png").write_bytes((images / "001.png").read_bytes()[:60])
    (images / "notes.png").write_text("this is a text file")
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(outside)
    os.symlink(outside, images / "link-out.png")
    os.symlink(good, images / "link-in.jpg")  # a link inside the folder is fine
    store = init_project(tmp_path / "proj", images, CLASSES, model="mnist_cnn", strategy="bald", batch_size=4, mc_samples=3)
    skipped = {entry["path"]: entry["reason"] for entry in store.meta()["skipped"]}
    assert set(skipped) == {"truncated.png", "notes.png", "link-out.png"}
    assert "outside the images folder" in skipped["link-out.png"]
    assert store.item_count() == 13
    project = Project(tmp_path / "proj", train_config=FAST)
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers.update(AUTH)
        assert len(c.get("/api/status").json()["skipped"]) == 3
        for _ in range(2):  # label two batches end to end
            for item in c.get("/api/batch").json()["items"]:
                name = os.path.basename(str(project.image_path(item["id"])))
                label = truth.get(name, truth["000.jpg"])
                assert c.post("/api/labels", json={"id": item["id"], "label": label}).status_code == 200
                assert c.get(f"/api/items/{item['id']}/image").status_code == 200
            assert c.post("/api/next", json={}).status_code == 202
            project.wait(120)
            assert project.state == "idle", project.error


def test_a_link_swapped_in_after_init_is_not_served(client, project_dir, tmp_path):
    project = client.project
    item = first_item(client)
    path = project.image_path(item)
    assert client.get(f"/api/items/{item}/image").status_code == 200
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    path.unlink()
    os.symlink(secret, path)
    r = client.get(f"/api/items/{item}/image")
    assert r.status_code == 404 and b"secret" not in r.content


def test_the_owner_token_is_kept_hashed_across_restarts_until_a_new_one(project_dir):
    from batchal.labelling.app import OWNER_TOKEN_KEY, keep_owner_token

    project = Project(project_dir, train_config=FAST)
    keep_owner_token(project, "first-token-abc")
    assert "first-token-abc" not in json.dumps(project.store.meta())  # only its hash is stored
    restarted = TestClient(create_app(Project(project_dir, train_config=FAST), None), base_url="http://127.0.0.1:8765")
    assert restarted.get("/api/status", headers={"Authorization": "Bearer first-token-abc"}).status_code == 200
    assert restarted.get("/api/status", headers={"Authorization": "Bearer another"}).status_code == 401
    keep_owner_token(project, "second-token-xyz")  # --new-token
    again = TestClient(create_app(Project(project_dir, train_config=FAST), None), base_url="http://127.0.0.1:8765")
    assert again.get("/api/status", headers={"Authorization": "Bearer first-token-abc"}).status_code == 401
    assert again.get("/api/status", headers={"Authorization": "Bearer second-token-xyz"}).status_code == 200
    assert Project(project_dir).store.meta()[OWNER_TOKEN_KEY]


def test_a_port_in_time_wait_is_free_and_a_listening_one_is_not():
    import socket

    from batchal.labelling.app import refuse_port_in_use

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    with pytest.raises(ValueError, match="cannot listen"):
        refuse_port_in_use("127.0.0.1", port)  # another program listens there
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its port is left in TIME_WAIT, as after a kill -9 with a tab open
    client.close()
    server.close()
    refuse_port_in_use("127.0.0.1", port)  # a restart a moment later is not refused
