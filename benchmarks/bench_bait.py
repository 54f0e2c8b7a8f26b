"""BAIT selection time on synthetic inputs: seconds per batch for a few (N, C, D, b).

Its forward step costs O(N C^2 D^2 / 2) and its matrices (C D)^2 each, so C D decides.
Usage: python benchmarks/bench_bait.py [--settings 300x10x256x5,2000x10x128x10,5000x10x128x10] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

import batchal


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="300x10x256x5,2000x10x128x10,5000x10x128x10", help="comma-separated NxCxDxb")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    lines = [
        "# BAIT: forward-backward greedy (oversample 2), synthetic inputs, no labelled set",
        f"# command: python benchmarks/bench_bait.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
    ]
    print("\n".join(lines), flush=True)
    for setting in args.settings.split(","):
        N, C, D, b = (int(x) for x in setting.split("x"))
        g = torch.Generator().manual_seed(0)
        log_probs = torch.log_softmax(2 * torch.randn(N, 1, C, generator=g), dim=2)
        h = torch.relu(torch.randn(N, D, generator=g))
        start = time.perf_counter()
        batchal.select("bait", b, log_probs_N_K_C=log_probs, embeddings_N_D=h)
        seconds = time.perf_counter() - start
        lines.append(f"N={N:>6,} C={C:>3} D={D:>4} (C D = {C * D:>5}) b={b:>3}: {seconds:7.2f} s")
        print(lines[-1], flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bait.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
