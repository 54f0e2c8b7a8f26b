"""Rare classes: does balancing the batches help, and whom? (issue 34, item 4)

Long-tailed versions of MNIST and letter (``--imbalance``: class c keeps RATIO^(c/(C-1)) of its
training items; the test sets stay balanced), with the ratio chosen so that the rarest class is
about 1% of the pool (MNIST 0.03, letter 0.1; the exact shares are printed in the README). The
initial labels are drawn at random, as a team with an imbalanced pool would get them. Random,
margin, BALD, BatchBALD and BADGE run as they are and wrapped by the class-balancing rule
(``batchal compare --balance``), 3 seeds each; each data set is one ``batchal compare`` study
(resumable), and this script then writes results/imbalance/README.md from their compare.json:
macro-F1 at the budget, the lowest class recall, and the labels until every class had been
labelled (minority discovery), with and without balancing.

CPU shortcuts, stated: K = 20 MC-dropout samples for acquisition and 5 for the test accuracy,
BatchBALD with 10,000 joint samples on MNIST, and on letter (b = 100) with 1,000 among the 300
points of highest BALD (as the speed benchmark); MNIST scores a random 2,000 of its pool each round
(``--pool-subsample``) and trains its CNN for epochs of 2,048 examples, at most 20; MNIST b = 40
to 180 labels, letter b = 100 to 520 labels.

Usage: python scripts/imbalance_study.py [--data-dir ../shared/data] [--workers 1] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = "margin,bald,batchbald,badge"
STUDIES = {
    "mnist": dict(ratio=0.03, args=["--budget", "180", "--batch-size", "40", "--pool-subsample", "2000", "--epoch-samples", "2048",
                                    "--max-epochs", "20"]),
    "letter": dict(ratio=0.1, args=["--budget", "520", "--batch-size", "100", "--prefilter", "300", "--num-samples", "1000"]),
}
COMMON = ["--strategy", STRATEGIES, "--balance", "--seeds", "0,1,2", "--initial-size", "20", "--initial-selection", "random",
          "--mc-samples", "20", "--test-mc-samples", "5", "--num-samples", "10000"]


def pool_shares(name: str, ratio: float, data_dir: str) -> tuple[int, float, float]:
    """(pool size, the rarest class's share of it, the commonest's)."""
    from batchal.data.dataset import long_tailed
    from batchal.data.datasets import load_dataset

    data = long_tailed(load_dataset(name, data_dir), ratio)
    counts = np.bincount(data.train_y.numpy(), minlength=data.num_classes)
    return int(counts.sum()), float(counts.min() / counts.sum()), float(counts.max() / counts.sum())


def cell(e: dict, key: str) -> str:
    v = e.get(key)
    return f"{v['estimate']:.3f} ({v['low']:.3f}-{v['high']:.3f})" if v else "-"


def report(data_dir: str) -> str:
    lines = ["# Rare classes: balancing the batches", "",
             "Written by `python scripts/imbalance_study.py` from the two `batchal compare` studies below "
             "(issue 34, item 4). Rarest class at about 1% of the pool, initial labels drawn at random, CPU shortcuts as the "
             "script's docstring states; test sets balanced (MNIST 10,000, letter 4,000). Macro-F1 (95% bootstrap interval over 3 seeds) and the lowest class recall at the "
             "budget, on the balanced test set; labels until every class had been labelled, per seed (`-`: not by the budget).", ""]
    for name, study in STUDIES.items():
        folder = REPO / "results" / f"imbalance-{name}"
        summary = json.loads((folder / "compare.json").read_text())
        size, rare, common = pool_shares(name, study["ratio"], data_dir)
        setting = summary["settings"][0]
        lines += [f"## {name}: --imbalance {study['ratio']} (pool {size:,} items; rarest class {rare:.1%}, commonest {common:.1%})", "",
                  f"`batchal compare {name} {' '.join(COMMON + study['args'])} --imbalance {study['ratio']}` "
                  f"(report: [imbalance-{name}/report.md](../imbalance-{name}/report.md)); budget {study['args'][1]} labels, "
                  f"b = {setting['batch_size']}.", "",
                  "| strategy | macro-F1, as it is | macro-F1, balanced | lowest recall, as it is / balanced | labels to every class, as it is | balanced |",
                  "|---|---|---|---|---|---|"]
        strategies = setting["strategies"]
        for base in ["random"] + STRATEGIES.split(","):
            plain, balanced = strategies[base], strategies.get(base + "-balanced", {})
            low = lambda e: f"{min(x for x in e['recall'] if x is not None):.3f}" if e.get("recall") else "-"  # noqa: E731
            every = lambda e: ",".join("-" if x is None else str(x) for x in e.get("labels_to_every_class", [])) or "-"  # noqa: E731
            lines.append(f"| {base} | {cell(plain, 'macro_f1')} | {cell(balanced, 'macro_f1')} | {low(plain)} / {low(balanced) if balanced else '-'} "
                         f"| {every(plain)} | {every(balanced) if balanced else '-'} |")
        lines += ["", "Verdict of the study (AUBC against random, Holm-corrected over its strategies):", ""]
        lines += [f"- {s}" for s in summary["verdict"]] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--workers", default="1")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        for name, study in STUDIES.items():
            command = ["batchal", "compare", name, "--data-dir", args.data_dir, *COMMON, *study["args"], "--imbalance", str(study["ratio"]),
                       "--workers", args.workers, "--out", str(REPO / "results" / f"imbalance-{name}")]
            print(" ".join(command), flush=True)
            subprocess.run(command, check=True)
    out = REPO / "results" / "imbalance" / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(args.data_dir))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
