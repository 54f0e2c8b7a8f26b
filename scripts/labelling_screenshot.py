"""The README's labelling screenshot, from a real run: a simulated labeller (Fashion-MNIST's true
labels) labels batch after batch until the stop hint appears (at most 40 batches); annotators
alice and bob are registered, alice labels part of the current batch, and the page is opened
as alice in headless Chromium (Debian's package).

    python scripts/labelling_screenshot.py OUT_FOLDER [--data-dir ../shared/data]

Writes OUT_FOLDER/labelling-team.png.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--data-dir", default=os.environ.get("BATCHAL_DATA", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    import uvicorn
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from batchal.labelling import Project, init_project
    from batchal.labelling.app import add_annotator, create_app
    from batchal.threads import use_threads
    from batchal.training import TrainConfig

    use_threads()
    data = Path(args.data_dir) / "fashion-mnist"
    with gzip.open(data / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:2000]
    with gzip.open(data / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:2000]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        truth = {}
        for i, (img, y) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(tmp / "images" / f"item{i:04d}.png")
            truth[f"item{i:04d}.png"] = CLASSES[int(y)]
        init_project(tmp / "proj", tmp / "images", CLASSES, model="mlp", strategy="batchbald", batch_size=10, mc_samples=20, image_size=28)
        project = Project(tmp / "proj", train_config=TrainConfig(epoch_samples=1024, max_epochs=15, patience=3))
        name_of = project.store.item_paths()
        for round_ in range(40):
            _, batch = project.current_batch()
            for item in batch:
                project.add_label(item, truth[name_of[item]])
            project.request_next()
            project.wait()
            if project.state == "failed":
                raise SystemExit(project.error)
            if project.stop_hint():
                break
        print(f"{round_ + 1} batches; hint: {project.stop_hint()}")
        tokens = {name: add_annotator(tmp / "proj", name) for name in ("alice", "bob")}
        port = 8765 + os.getpid() % 500
        server = uvicorn.Server(uvicorn.Config(create_app(project, "owner"), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("BATCHAL_CHROMIUM", "/usr/bin/chromium"), headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?token={tokens['alice']}")
            page.wait_for_selector(".item img")
            page.wait_for_function("[...document.querySelectorAll('.item img')].every(i => i.complete && i.naturalWidth > 0)")
            cards = page.locator(".item")
            for n in range(min(3, cards.count())):
                item = int(cards.nth(n).get_attribute("data-id"))
                page.keyboard.press(project.keys()[CLASSES.index(truth[name_of[item]])])
            page.wait_for_function("document.getElementById('queue').textContent === ''")
            page.wait_for_selector("#plot .interval", state="attached")
            page.screenshot(path=str(out / "labelling-team.png"), full_page=True)
            browser.close()
        server.should_exit = True
    print(out / "labelling-team.png")


if __name__ == "__main__":
    sys.exit(main())
