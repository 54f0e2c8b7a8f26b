"""Label Studio's ML-backend protocol: the backend's answers (test client, the request formats of
label_studio/ml/api_connector.py and webhooks), then the whole loop against a real Label Studio
server started on loopback (when one is installed: ``$BATCHAL_LABEL_STUDIO``, which .ci/run sets)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from batchal.integrations.label_studio import Backend, choices_of, create_app, label_config, tasks_for  # noqa: E402
from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.store import Store  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402

CLASSES = [str(d) for d in range(10)]
FAST = TrainConfig(epoch_samples=128, max_epochs=2, patience=1)


def make_project(tmp_path, count=60, batch_size=5):
    images = tmp_path / "images"
    (images / "sub dir").mkdir(parents=True)
    digits = load_digits()
    truth = {}
    for i in range(count):
        name = f"sub dir/{i:03d}.png" if i % 2 else f"{i:03d}.png"
        Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((20, 20)).save(images / name)
        truth[name] = str(digits.target[i])
    init_project(tmp_path / "proj", images, CLASSES, model="mnist_cnn", strategy="batchbald", batch_size=batch_size, mc_samples=5)
    return tmp_path / "proj", truth


CREDENTIALS = ("batchal", "backend-secret-1")


def annotation(label, annotation_id=1, user=7, from_name="label", cancelled=False):
    return {"id": annotation_id, "completed_by": user, "was_cancelled": cancelled,
            "result": [] if cancelled else [{"from_name": from_name, "to_name": "image", "type": "choices", "value": {"choices": [label]}}]}


@pytest.fixture
def backend(tmp_path):
    project_dir, truth = make_project(tmp_path)
    project = Project(project_dir, train_config=FAST)
    be = Backend(project)
    client = TestClient(create_app(be, CREDENTIALS))
    client.auth = CREDENTIALS
    client.truth, client.be = truth, be
    client.tasks = [dict(t, id=n + 1) for n, t in enumerate(tasks_for(project))]
    assert client.post("/setup", json={"project": "1.1", "schema": label_config(CLASSES)}).status_code == 200
    return client


def test_config_and_tasks_round_trip(tmp_path):
    project_dir, truth = make_project(tmp_path, count=12)
    project = Project(project_dir, train_config=FAST)
    assert choices_of(label_config(CLASSES)) == ("label", "image", CLASSES)
    tasks = tasks_for(project)
    assert sorted(t["data"]["batchal_id"] for t in tasks) == sorted(truth)
    spaced = next(t for t in tasks if " " in t["data"]["batchal_id"])
    assert "%20" in spaced["data"]["image"] and spaced["data"]["image"].startswith("/data/local-files/?d=")
    backend = Backend(project)
    assert {backend.item_of(t) for t in tasks} == set(project.store.item_paths())
    with pytest.raises(ValueError, match=r"\{path\}"):
        tasks_for(project, "http://x/img")


def test_setup_refuses_configs_that_do_not_fit(backend):
    wrong = label_config(CLASSES[:9] + ["ten"])
    answer = backend.post("/setup", json={"schema": wrong})
    assert answer.status_code == 400 and "missing 9" in answer.json()["error"] and "not a class: ten" in answer.json()["error"]
    for bad, words in [("<View/>", "exactly one <Choices>"), ("not xml", "not XML"),
                       ('<!DOCTYPE x [<!ENTITY a "b">]><View/>', "DOCTYPE")]:
        answer = backend.post("/setup", json={"schema": bad})
        assert answer.status_code == 400 and words in answer.json()["error"], bad
    assert backend.post("/setup", content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert backend.get("/health").json()["status"] == "UP"


def test_predict_ranks_the_batch_first_in_batch_order(backend):
    answer = backend.post("/predict", json={"tasks": backend.tasks, "project": "1.1"})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert len(results) == len(backend.tasks)
    by_item = {backend.be.item_of(t): r for t, r in zip(backend.tasks, results)}
    batch_id, batch = backend.be.project.store.current_batch()
    ranked = sorted(by_item, key=lambda i: -by_item[i]["score"])
    assert ranked[: len(batch)] == batch  # the batch first, in its order
    assert all(by_item[i]["score"] > 1 for i in batch) and all(by_item[i]["score"] < 1 for i in ranked[len(batch):])
    assert {r["model_version"] for r in results} == {f"batchal-batchbald-batch-{batch_id}"}
    unknown = backend.post("/predict", json={"tasks": [{"id": 99, "data": {"image": "x"}}]}).json()["results"]
    assert unknown == [{"result": [], "score": 0.0, "model_version": f"batchal-batchbald-batch-{batch_id}"}]
    assert backend.post("/predict", json={"tasks": "no"}).status_code == 400


def test_webhook_labels_flags_withdraws_and_moves_to_the_next_batch(backend):
    be, store = backend.be, backend.be.project.store
    batch_id, batch = store.current_batch()
    task_of = {be.item_of(t): t for t in backend.tasks}
    paths = store.item_paths()
    first, *rest = batch
    hook = lambda body: backend.post("/webhook", json=body)
    # a label, then its update, then its deletion
    assert hook({"action": "ANNOTATION_CREATED", "annotation": annotation(backend.truth[paths[first]], 11), "task": task_of[first]}).json()["recorded"] == 1
    assert store.current_labels()[first] == backend.truth[paths[first]]
    assert store.annotator_labels()[first] == {"label-studio:7": (backend.truth[paths[first]], store.annotator_labels()[first]["label-studio:7"][1])}
    other = "0" if backend.truth[paths[first]] != "0" else "1"
    hook({"action": "ANNOTATION_UPDATED", "annotation": annotation(other, 11), "task": task_of[first]})
    assert store.current_labels()[first] == other
    assert hook({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 11}, {"id": 999}]}).json()["withdrawn"] == 1
    assert first not in store.current_labels()
    # a class that is not one, and a skip
    bad = hook({"action": "ANNOTATION_CREATED", "annotation": annotation("cat", 12), "task": task_of[first]})
    assert bad.status_code == 400 and "'cat'" in bad.json()["error"]
    hook({"action": "ANNOTATION_CREATED", "annotation": annotation(None, 13, cancelled=True), "task": task_of[first]})
    assert store.flagged()[first]["kind"] == "unsure"
    # actions the backend does not act on are answered, not refused
    assert hook({"action": "PROJECT_UPDATED", "project": {}}).json()["ignored"] is True
    # the rest of the batch, in one bulk event: the batch is complete, so the next one is selected
    assert hook({"action": "ANNOTATIONS_CREATED", "annotation": [annotation(backend.truth[paths[i]], 20 + n, user={"id": 3, "email": "a@b.c"})
                                                                 for n, i in enumerate(rest)],
                 "task": [task_of[i] for i in rest]}).json()["recorded"] == len(rest)
    be.project.wait(120)
    assert be.project.error is None
    new_id, new_batch = store.current_batch()
    assert new_id == batch_id + 1 and not set(new_batch) & set(batch)
    assert "label-studio:a@b.c" in next(iter(store.annotator_labels()[rest[0]]))
    results = backend.post("/predict", json={"tasks": backend.tasks}).json()["results"]
    assert {r["model_version"] for r in results} == {f"batchal-batchbald-batch-{new_id}"}
    by_item = {be.item_of(t): r for t, r in zip(backend.tasks, results)}
    assert sorted(by_item, key=lambda i: -by_item[i]["score"])[: len(new_batch)] == new_batch
    assert all(r["result"] and r["result"][0]["value"]["choices"][0] in CLASSES for i, r in by_item.items() if i in new_batch)
    # a restarted backend still knows which annotation gave which label
    again = Backend(Project(be.project.dir, train_config=FAST))
    assert again._annotations["20"][0] == rest[0]


# --- against a real Label Studio ---------------------------------------------------------------------------------

LABEL_STUDIO = os.environ.get("BATCHAL_LABEL_STUDIO") or shutil.which("label-studio")
TOKEN = "batchal0test0token0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method="GET", body=None, token=TOKEN, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                             **({"Authorization": f"Token {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def wait_for(url, seconds, process):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{url}: the server exited with {process.returncode}")
        try:
            call(url, token=None, timeout=2)
            return
        except (urllib.error.URLError, OSError, ConnectionError):
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.mark.skipif(not LABEL_STUDIO, reason="Label Studio is not installed here: .ci/run installs it in its own virtual "
                    "environment (scripts/install_label_studio.sh) and points $BATCHAL_LABEL_STUDIO at it")
def test_a_real_label_studio_gets_the_batch_first_and_the_next_batch_after_annotating(tmp_path):
    project_dir, truth = make_project(tmp_path, count=40, batch_size=5)
    ls_port, be_port = free_port(), free_port()
    # The README's steps: local files served from the images folder's parent, a storage on the folder itself.
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"), "ML_BLOCK_LOCAL_IP": "false",
           "SSRF_PROTECTION_ENABLED": "false", "BATCHAL_THREADS": "1", "OMP_NUM_THREADS": "1",
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path)}
    logs = open(tmp_path / "servers.log", "w")
    cli = [sys.executable, "-m", "batchal.cli"]
    backend = subprocess.Popen(cli + ["label-studio", "serve", str(project_dir), "--port", str(be_port), "--epoch-samples", "128", "--max-epochs", "2",
                                      "--basic-auth-user", CREDENTIALS[0], "--basic-auth-pass", CREDENTIALS[1],
                                      "--label-studio-url", f"http://127.0.0.1:{ls_port}", "--api-key", TOKEN], env=env, stdout=logs, stderr=logs)
    ls = subprocess.Popen([LABEL_STUDIO, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(ls_port),
                           "--data-dir", str(tmp_path / "ls"), "--username", "tester@example.com", "--password", "batchal-test-pw",
                           "--user-token", TOKEN, "--enable-legacy-api-token"], env=env, stdout=logs, stderr=logs, cwd=tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{be_port}/health", 60, backend)
        wait_for(f"http://127.0.0.1:{ls_port}/health", 300, ls)
        api = f"http://127.0.0.1:{ls_port}/api"
        config = subprocess.run(cli + ["label-studio", "config", str(project_dir)], capture_output=True, text=True, check=True).stdout
        tasks_file = tmp_path / "tasks.json"
        subprocess.run(cli + ["label-studio", "tasks", str(project_dir), "-o", str(tasks_file)], check=True, capture_output=True)
        project = call(f"{api}/projects", "POST", {"title": "batchal test", "label_config": config})
        pid = project["id"]
        call(f"{api}/storages/localfiles", "POST", {"project": pid, "path": str(tmp_path / "images"), "title": "images",
                                                    "use_blob_urls": False})
        tasks = json.loads(tasks_file.read_text())
        call(f"{api}/projects/{pid}/import", "POST", tasks)
        # An image displays: Label Studio serves the task's URL (a path with a space in it among them).
        for task in (tasks[0], next(t for t in tasks if " " in t["data"]["batchal_id"])):
            request = urllib.request.Request(f"http://127.0.0.1:{ls_port}{task['data']['image']}", headers={"Authorization": f"Token {TOKEN}"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert answer.status == 200 and answer.read(8) == b"\x89PNG\r\n\x1a\n", task

        ml = call(f"{api}/ml", "POST", {"url": f"http://127.0.0.1:{be_port}", "project": pid, "title": "batchal",
                                        "auth_method": "BASIC_AUTH", "basic_auth_user": CREDENTIALS[0], "basic_auth_pass": CREDENTIALS[1]})
        assert ml["state"] == "CO", ml  # Label Studio's health check and /setup passed
        task_of_path = {}
        page = 1
        while True:
            listing = call(f"{api}/tasks?project={pid}&page_size=100&page={page}")
            for task in listing["tasks"]:
                task_of_path[task["data"]["batchal_id"]] = task["id"]
            if len(task_of_path) >= listing["total"]:
                break
            page += 1
        assert len(task_of_path) == len(truth)

        def ranked_by_label_studio(expected, seconds=90):
            """Tasks as the Data Manager lists them sorted by prediction score, descending, once
            they start with ``expected`` (the backend refreshes the ranking in the background)."""
            query = urllib.request.quote(json.dumps({"ordering": ["-tasks:predictions_score"]}))
            deadline = time.time() + seconds
            while True:
                ranked = [t["id"] for t in call(f"{api}/tasks?project={pid}&page_size=100&query={query}")["tasks"]]
                if ranked[: len(expected)] == expected or time.time() > deadline:
                    return ranked
                time.sleep(1)

        store = Store(project_dir)
        paths = store.item_paths()
        for round_ in range(2):
            batch_id, batch = store.current_batch()
            expected = [task_of_path[paths[i]] for i in batch]
            ranked = ranked_by_label_studio(expected)
            assert ranked[: len(batch)] == expected, f"round {round_}: Label Studio's order does not start with batchal's batch"
            for item, task in zip(batch, expected):
                call(f"{api}/tasks/{task}/annotations", "POST", {"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                                          "value": {"choices": [truth[paths[item]]]}}]})
            # the webhook recorded every label; the backend retrains and selects the next batch
            deadline = time.time() + 180
            while store.current_batch()[0] == batch_id and time.time() < deadline:
                time.sleep(1)
            assert store.current_batch()[0] == batch_id + 1, "no new batch after the batch was annotated"
            labels = store.current_labels()
            assert all(labels[i] == truth[paths[i]] for i in batch)
            assert all(next(iter(store.annotator_labels()[i])).startswith("label-studio:") for i in batch)
        # the third batch is ranked first too, and the model's suggestions reach Label Studio's predictions
        batch_id, batch = store.current_batch()
        expected = [task_of_path[paths[i]] for i in batch]
        assert ranked_by_label_studio(expected)[: len(batch)] == expected
        predictions = call(f"{api}/predictions?project={pid}")
        latest = [p for p in predictions if p["model_version"] == f"batchal-batchbald-batch-{store.current_batch()[0]}"]
        assert latest and any(p["result"] and p["result"][0]["value"]["choices"][0] in CLASSES for p in latest)
    finally:
        for process in (backend, ls):
            process.terminate()
        for process in (backend, ls):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


def test_the_ranking_refresh_speaks_both_kinds_of_api_key_and_survives_a_refusal(tmp_path):
    """A legacy token goes as `Token KEY`; a personal access token (a JWT) is exchanged at
    /api/token/refresh for a Bearer token first. A refused call is reported by /health, not raised."""
    import http.server
    import threading

    from batchal.integrations.label_studio import LabelStudioClient

    seen = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, self.headers.get("Authorization"), json.loads(body) if body else None))
            if self.headers.get("Authorization") == "Token refused":
                self.send_response(401)
                self.end_headers()
                return
            answer = {"access": "short-lived"} if self.path == "/api/token/refresh" else {"detail": "Retrieved 3 predictions"}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PATCH = _answer

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        LabelStudioClient(url, "legacy0token").refresh_ranking(7, "batchal-x-batch-2")
        assert [(m, p, a) for m, p, a, _ in seen] == [("POST", "/api/dm/actions?id=retrieve_tasks_predictions&project=7", "Token legacy0token"),
                                                     ("PATCH", "/api/projects/7", "Token legacy0token")]
        assert seen[1][3] == {"model_version": "batchal-x-batch-2"}
        seen.clear()
        LabelStudioClient(url, "aaa.bbb.ccc").refresh_ranking(7, "v")
        assert [(p, a) for _, p, a, _ in seen][:2] == [("/api/token/refresh", None), ("/api/dm/actions?id=retrieve_tasks_predictions&project=7", "Bearer short-lived")]
        assert seen[0][3] == {"refresh": "aaa.bbb.ccc"}
        project_dir, _ = make_project(tmp_path, count=12)
        backend = Backend(Project(project_dir, train_config=FAST), client=LabelStudioClient(url, "refused"))
        backend.ls_project = 7
        backend.refresh_ranking()
        assert "failed (HTTP Error 401" in backend.health()["last_refresh"]
        with pytest.raises(ValueError, match="must start with http"):
            LabelStudioClient("localhost:8080", "k")
    finally:
        server.shutdown()
