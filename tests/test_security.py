"""batchal.labelling.security: one security suite against every HTTP surface batchal serves, the
labelling service (``batchal label serve``) and the Label Studio ML backend (``batchal
label-studio serve``). The attacks are those that once reached the backend: a cross-site
``no-cors`` text/plain fetch that recorded a label, an unauthenticated /train that replaced the
batch, an unauthenticated ANNOTATIONS_DELETED, a 6 MB /predict. Each is refused with a 4xx and
writes nothing."""

import base64
import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from fastapi.testclient import TestClient  # noqa: E402

from batchal.integrations.label_studio import Backend, create_app as backend_app, label_config, tasks_for  # noqa: E402
from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.app import create_app as labelling_app  # noqa: E402
from test_labelling import CLASSES, FAST, TOKEN, write_images  # noqa: E402

BASE = "http://127.0.0.1:8765"
USER, PASSWORD = "batchal", "backend-secret-2"


class Surface:
    """One server: its client, good credentials, and a request that writes a label."""

    def __init__(self, name, client, credentials, project, write):
        self.name, self.client, self.credentials, self.project, self._write = name, client, credentials, project, write

    def write(self, headers=None, content=None):
        """POST the label-writing request; ``content``: a raw body instead of the JSON one."""
        path, body = self._write()
        given = {"Content-Type": "application/json", **(headers if headers is not None else self.credentials)}
        return self.client.post(path, content=content if content is not None else json.dumps(body), headers=given)

    def labels(self):
        return dict(self.project.store.current_labels())


@pytest.fixture(params=["label", "label-studio"])
def surface(request, tmp_path):
    truth = write_images(tmp_path / "images", count=20)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, batch_size=4, mc_samples=3)
    project = Project(tmp_path / "proj", train_config=FAST)
    item = project.current_batch()[1][0]
    label = truth[project.store.item_path(item)]
    if request.param == "label":
        client = TestClient(labelling_app(project, TOKEN), base_url=BASE)
        yield Surface("label", client, {"Authorization": f"Bearer {TOKEN}"}, project,
                      lambda: ("/api/labels", {"id": item, "label": label}))
    else:
        backend = Backend(project)
        client = TestClient(backend_app(backend, (USER, PASSWORD)), base_url=BASE)
        good = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        assert client.post("/setup", json={"project": "1.1", "schema": label_config(CLASSES)}, headers=good).status_code == 200
        task = next(t for t in tasks_for(project) if t["data"]["batchal_id"] == project.store.item_path(item))
        annotation = {"id": 1, "completed_by": 7, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                             "value": {"choices": [label]}}]}
        yield Surface("label-studio", client, good, project,
                      lambda: ("/webhook", {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": task}))


def test_the_request_writes_with_credentials(surface):
    """The baseline: the same request, properly sent, records the label (so each refusal below means something)."""
    assert surface.write().status_code == 200 and len(surface.labels()) == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + base64.b64encode(b"batchal:nope").decode()},
                                     {"Authorization": "Basic !!!"}])
def test_no_or_wrong_credentials_are_401_and_write_nothing(surface, headers):
    assert surface.write(headers=headers).status_code == 401 and surface.labels() == {}


def test_a_cross_site_no_cors_text_plain_post_is_refused(surface):
    """What an attack page's fetch(url, {mode: 'no-cors', body: text}) sends: text/plain, its own Origin."""
    path, body = surface._write()
    answer = surface.client.post(path, content=json.dumps(body),
                                 headers={**surface.credentials, "Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert answer.status_code in (403, 415) and surface.labels() == {}
    answer = surface.client.post(path, content=json.dumps(body), headers={"Content-Type": "text/plain"})  # and without credentials
    assert answer.status_code in (401, 415) and surface.labels() == {}


def test_a_foreign_origin_is_403_even_with_credentials(surface):
    answer = surface.write(headers={**surface.credentials, "Origin": "http://127.0.0.1:9999"})
    assert answer.status_code == 403 and surface.labels() == {}
    answer = surface.write(headers={**surface.credentials, "Referer": "http://evil.example/page"})
    assert answer.status_code == 403 and surface.labels() == {}


def test_a_body_over_the_cap_is_413(surface):
    big = json.dumps({"padding": "x" * (6 * 2**20)})  # the 6 MB /predict that was once accepted
    assert surface.write(content=big).status_code == 413 and surface.labels() == {}


def test_no_response_can_be_framed(surface):
    answer = surface.write(headers={})
    assert answer.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_the_backend_never_retrains_or_withdraws_without_credentials(tmp_path):
    """The Label Studio reproductions: /train replacing the batch, ANNOTATIONS_DELETED withdrawing a label, /predict."""
    truth = write_images(tmp_path / "images", count=20)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, batch_size=4, mc_samples=3)
    project = Project(tmp_path / "proj", train_config=FAST)
    batch = project.current_batch()
    project.add_label(batch[1][0], truth[project.store.item_path(batch[1][0])], "label-studio:7")
    client = TestClient(backend_app(Backend(project), (USER, PASSWORD)), base_url=BASE)
    json_only = {"Content-Type": "application/json"}
    assert client.post("/train", content="{}", headers=json_only).status_code == 401
    assert client.post("/webhook", content=json.dumps({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}]}),
                       headers=json_only).status_code == 401
    assert client.post("/predict", content=json.dumps({"tasks": []}), headers=json_only).status_code == 401
    project.wait(30)
    assert project.store.current_batch() == batch and len(project.store.current_labels()) == 1
    assert client.get("/health").status_code == 200  # Label Studio's connection check may look without credentials
