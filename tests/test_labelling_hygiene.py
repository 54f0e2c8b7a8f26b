"""Bad files, stored model paths, factory mistakes, CSV injection, many classes, flags, the port in use."""

import csv
import io
import json
import os
import socket
import struct
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from test_labelling import write_images  # noqa: E402

from batchal.cli import main  # noqa: E402
from batchal.labelling import Project, export_labels, init_project  # noqa: E402
from batchal.labelling.app import create_app  # noqa: E402
from batchal.labelling.project import default_keys, read_classes_file  # noqa: E402

TOKEN = "hygiene-token"


def bomb_png(path, side=30_000):
    """A tiny PNG whose header claims side x side pixels (what a decompression bomb declares; its
    data are only a few rows, since nothing may decode it anyway)."""
    raw = zlib.compress((b"\x00" + b"\x00" * side) * 4, 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_bombs_link_loops_fifos_and_links_out_are_listed_and_skipped(tmp_path):
    images = tmp_path / "images"
    write_images(images, count=12)
    bomb_png(images / "bomb.png")
    assert (images / "bomb.png").stat().st_size < 100_000
    os.symlink("loop-b.png", images / "loop-a.png")
    os.symlink("loop-a.png", images / "loop-b.png")
    os.mkfifo(images / "pipe.png")
    os.symlink("/dev/zero", images / "device.png")
    (images / "sub").mkdir()
    os.symlink(images, images / "sub" / "back-up")  # a folder loop: never followed
    store = init_project(tmp_path / "proj", images, [str(d) for d in range(10)], model="mlp", image_size=8, batch_size=3)
    skipped = {entry["path"]: entry["reason"] for entry in store.meta()["skipped"]}
    assert "decompression bomb" in skipped["bomb.png"]
    assert "loop" in skipped["loop-a.png"] and "loop" in skipped["loop-b.png"]
    assert skipped["pipe.png"] == "a FIFO"
    assert "outside the images folder" in skipped["device.png"]
    assert store.item_count() == 12
    # Serving refuses a file swapped for a FIFO after init, and keeps going.
    project = Project(tmp_path / "proj")
    victim = min(project.store.item_paths())
    path = project.image_path(victim)
    path.unlink()
    os.mkfifo(path)
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        assert c.get(f"/api/items/{victim}/image").status_code == 404
        assert c.get("/api/status").status_code == 200


def test_the_model_file_is_stored_absolutely_and_checked_at_serve(tmp_path, monkeypatch):
    write_images(tmp_path / "images", count=12)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(
        "from torch import nn\n"
        "def make(input_shape, num_classes):\n"  # a factory that takes the shape and classes
        "    return nn.Sequential(nn.Flatten(), nn.Linear(int(__import__('math').prod(input_shape)), 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, num_classes))\n"
        "def needs_more(a, b, c):\n    return None\n"
        "def broken():\n    raise RuntimeError('no weights here')\n"
    )
    monkeypatch.chdir(tmp_path / "models")
    store = init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="net.py:make", image_size=12)
    assert store.meta()["model"] == f"{tmp_path / 'models' / 'net.py'}:make"
    monkeypatch.chdir(tmp_path)  # serving from another folder finds it
    project = Project(tmp_path / "proj")
    assert project._new_model((1, 12, 12))(torch.zeros(1, 1, 12, 12)).shape == (1, 10)
    for spec, message in (("net.py:needs_more", "must take no arguments or (input_shape, num_classes); it requires a, b, c"),
                          ("net.py:broken", "failed (RuntimeError: no weights here)")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            init_project(tmp_path / f"p-{spec[-5:]}", tmp_path / "images", [str(d) for d in range(10)], model=str(tmp_path / "models" / spec))
    (tmp_path / "models" / "net.py").unlink()
    with pytest.raises(ValueError, match="model file .*net.py is missing"):
        Project(tmp_path / "proj")


def test_csv_export_is_safe_from_formula_injection(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("=HYPERLINK(1).png", "+cmd.png", "-x.png", "@sum.png", "plain.png"):
        Image.fromarray(np.full((12, 12), 100, np.uint8)).save(images / name)
    store = init_project(tmp_path / "proj", images, ["=evil", "b"], model="mlp", image_size=8, batch_size=2)
    store.add_labels([(i, "=evil") for i in store.item_paths()], annotator="=cmd|' /C calc'!A0")
    rows = list(csv.reader(io.StringIO(export_labels(tmp_path / "proj", "csv"))))[1:]
    cells = [cell for row in rows for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert "'=HYPERLINK(1).png" in cells and "'=evil" in cells and "plain.png" in cells


def test_keys_for_any_number_of_classes_and_a_label_file(tmp_path):
    assert default_keys([str(d) for d in range(10)]) == [str(d) for d in range(10)]
    many = [f"class{i}" for i in range(40)]
    keys = default_keys(many)
    given = [k for k in keys if k]
    assert len(given) == len(set(given)) == 31 and keys[:11] == list("1234567890") + ["a"]
    assert not {"n", "u", "s", "x", "z"} & set(given)  # the page's own keys stay free
    (tmp_path / "labels.csv").write_text("# name,key,description\ncat,c,a small feline\ndog,,\nbird,b,has feathers\n")
    names, file_keys, descriptions = read_classes_file(tmp_path / "labels.csv")
    assert names == ["cat", "dog", "bird"] and file_keys == ["c", None, "b"] and descriptions[0] == "a small feline"
    (tmp_path / "bad.csv").write_text("cat,n\n")
    with pytest.raises(ValueError, match="line 1: key 'n' must be one character other than"):
        read_classes_file(tmp_path / "bad.csv")
    write_images(tmp_path / "images", count=12)
    assert main(["label", "init", str(tmp_path / "proj"), "--images", str(tmp_path / "images"), "--classes-file",
                 str(tmp_path / "labels.csv"), "--model", "mlp", "--image-size", "8"]) == 0
    project = Project(tmp_path / "proj")
    assert project.classes == ["cat", "dog", "bird"] and project.keys() == ["c", "1", "b"]
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        batch = c.get("/api/batch").json()
        assert batch["keys"] == ["c", "1", "b"] and batch["descriptions"][2] == "has feathers"


def test_skip_and_bad_image_take_items_out_of_the_pool_with_a_note(tmp_path):
    write_images(tmp_path / "images", count=12)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mlp", image_size=8, batch_size=3)
    project = Project(tmp_path / "proj")
    with TestClient(create_app(project, TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        items = [item["id"] for item in c.get("/api/batch").json()["items"]]
        assert c.post("/api/flag", json={"id": items[0], "kind": "unsure", "note": "blurry"}).status_code == 200
        assert c.post("/api/flag", json={"id": items[1], "kind": "bad_image"}).status_code == 200
        r = c.post("/api/flag", json={"id": items[2], "kind": "nonsense"})
        assert r.status_code == 400 and "kind must be one of unsure, bad_image" in r.json()["error"]
        assert c.get("/api/status").json()["flagged"] == 2
    assert items[0] not in project._pool({}) and items[1] not in project._pool({})
    data = json.loads(export_labels(tmp_path / "proj", "json"))
    assert {f["id"]: (f["kind"], f["note"]) for f in data["flagged"]} == {items[0]: ("unsure", "blurry"), items[1]: ("bad_image", None)}


def test_serve_on_a_port_in_use_says_so_before_printing_an_address(tmp_path, capsys):
    write_images(tmp_path / "images", count=12)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mlp", image_size=8)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["label", "serve", str(tmp_path / "proj"), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"--port {port}: cannot listen" in captured.err and "Open http" not in captured.out


def test_a_device_node_inside_the_folder_is_listed(tmp_path):
    import stat

    images = tmp_path / "images"
    write_images(images, count=6)
    try:
        os.mknod(images / "null.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("making a device node needs root")
    store = init_project(tmp_path / "proj", images, [str(d) for d in range(10)], model="mlp", image_size=8)
    assert {e["path"]: e["reason"] for e in store.meta()["skipped"]}["null.png"] == "a device"


def test_a_label_file_with_more_than_ten_classes_gets_a_key_for_each(tmp_path):
    names = [f"species-{i}" for i in range(14)]
    (tmp_path / "labels.csv").write_text("".join(f"{n}\n" for n in names))
    write_images(tmp_path / "images", count=20)
    assert main(["label", "init", str(tmp_path / "proj"), "--images", str(tmp_path / "images"), "--classes-file",
                 str(tmp_path / "labels.csv"), "--model", "mlp", "--image-size", "8"]) == 0
    keys = Project(tmp_path / "proj").keys()
    assert keys == list("1234567890") + ["a", "b", "c", "d"] and len(set(keys)) == 14


def test_overlap_two_gives_both_annotators_the_same_items_and_an_agreement(tmp_path):
    from batchal.labelling.app import add_annotator

    write_images(tmp_path / "images", count=30)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mlp", image_size=8, batch_size=4, overlap=2)
    tokens = {n: add_annotator(tmp_path / "proj", n) for n in ("alice", "bob")}
    project = Project(tmp_path / "proj")
    with TestClient(create_app(project, TOKEN)) as c:
        seen = {}
        for name, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"}
            items = [i["id"] for i in c.get("/api/batch", headers=headers).json()["items"]]
            seen[name] = items
            for n, item in enumerate(items):
                label = str(n % 10) if name == "alice" or n != 0 else "9"  # bob disagrees on the first item
                assert c.post("/api/labels", json={"id": item, "label": label}, headers=headers).status_code == 200
        assert seen["alice"] == seen["bob"] and len(seen["alice"]) == 5  # 4 picks + 1 random, both get all with overlap 2
        carol = add_annotator(tmp_path / "proj", "carol")
        r = c.post("/api/labels", json={"id": seen["alice"][1], "label": "1"}, headers={"Authorization": f"Bearer {carol}"})
        assert r.status_code == 409 and "already has 2 label(s)" in r.json()["error"]
        # The item alice and bob disagree on has no training label and is offered to a third annotator.
        assert seen["alice"][0] not in project.store.current_labels()
        assert seen["alice"][0] in [i["id"] for i in c.get("/api/batch", headers={"Authorization": f"Bearer {carol}"}).json()["items"]]
        assert c.post("/api/labels", json={"id": seen["alice"][0], "label": "0"}, headers={"Authorization": f"Bearer {carol}"}).status_code == 200
        assert project.store.current_labels()[seen["alice"][0]] == "0"  # alice and carol: 2 votes to bob's 1
        agreement = c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()["agreement"]
        assert agreement["items"] == 5 and agreement["all_agree"] == 4 and agreement["disagreements"] == [seen["alice"][0]]
        assert set(agreement["cohen_kappa"]) == {"alice / bob", "alice / carol", "bob / carol"}
        # Reliability: each annotator against the others' decided vote (bob and carol's vote ties on the first item).
        # alice: the first item's others tie (bob 9, carol 0), so 4 items, all agreeing; bob: outvoted once in 5;
        # carol labelled only the first item, where the others tie: no entry.
        assert agreement["reliability"] == {"alice": {"items": 4, "agreement": 1.0}, "bob": {"items": 5, "agreement": 0.8}}
        review = c.get("/api/review", headers={"Authorization": f"Bearer {TOKEN}"}).json()["items"]
        assert [r["id"] for r in review] == [seen["alice"][0]] and review[0]["labels"] == {"alice": "0", "bob": "9", "carol": "0"}
    data = json.loads(export_labels(tmp_path / "proj", "json"))
    assert data["agreement"]["items"] == 5


def test_a_new_batch_never_holds_an_item_labelled_while_the_model_trained(tmp_path, monkeypatch):
    import batchal.labelling.project as project_module

    truth = write_images(tmp_path / "images", count=40)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mlp", image_size=8, batch_size=5,
                 strategy="batchbald", mc_samples=4)
    project = Project(tmp_path / "proj", train_config=project_module.TrainConfig(epoch_samples=64, max_epochs=2, patience=1))
    _, first = project.current_batch()
    for item in first:
        project.add_label(item, truth[project.image_path(item).name])
    import batchal.acquire as seam  # the service selects through batchal.acquire, as every entry point

    real_select = seam.select
    labelled_meanwhile = []

    def select_while_someone_labels(*args, **kwargs):
        selection = real_select(*args, **kwargs)
        pool = [i for i in project.features()[0] if i not in project.store.current_labels() and i not in project.store.flagged()]
        # The person labels the item that is about to be picked first (candidate order = pool order here).
        candidates = pool if len(pool) <= project.score_candidates else None
        item = candidates[int(selection.indices[0])]
        project.add_label(item, "3")
        labelled_meanwhile.append(item)
        return selection

    monkeypatch.setattr(seam, "select", select_while_someone_labels)
    project.request_next()
    project.wait(120)
    assert project.state == "idle", project.error
    _, second = project.current_batch()
    assert labelled_meanwhile and labelled_meanwhile[0] not in second and len(second) == 4 + 1
    details = [d for d in project.store.batch_details(project.store.current_batch()[0]) if not d["audit"]]
    information = project.store.batch_history()[-1]["information"]
    # BatchBALD's per-card score is the item's own marginal gain: they add up to the batch's information
    # (the batch's total counts the dropped item's gain too, which is why it is compared to the picks'
    # gains before the drop plus what was dropped).
    assert all(d["score"] > 0 for d in details) and sum(d["score"] for d in details) < information + 1e-9


def test_batchbalds_card_score_is_the_items_own_gain(tmp_path):
    truth = write_images(tmp_path / "images", count=40)
    init_project(tmp_path / "proj", tmp_path / "images", [str(d) for d in range(10)], model="mlp", image_size=8, batch_size=5,
                 strategy="batchbald", mc_samples=4)
    from batchal.training import TrainConfig

    project = Project(tmp_path / "proj", train_config=TrainConfig(epoch_samples=64, max_epochs=2, patience=1))
    _, first = project.current_batch()
    for item in first:
        project.add_label(item, truth[project.image_path(item).name])
    project.request_next()
    project.wait(120)
    picks = [d for d in project.store.batch_details(project.store.current_batch()[0]) if not d["audit"]]
    information = project.store.batch_history()[-1]["information"]  # I(y_1..y_b; w) of the whole batch
    assert len(picks) == 5 and all(d["score"] >= 0 for d in picks)
    assert sum(d["score"] for d in picks) == pytest.approx(information)  # gains add up: not a running total
    assert max(d["score"] for d in picks) < information  # (a running total would end at the information itself)
