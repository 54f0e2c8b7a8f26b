"""The labeller gets the runner's model: a simulated labeller (true labels) on the labelling
service against `batchal run` on the same pool, strategy and batch size.

The pool: 3,000 MNIST training images written as PNG files (train/<class>/NNNNN.png) and 2,000
MNIST test images (test/<class>/), one folder both sides read. `batchal run` runs on the folder
(``--dataset FOLDER``: its protocol, with a validation set of 300 of the 3,000 for early
stopping: labels the simulation has for free), and again with no validation set
(``validation_size 0``: no label beyond the count, every one of the protocol's 30 epochs). The service (``Project(background=True)``, as `batchal label serve` opens it) starts
from the runner's 20 initial labels (imported) and is labelled batch by batch with the true
labels, ``--delay`` seconds per label (a person's pace), its 2 random audit items per batch
included; its background trainer trains on the labels so far while the labeller works.

At 100 and at 200 labels given (audit items counted: every label costs the same), the service's
model is the one it trains on those labels (its protocol: the epochs chosen by early stopping on
every 5th label, then every label trained on for that many epochs; `label export --model-weights`
gives it), and, beside it, the model that chooses its batches (the audit items held out for the
accuracy estimate); they are evaluated on the 2,000 test images; the runner's is its round at that
label count. Also recorded: how many labels the model that chose each batch was trained on, and
"next" to batch ready.

    python benchmarks/bench_labeller.py [--seeds 0,1,2] [--delay 1.5] [--out results/benchmarks/labeller.txt]

Resumable: each (side, seed) writes its figures to OUT.d/ when done and is skipped when there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
COUNTS = (100, 200)
TRAIN, TEST, B, INITIAL = 3000, 2000, 10, 20


def write_pool(folder: Path, data_dir: Path) -> dict[str, int]:
    """train/<class>/NNNNN.png (the first 3,000 MNIST training images) and test/<class>/ (the first
    2,000 test images); returns the training images' true labels by path relative to train/."""
    from PIL import Image

    def read(name, offset):
        with gzip.open(data_dir / "mnist" / name) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)

    truth = {}
    for split, prefix, count in (("train", "train", TRAIN), ("test", "t10k", TEST)):
        images = read(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        labels = read(f"{prefix}-labels-idx1-ubyte.gz", 8)
        for i in range(count):
            path = folder / split / str(labels[i]) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
            if split == "train":
                truth[f"{labels[i]}/{i:05d}.png"] = int(labels[i])
    return truth


def run_side(folder: Path, seed: int, validation: bool = True) -> dict:
    """batchal run on the folder; without ``validation`` (validation_size 0: no free labels to stop
    on, every epoch of the protocol trained), the reference that spends no label beyond the count."""
    from batchal.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(dataset=str(folder), strategy="batchbald", seed=seed, acquisition_size=B, initial_size=INITIAL,
                              budget=max(COUNTS), mc_samples=20, **({} if validation else {"validation_size": 0}))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rows = run_experiment(config, Path(tmp) / "run")
    return {"accuracy": {c: next(r["test_accuracy"] for r in rows if r["labelled"] == c) for c in COUNTS},
            "seconds": time.perf_counter() - start}


def initial_paths(folder: Path, seed: int) -> list[str]:
    """The runner's initial set for this seed, as paths under train/ (the service imports them)."""
    from batchal.data.datasets import load_dataset
    from batchal.experiment import ExperimentConfig, Splits

    config = ExperimentConfig(dataset=str(folder), strategy="batchbald", seed=seed, acquisition_size=B, initial_size=INITIAL,
                              budget=max(COUNTS))
    data = load_dataset(str(folder))
    splits = Splits.make(data, config.resolved(data))
    return [str(Path(data.train_ids[i]).relative_to("train")) if str(data.train_ids[i]).startswith("train") else data.train_ids[i]
            for i in splits.initial.tolist()]


def service_side(folder: Path, truth: dict[str, int], seed: int, delay: float) -> dict:
    from batchal.data.datasets import load_dataset
    from batchal.labelling import Project, init_project
    from batchal.training import evaluate

    test = load_dataset(str(folder))  # the same decoding of the test images as the runner's
    classes = [str(c) for c in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        initial = initial_paths(folder, seed)
        (tmp / "labels.csv").write_text("".join(f"{p},{truth[p]}\n" for p in initial))
        init_project(tmp / "proj", folder / "train", classes, strategy="batchbald", batch_size=B, mc_samples=20, labels=tmp / "labels.csv")
        project = Project(tmp / "proj", background=True)
        project.meta["seed"] = seed
        name_of = project.store.item_paths()
        out = {"accuracy": {}, "selection_accuracy": {}, "waits": [], "model_labels": []}
        start = time.perf_counter()

        def measure(count):
            """The exported model (every label, what `label export --model-weights` gives) and the
            model that chooses batches (the audit items held out for the accuracy estimate)."""
            labels = project.store.current_labels()
            ids, x = project.features()
            _, _, train_ids = project._training_split(labels, {item: n for n, item in enumerate(ids)})
            for name, items in (("accuracy", sorted(labels)), ("selection_accuracy", train_ids)):
                model, _ = project._train_job((items, labels))
                # As the runner evaluates: the MC-dropout average of K = 20 samples.
                out.setdefault(name, {})[count] = evaluate(model, test.test_x, test.test_y, 20, 512, seed=seed)["accuracy"]
            print(f"  service seed {seed}: {count} labels, exported model {out['accuracy'][count]:.4f}; the selection model "
                  f"({len(train_ids)} trained on) {out['selection_accuracy'][count]:.4f}", flush=True)

        project.train_in_background()
        ask = time.perf_counter()
        project.request_next()
        while len(project.store.current_labels()) < max(COUNTS):
            project.wait()
            out["waits"].append(time.perf_counter() - ask)
            if project.state == "failed":
                raise SystemExit(f"the service failed: {project.error}")
            out["model_labels"].append([len(project.store.current_labels()), project.model_labels])
            for item in project.current_batch()[1]:
                if item in project.store.current_labels():
                    continue
                time.sleep(delay)
                project.add_label(item, str(truth[name_of[item]]))
                given = len(project.store.current_labels())
                if given in COUNTS:
                    measure(given)
                if given >= max(COUNTS):
                    break
            ask = time.perf_counter()
            if len(project.store.current_labels()) < max(COUNTS):
                project.request_next()
        project.close()
        out["seconds"] = time.perf_counter() - start
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--delay", type=float, default=1.5, help="seconds the simulated labeller takes per label")
    parser.add_argument("--sides", default="service,run,run-noval")
    parser.add_argument("--data-dir", default=os.environ.get("BATCHAL_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "labeller.txt"))
    args = parser.parse_args()
    from batchal.threads import use_threads

    threads = use_threads()
    if not (Path(args.data_dir) / "mnist").is_dir():
        raise SystemExit(f"MNIST not found under {args.data_dir} (set BATCHAL_DATA or --data-dir)")
    parts = Path(args.out + ".d")
    parts.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist-3000"
        truth = write_pool(folder, Path(args.data_dir))
        for seed in seeds:
            for side in args.sides.split(","):
                part = parts / f"{side}-seed{seed}.json"
                if part.exists():
                    continue
                load = os.getloadavg()[0]
                print(f"{side} seed {seed} (load {load:.2f})", flush=True)
                result = (service_side(folder, truth, seed, args.delay) if side == "service"
                          else run_side(folder, seed, validation=side == "run"))
                result.update({"load_before": load, "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                               f"torch {torch.__version__}, {threads} thread(s) per process"})
                part.write_text(json.dumps(result))
    write_summary(parts, seeds, args)
    return 0


def write_summary(parts: Path, seeds: list[int], args) -> None:
    found = {(side, s): json.loads((parts / f"{side}-seed{s}.json").read_text())
             for side in ("service", "run", "run-noval") for s in seeds if (parts / f"{side}-seed{s}.json").exists()}
    lines = [f"# The labeller gets the runner's model: the labelling service (simulated labeller, {args.delay} s per label, "
             f"true labels) against batchal run, {TRAIN:,} MNIST training PNGs, {TEST:,} test PNGs, batchbald, b = {B} "
             f"(the service adds 2 random audit items per batch), {INITIAL} initial labels (the runner's, imported), K = 20",
             f"# command: python benchmarks/bench_labeller.py --seeds {args.seeds} --delay {args.delay}",
             f"# machine: {next(iter(found.values()))['machine'] if found else '?'}; load before each part in its row",
             "", "| labels | seed | batchal run | service (exported model) | service - run | the service's selection model "
             "| batchal run, no validation set |", "|---|---|---|---|---|---|---|"]
    gaps = {c: [] for c in COUNTS}
    for c in COUNTS:
        for s in seeds:
            run, service = found.get(("run", s)), found.get(("service", s))
            if run is None or service is None:
                continue
            r, v = run["accuracy"][str(c)], service["accuracy"][str(c)]
            gaps[c].append(v - r)
            noval = found.get(("run-noval", s))
            lines.append(f"| {c} | {s} | {r:.4f} | {v:.4f} | {v - r:+.4f} | {service['selection_accuracy'][str(c)]:.4f} | "
                         + (f"{noval['accuracy'][str(c)]:.4f} |" if noval else "- |"))
    lines.append("")
    for c in COUNTS:
        if gaps[c]:
            lines.append(f"at {c} labels: service - run, mean {statistics.mean(gaps[c]):+.4f} over {len(gaps[c])} seed(s) "
                         f"(min {min(gaps[c]):+.4f}, max {max(gaps[c]):+.4f}); target: within 3 points (|gap| <= 0.03)")
    waits = [w for (side, _), part in found.items() if side == "service" for w in part["waits"][1:]]
    if waits:
        lines.append(f"service, 'next' to batch ready (3,000 images; the first model batch left out, no model existed): "
                     f"median {statistics.median(waits):.1f} s, max {max(waits):.1f} s over {len(waits)} batches")
    stale = [given - trained for (side, _), part in found.items() if side == "service" for given, trained in part["model_labels"][1:]
             if trained is not None]
    if stale:
        lines.append(f"labels the choosing model had not yet trained on (labels given - its training labels, audit items "
                     f"included in the given): median {statistics.median(stale)}, max {max(stale)}")
    for (side, s), part in sorted(found.items()):
        lines.append(f"{side} seed {s}: {part['seconds']:.0f} s, load before {part['load_before']:.2f}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
