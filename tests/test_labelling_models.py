"""The labelling service with the user's own model or features, suggestions, undo, the stopping
hint, and import / export."""

import csv
import io
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from batchal.cli import main  # noqa: E402
from batchal.labelling import Project, export_labels, export_predictions, init_project  # noqa: E402
from batchal.labelling.app import create_app  # noqa: E402
from test_labelling import FAST, TOKEN  # noqa: E402

CLASSES = ["red", "green", "blue"]

USER_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    input_size = 16          # the page's images are resized to this
    input_channels = 3       # and kept in colour
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def make():
    torch.manual_seed(0)
    return Net()


def wrong():
    return nn.Linear(3, 7)
'''


def colour_images(folder, count=36, seed=0):
    """RGB images of mixed sizes whose dominant channel is the class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(count):
        c = i % 3
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        pixels = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
        pixels[:, :, c] = rng.integers(160, 255, (h, w))
        name = f"img{i:03d}.png" if i % 2 else f"img{i:03d}.jpg"
        Image.fromarray(pixels).save(folder / name)
        truth[name] = CLASSES[c]
    return truth


@pytest.fixture
def user_model(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(USER_MODEL)
    import importlib.util

    spec = importlib.util.spec_from_file_location("net_for_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.make().state_dict(), tmp_path / "net.pt")
    return path


def label_batch(client, truth, project):
    for item in client.get("/api/batch").json()["items"]:
        name = os.path.basename(str(project.image_path(item["id"])))
        assert client.post("/api/labels", json={"id": item["id"], "label": truth[name]}).status_code == 200


def next_batch(client, project):
    assert client.post("/api/next", json={}).status_code == 202
    project.wait(120)
    assert project.state == "idle", project.error


def test_a_users_model_with_weights_suggests_and_exports(tmp_path, user_model):
    truth = colour_images(tmp_path / "images")
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model=f"{user_model}:make", weights=tmp_path / "net.pt",
                 strategy="bald", batch_size=6, mc_samples=4)
    project = Project(tmp_path / "proj", train_config=FAST)
    assert project.meta["image_size"] == 16 and project.meta["grayscale"] is False and project.meta["std"] == [0.25] * 3
    _, x = project.features()
    assert x.shape[1:] == (3, 16, 16)  # the model's size and channels, not 28 x 28 grayscale
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert all(item["suggestion"] is None for item in c.get("/api/batch").json()["items"])  # no model yet
        label_batch(c, truth, project)
        next_batch(c, project)
        items = [item for item in c.get("/api/batch").json()["items"] if not item["random"]]  # the strategy's picks
        assert all(item["suggestion"] in CLASSES and 1 / 3 <= item["probability"] <= 1 and item["score"] is not None for item in items)
        status = c.get("/api/status").json()
        assert status["batches"][-1]["information"] == pytest.approx(sum(item["score"] for item in items))
    assert (tmp_path / "proj" / "model.pt").is_file()
    rows = list(csv.DictReader(io.StringIO(export_predictions(tmp_path / "proj", "csv"))))
    labelled = project.store.current_labels()
    assert len(rows) == project.store.item_count() - len(labelled) and all(int(r["item_id"]) not in labelled for r in rows)
    assert json.loads(export_predictions(tmp_path / "proj", "json"))["items"][0]["predicted"] in CLASSES
    out = tmp_path / "exported"
    out.mkdir()
    assert main(["label", "export", str(tmp_path / "proj"), "-o", str(out / "labels.csv"),
                 "--predictions", str(out / "preds.csv"), "--model-weights", str(out / "model.pt")]) == 0
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(torch.load(tmp_path / "net.pt", weights_only=True))


def test_user_model_errors_are_clear(tmp_path, user_model):
    colour_images(tmp_path / "images", count=6)
    for kwargs, message in [
        ({"model": f"{user_model}:wrong"}, "failed on an input of shape"),
        ({"model": f"{user_model}:nothing"}, "has no callable 'nothing'"),
        ({"model": "resnet"}, "or MODULE:FACTORY"),
        ({"model": f"{user_model}:make", "weights": tmp_path / "missing.pt"}, "no such file"),
        ({"model": "mlp", "weights": tmp_path / "net.pt"}, "--weights needs a MODULE:FACTORY"),
    ]:
        with pytest.raises(ValueError, match=message):
            init_project(tmp_path / "proj", tmp_path / "images", CLASSES, **kwargs)


def test_features_from_any_backbone_train_a_bayesian_head(tmp_path):
    truth = colour_images(tmp_path / "images", count=30)
    names = sorted(truth)
    rng = np.random.default_rng(0)
    features = np.stack([np.eye(3)[CLASSES.index(truth[n])] * 3 + rng.normal(0, 0.5, 3) for n in names]).astype(np.float32)
    features = np.concatenate([features, rng.normal(0, 1, (30, 5)).astype(np.float32)], axis=1)  # 8 features per image
    np.save(tmp_path / "features.npy", features)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, features=tmp_path / "features.npy", strategy="batchbald", batch_size=5, mc_samples=8)
    project = Project(tmp_path / "proj", train_config=FAST)
    ids, x = project.features()
    assert x.shape == (30, 8) and project.meta["model"] == "mlp"
    row = {os.path.basename(str(project.image_path(i))): n for n, i in enumerate(ids)}
    assert np.allclose(x[row["img007.png"]].numpy(), features[names.index("img007.png")])
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        for _ in range(3):
            label_batch(c, truth, project)
            next_batch(c, project)
        batch = c.get("/api/batch").json()["items"]
        assert len(batch) == 5 + 1 and all(item["label"] is None for item in batch)
        assert all(item["suggestion"] in CLASSES for item in batch if not item["random"])
    # An .npz gives the order explicitly; a row count that does not match is refused.
    np.savez(tmp_path / "f.npz", features=features[::-1], paths=np.array(names[::-1]))
    init_project(tmp_path / "proj2", tmp_path / "images", CLASSES, features=tmp_path / "f.npz")
    assert np.allclose(Project(tmp_path / "proj2").features()[1].numpy(), x.numpy())
    np.save(tmp_path / "short.npy", features[:10])
    with pytest.raises(ValueError, match="has 10 rows but the folder holds 30 images"):
        init_project(tmp_path / "proj3", tmp_path / "images", CLASSES, features=tmp_path / "short.npy")


def test_undo_adds_history_and_restores_the_previous_label(tmp_path):
    colour_images(tmp_path / "images", count=9)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model="mlp", image_size=8, batch_size=3)
    project = Project(tmp_path / "proj", train_config=FAST)
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        a, b = [item["id"] for item in c.get("/api/batch").json()["items"][:2]]
        c.post("/api/labels", json={"id": a, "label": "red"})
        c.post("/api/labels", json={"id": b, "label": "green"})
        c.post("/api/labels", json={"id": b, "label": "blue"})  # a correction
        assert c.post("/api/undo", json={}).json() == {"ok": True, "id": b, "label": "green", "label_id": 4}
        assert project.store.current_labels() == {a: "red", b: "green"}
        assert c.post("/api/undo", json={}).json()["label"] is None  # b back to unlabelled
        assert c.post("/api/undo", json={}).json()["id"] == a
        assert project.store.current_labels() == {}
        r = c.post("/api/undo", json={})
        assert r.status_code == 409 and "nothing to undo" in r.json()["error"]
        assert len(project.store.label_history()) == 6  # nothing deleted: 3 labels, 3 undos
        assert c.get("/api/batch").json()["items"][1]["label"] is None
    assert export_labels(tmp_path / "proj", "csv").count("\n") == 1  # header only: nothing is labelled now


def test_stop_hint_only_when_the_paired_gain_is_below_the_estimates_precision(tmp_path):
    from batchal.labelling.quality import wilson_interval

    colour_images(tmp_path / "images", count=9)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, model="mlp", image_size=8, batch_size=3, stop_patience=2)
    project = Project(tmp_path / "proj")

    def estimate(labelled, per_item):
        right = sum(per_item.values())
        return (labelled, right / len(per_item), len(per_item), *wilson_interval(right, len(per_item)), per_item)

    # 40 random items; the model goes from 20 right to 30 right, then stays at 30.
    before = {i: int(i < 20) for i in range(40)}
    after = {i: int(i < 30) for i in range(40)}
    for labelled, per_item in [(10, before), (20, before), (30, after)]:
        project.store.add_batch("bald", [], accuracy=estimate(labelled, per_item))
    assert project.stop_hint() is None  # 10 more right out of 40 over the window: a real gain
    project.store.add_batch("bald", [], accuracy=estimate(40, after))
    assert project.stop_hint() is None  # still compared with 20 labels (window 2): the gain is real
    project.store.add_batch("bald", [], accuracy=estimate(50, after))
    assert "below the estimate's own precision" in project.stop_hint()  # 30 vs 30 on the same items
    few = {i: 1 for i in range(8)}  # 8 items are too few to say anything
    for labelled in (60, 70, 80):
        project.store.add_batch("bald", [], accuracy=estimate(labelled, few))
    assert project.stop_hint() is None
    for kappa in (0.995, 0.99, 0.999):  # predictions stop changing
        project.store.add_batch("bald", [], kappa=kappa)
    assert "predictions have stabilised" in project.stop_hint()


def test_existing_labels_are_imported_at_init(tmp_path, capsys):
    truth = colour_images(tmp_path / "images", count=9)
    (tmp_path / "done.csv").write_text("path,label\n" + "".join(f"{n},{truth[n]}\n" for n in sorted(truth)[:4]))
    assert main(["label", "init", str(tmp_path / "proj"), "--images", str(tmp_path / "images"), "--classes", "red,green,blue",
                 "--model", "mlp", "--image-size", "8", "--labels", str(tmp_path / "done.csv")]) == 0
    assert "4 labels imported" in capsys.readouterr().out
    store = Project(tmp_path / "proj").store
    assert sorted(os.path.basename(store.item_path(i)) for i in store.current_labels()) == sorted(truth)[:4]
    (tmp_path / "bad.csv").write_text("img000.jpg,red\nnot-there.png,red\n")
    assert main(["label", "init", str(tmp_path / "proj2"), "--images", str(tmp_path / "images"), "--classes", "red,green,blue",
                 "--model", "mlp", "--image-size", "8", "--labels", str(tmp_path / "bad.csv")]) == 2
    assert "line 2: 'not-there.png' is not a registered image" in capsys.readouterr().err
