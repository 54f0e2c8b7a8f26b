"""Labels from noisy annotators: votes, reliability and relabelling, measured (issue 33, item 6).

A labelling project on scikit-learn's digits (its 64 pixel values as features, batchal's Bayesian
MLP head, BatchBALD, batches of 10 picks + 2 random audit items) is labelled by three simulated
annotators through the service's own API (``Project.batch_for``: each takes its fair share of
every batch, as on the page). ``ann`` and ``bea`` give the true label; ``cal`` replaces 30% of its
labels by a uniformly random other class. Every setting spends the same number of labels (label
rows, whoever gives them):

- ``one label per item``: overlap 1, no relabelling;
- ``relabelling``: overlap 1 and ``relabel=True`` (``batchal.labelling.relabel``, ActiveLab's rule:
  a doubtful labelled item gets another label when that is worth more than a new item);
- ``two labels per item``: overlap 2 (every item labelled by two annotators; a tie goes to a third).

Measured at 100, 200 and 300 labels, per seed (the digits are shuffled and the noise drawn per
seed): the share of decided items whose training label (the vote) is right (consensus accuracy),
the items whose vote ties, and the test accuracy of a model trained on the decided labels (the
project's own training, the 497 digits left out of the project as the test set); at the end each
annotator's estimated reliability. Differences are paired by seed, with a 95% bootstrap interval.

Usage: python scripts/noisy_annotators.py [--seeds 0,1,2,3,4] [--out results/noisy-annotators]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from batchal.compare import bootstrap_mean  # noqa: E402
from batchal.labelling import Project, init_project  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402

CHECKPOINTS = (100, 200, 300)
FLIP = 0.3
POOL = 1300
SETTINGS = {"one label per item": dict(overlap=1, relabel=False), "relabelling": dict(overlap=1, relabel=True),
            "two labels per item": dict(overlap=2, relabel=False)}
TRAIN = TrainConfig(epoch_samples=512, max_epochs=15, patience=3)


def make_project(folder: Path, x: np.ndarray, overlap: int, relabel: bool, seed: int) -> tuple[Project, dict[int, int]]:
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True)
    names = [f"d{i:04d}.png" for i in range(len(x))]
    for name, row in zip(names, x):
        Image.fromarray((row.reshape(8, 8) * 255).astype(np.uint8)).save(images / name)
    np.save(folder / "features.npy", x)
    init_project(folder / "proj", images, [str(d) for d in range(10)], features=folder / "features.npy", strategy="batchbald",
                 batch_size=10, mc_samples=10, overlap=overlap, relabel=relabel)
    project = Project(folder / "proj", train_config=TRAIN)
    project.store.set_meta("seed", seed)
    project.meta["seed"] = seed
    for name in ("ann", "bea", "cal"):
        project.store.add_annotator(name, f"token-{name}")
    row_of = {item: names.index(project.store.item_path(item)) for item in project.features()[0]}
    return project, row_of


def label_batch(project: Project, answer) -> None:
    """Each annotator takes its share of the batch and labels it; passes repeat until nobody gets
    a new item (a tie is then offered to the third annotator)."""
    while True:
        given = 0
        for name in ("ann", "bea", "cal"):
            _, items = project.batch_for(name)
            mine = project.store.annotator_labels()
            for item in items:
                if name not in mine.get(item, {}):
                    project.add_label(item, answer(name, item), annotator=name, supervisor=False)
                    given += 1
        if given == 0:
            return


def test_accuracy(project: Project, x_test: np.ndarray, y_test: np.ndarray) -> float:
    path = project.train_final_model()
    model = project._new_model((x_test.shape[1],))
    model.load_state_dict(torch.load(path))
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((predicted == y_test).mean())


def simulate(setting: str, seed: int, x: np.ndarray, y: np.ndarray) -> dict:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    pool, test = order[:POOL], order[POOL:]
    noise = np.random.default_rng(10_000 + seed)
    with tempfile.TemporaryDirectory() as tmp:
        project, row_of = make_project(Path(tmp), x[pool], seed=seed, **SETTINGS[setting])
        truth = {item: int(y[pool[row]]) for item, row in row_of.items()}

        def answer(name: str, item: int) -> str:
            if name == "cal" and noise.random() < FLIP:
                return str((truth[item] + noise.integers(1, 10)) % 10)
            return str(truth[item])

        out = {"setting": setting, "seed": seed, "checkpoints": []}
        project.current_batch()
        started = time.perf_counter()
        relabelled = 0
        while len(project.store.label_history()) < CHECKPOINTS[-1]:
            label_batch(project, answer)
            spent = len(project.store.label_history())
            for mark in CHECKPOINTS:
                if spent >= mark and all(c["labels"] != mark for c in out["checkpoints"]):
                    labels = project.store.current_labels()
                    out["checkpoints"].append({
                        "labels": mark, "labels_spent": spent, "decided": len(labels),
                        "consensus_accuracy": float(np.mean([labels[i] == str(truth[i]) for i in labels])),
                        "ties": len(project.store.unresolved()), "test_accuracy": test_accuracy(project, x[test], y[test])})
            if spent >= CHECKPOINTS[-1]:
                break
            project.request_next()
            project.wait(600)
            if project.state == "failed":
                raise RuntimeError(project.error)
            relabelled += len(project.store.relabel_items())
        out["second_opinions_asked"] = relabelled
        out["reliability"] = project.status()["agreement"]["reliability"]
        out["seconds"] = time.perf_counter() - started
        project.close()
    return out


def write_readme(out: Path, rows: list[dict], command: str) -> None:
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["setting"], r["seed"]): r for r in rows}
    lines = ["# Noisy annotators: votes, reliability and relabelling", "",
             f"Written by `{command}` (issue 33, item 6). Three simulated annotators label scikit-learn's digits "
             f"through the labelling service's API; `cal` replaces {FLIP:.0%} of its labels by a random other class. "
             f"{len(seeds)} seeds; mean over seeds with a 95% bootstrap interval. Labels: label rows given, whoever gives them "
             "(equal label cost across settings). See `scripts/noisy_annotators.py` for the protocol.", "",
             "| setting | labels | consensus accuracy | tied items | test accuracy |", "|---|---|---|---|---|"]
    for setting in SETTINGS:
        for mark in CHECKPOINTS:
            cells = []
            for key in ("consensus_accuracy", "ties", "test_accuracy"):
                values = [c[key] for s in seeds for c in by[(setting, s)]["checkpoints"] if c["labels"] == mark]
                mean, low, high = bootstrap_mean(values)
                cells.append(f"{mean:.1f} ({low:.1f}-{high:.1f})" if key == "ties" else f"{mean:.3f} ({low:.3f}-{high:.3f})")
            lines.append(f"| {setting} | {mark} | " + " | ".join(cells) + " |")
    lines += ["", "Paired by seed, relabelling minus one label per item (95% bootstrap interval over seeds):", "",
              "| labels | consensus accuracy | test accuracy |", "|---|---|---|"]
    for mark in CHECKPOINTS:
        cells = []
        for key in ("consensus_accuracy", "test_accuracy"):
            diff = [next(c[key] for c in by[("relabelling", s)]["checkpoints"] if c["labels"] == mark)
                    - next(c[key] for c in by[("one label per item", s)]["checkpoints"] if c["labels"] == mark) for s in seeds]
            mean, low, high = bootstrap_mean(diff)
            cells.append(f"{mean:+.3f} ({low:+.3f} to {high:+.3f})")
        lines.append(f"| {mark} | " + " | ".join(cells) + " |")
    asked = [by[("relabelling", s)]["second_opinions_asked"] for s in seeds]
    lines += ["", f"Second opinions asked with relabelling, per seed: {', '.join(map(str, asked))}.", "",
              "Estimated reliability at the end (agreement with the other annotators' vote, leave-one-out; items; mean over seeds):", "",
              "| setting | ann | bea | cal |", "|---|---|---|---|"]
    for setting in SETTINGS:
        cells = []
        for name in ("ann", "bea", "cal"):
            entries = [by[(setting, s)]["reliability"].get(name) for s in seeds]
            entries = [e for e in entries if e and e["agreement"] is not None]
            cells.append(f"{np.mean([e['agreement'] for e in entries]):.2f} ({np.mean([e['items'] for e in entries]):.0f} items)"
                         if entries else "- (no shared items)")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default=str(REPO / "results" / "noisy-annotators"))
    parser.add_argument("--report-only", action="store_true", help="rewrite README.md from rows.jsonl without simulating")
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    digits = load_digits()
    x, y = (digits.data / 16).astype(np.float32), digits.target
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    done = {(r["setting"], r["seed"]) for r in map(json.loads, rows_file.read_text().splitlines())} if rows_file.exists() else set()
    for seed in ([] if args.report_only else (int(s) for s in args.seeds.split(","))):
        for setting in SETTINGS:
            if (setting, seed) in done:
                continue
            row = simulate(setting, seed, x, y)
            with rows_file.open("a") as f:  # resumable: one row per (setting, seed)
                f.write(json.dumps(row) + "\n")
            last = row["checkpoints"][-1]
            print(f"{setting}, seed {seed}: consensus {last['consensus_accuracy']:.3f}, test {last['test_accuracy']:.3f}, "
                  f"{row['seconds']:.0f} s", flush=True)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    write_readme(out, rows, "python scripts/noisy_annotators.py --seeds " + args.seeds)
    print((out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
