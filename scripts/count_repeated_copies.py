"""How many acquisitions of a Repeated MNIST run were copies of a point already acquired.

Usage: python scripts/count_repeated_copies.py [RUNS_DIR] (default results/repeated-mnist/runs)

Item i's copies are i + j * n (n = one copy's size, from the run's config and data set size:
60,000 training images per MNIST copy). Writes RUNS_DIR/../copies.txt and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchal.report import find_runs

COPY_SIZE = {"repeated-mnist": 60_000}


def main() -> None:
    runs_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "results/repeated-mnist/runs")
    lines = [f"# command: python scripts/count_repeated_copies.py {runs_dir}",
             "run | acquired | acquisitions repeating an item already acquired (any round) | of which within one batch"]
    for run in sorted(find_runs([runs_dir]), key=lambda r: str(r.path)):
        n = COPY_SIZE[run.config["dataset"]]
        batches = [[i % n for i in row["acquired"]] for row in run.rows]
        every = [k for keys in batches for k in keys]
        same_batch = sum(len(keys) - len(set(keys)) for keys in batches)
        lines.append(f"{run.path.name} | {len(every)} | {len(every) - len(set(every))} | {same_batch}")
    text = "\n".join(lines) + "\n"
    (runs_dir.parent / "copies.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
