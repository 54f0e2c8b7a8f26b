"""The labelling service at real size: 20,000 images (Fashion-MNIST, a quarter of them enlarged to
64x64 and a tenth saved as RGB), BatchBALD, the default model (mnist_cnn), batchal run's training
protocol trained in the background as `batchal label serve` does, on this machine.

Measures: `init` (decoding every image once, into the project's input cache); serve start
(opening the project and loading its inputs, what `batchal label serve` does before it
listens); "next" to the next batch ready, over several rounds of a simulated labeller; the
label round trip (POST /api/labels on a real server) while the model retrains; peak memory. The
simulated labeller takes ``--delay`` seconds per label (a person's pace), during which the service
trains on the labels so far; "next" is answered from the newest finished model.

    python benchmarks/bench_labelling.py [--images 20000] [--rounds 4] [--delay 1.5] [--out results/benchmarks/labelling.txt]

Needs the reference data (fashion-mnist) and the label extra (fastapi, uvicorn, pillow, httpx).
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, data_dir: Path) -> dict[str, str]:
    from PIL import Image

    with gzip.open(data_dir / "fashion-mnist" / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(data_dir / "fashion-mnist" / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    truth = {}
    for i in range(count):
        img = Image.fromarray(images[i % len(images)])
        if i % 4 == 0:
            img = img.resize((64, 64), Image.BILINEAR)
        if i % 10 == 0:
            img = img.convert("RGB")
        name = f"{i // 1000:02d}/{i:05d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(folder / name)
        truth[name] = str(int(labels[i % len(labels)]))
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--delay", type=float, default=1.5, help="seconds the simulated labeller takes per label")
    parser.add_argument("--data-dir", default=os.environ.get("BATCHAL_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "labelling.txt"))
    args = parser.parse_args()
    import httpx
    import uvicorn

    from batchal.labelling import Project, init_project
    from batchal.labelling.app import create_app
    from batchal.threads import use_threads

    threads = use_threads()
    lines = [
        f"# The labelling service at real size: {args.images:,} Fashion-MNIST images (1 in 4 at 64x64, 1 in 10 RGB), "
        "batchbald, b = 10 (+ 2 random items), mnist_cnn, K = 20, batchal run's training protocol in the background",
        f"# command: python benchmarks/bench_labelling.py --images {args.images} --rounds {args.rounds} --delay {args.delay}",
        f"# machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, {threads} thread(s), "
        f"load before start: {os.getloadavg()[0]:.2f}",
        "",
    ]
    say = lambda line: (print(line, flush=True), lines.append(line))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        truth = write_images(tmp / "images", args.images, Path(args.data_dir))
        say(f"writing the images: {time.perf_counter() - start:.1f} s (not part of batchal)")
        start = time.perf_counter()
        init_project(tmp / "proj", tmp / "images", [str(c) for c in range(10)], strategy="batchbald", batch_size=10, mc_samples=20)
        say(f"init (decode once, write the input cache): {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        project = Project(tmp / "proj", background=True)
        project.features()
        project.current_batch()
        serve_start = time.perf_counter() - start
        say(f"serve start (open the project, load the cached inputs, the first batch): {serve_start:.2f} s (target < 5 s)")
        name_of = project.store.item_paths()
        port = 8765 + os.getpid() % 1000
        server = uvicorn.Server(uvicorn.Config(create_app(project, "bench"), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer bench"})
        waits, trips = [], []
        for round_ in range(args.rounds + 1):
            batch = client.get("/api/batch").json()["items"]
            for item in batch:
                time.sleep(args.delay)
                client.post("/api/labels", json={"id": item["id"], "label": truth[name_of[item["id"]]]})
            start = time.perf_counter()
            client.post("/api/next", json={})
            while client.get("/api/status").json()["state"] not in ("idle", "failed"):
                t = time.perf_counter()  # a label round trip while the model retrains (relabel an item with its own label)
                item = batch[0]["id"]
                client.post("/api/labels", json={"id": item, "label": truth[name_of[item]]})
                trips.append(time.perf_counter() - t)
                time.sleep(0.05)
            wait = time.perf_counter() - start
            status = client.get("/api/status").json()
            if status["state"] == "failed":
                raise SystemExit(f"retraining failed: {status['error']}")
            waits.append(wait)
            acc = status["accuracy"][-1] if status["accuracy"] else None
            shown = f"; estimate {acc['accuracy']:.2f} ({acc['low']:.2f}-{acc['high']:.2f}, n = {acc['held_out']})" if acc else ""
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in status.get("timings", {}).items())
            say(f"round {round_}: {status['labelled']} labels; 'next' to batch ready {wait:.1f} s ({parts}); chosen by the model "
                f"of {status['model_labels']} training labels{shown}")
        server.should_exit = True
        project.close()
        say("")
        say(f"'next' to batch ready: median {statistics.median(waits):.1f} s, max {max(waits):.1f} s over {len(waits)} rounds (target < 10 s)")
        if trips:
            say(f"label round trip while retraining: median {statistics.median(trips) * 1000:.0f} ms, "
                f"max {max(trips) * 1000:.0f} ms over {len(trips)} labels (target: median < 100 ms)")
        say(f"peak memory (max RSS of this process): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        say(f"project folder: {sum(f.stat().st_size for f in (tmp / 'proj').rglob('*') if f.is_file()) / 2**20:.0f} MiB")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
