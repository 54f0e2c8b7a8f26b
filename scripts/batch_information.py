"""How close BatchBALD's batches came to the mutual-information ceiling log K.

Usage: python scripts/batch_information.py [RUNS_DIR ...] (default: the runs of studies a, b and c and of the paper-protocol studies)

With K MC-dropout samples the estimated I(y_1..y_b; w) cannot exceed log K (the weights take
K values). Each round's `scores` in results.jsonl is BatchBALD's running batch information
after each pick, so they show when the ceiling is reached and what the later picks added:
once the batch information is near log K, the later picks are ranked mostly by estimator noise.
Writes results/batch_information.txt and prints it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from batchal.report import find_runs


def main() -> None:
    sources = sys.argv[1:] or ["results/mnist/runs", "results/repeated-mnist/runs", "results/mnist-sweep/runs",
                               "results/mnist-paper/runs", "results/repeated-mnist-paper/runs", "results/mnist-sweep-paper/runs"]
    sources = [s for s in sources if Path(s).exists()]
    lines = [f"# command: python scripts/batch_information.py {' '.join(sources)}",
             "# MI after k picks: median over rounds of the batch information (nats) after the k-th pick",
             "run | K | log K | rounds | MI after 1 / 5 / b picks | rounds ending above 95% of log K | median gain per pick after the 5th"]
    runs = [r for r in find_runs(sources) if r.config["strategy"] == "batchbald"]
    for run in sorted(runs, key=lambda r: str(r.path)):
        scores = [row["scores"] for row in run.rows if row.get("scores")]
        if not scores:
            continue
        k = run.config["mc_samples"]
        ceiling = math.log(k)
        after = [np.median([s[min(j, len(s)) - 1] for s in scores]) for j in (1, 5, len(scores[0]))]
        late = [g for s in scores for g in np.diff(s)[4:]]
        above = np.mean([s[-1] > 0.95 * ceiling for s in scores])
        lines.append(f"{run.path.parent.name}/{run.path.name} | {k} | {ceiling:.2f} | {len(scores)} | "
                     f"{after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} | {above:.0%} | "
                     + (f"{np.median(late):.3f}" if late else "-"))
    text = "\n".join(lines) + "\n"
    Path("results/batch_information.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
