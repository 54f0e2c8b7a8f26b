"""Coreset's k-centre greedy: batchal's loop against the same loop with the product written
(2 X) c, the form batchal used until this benchmark, which scales the whole working set on every
pick before the matrix-vector product.

Both run on the same float64 embeddings with the same labelled centres; the picks must be equal
(multiplying by 2 is exact in floating point). Settings are the BADGE study's shapes: letter
(16,000 x 1,024, the MLP's tabular embedding) and MNIST (60,000 x 256), 100 labelled centres.

Usage: python benchmarks/bench_coreset.py [--b 300] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from batchal.acquisition.coreset import squared_distances_to, k_center_greedy


def k_center_scaled_copy(x_N_D: torch.Tensor, batch_size: int, labelled_L_D: torch.Tensor) -> list[int]:
    """The earlier loop: (2 * X) @ c allocates and fills an N x D temporary at every pick."""
    x_N_D = x_N_D.double()
    sq = (x_N_D**2).sum(1)
    d = squared_distances_to(x_N_D, sq, labelled_L_D.double())
    picks = []
    for _ in range(batch_size):
        j = int(d.argmax())
        picks.append(j)
        torch.minimum(d, (sq + sq[j] - 2 * x_N_D @ x_N_D[j]).clamp_(min=0), out=d)
        d[j] = -1.0
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b", type=int, default=300)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [f"# Coreset k-centre greedy, b = {args.b}: batchal against the (2 X) c form it replaced",
             f"# command: python benchmarks/bench_coreset.py --b {args.b}",
             f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, "
             f"load average {os.getloadavg()[0]:.2f} at start", ""]
    for name, n, d in (("letter", 16_000, 1_024), ("mnist", 60_000, 256)):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, d, generator=g)
        labelled = torch.randn(100, d, generator=g)
        start = time.perf_counter()
        ours, _ = k_center_greedy(x, args.b, labelled)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        old = k_center_scaled_copy(x, args.b, labelled)
        t_old = time.perf_counter() - start
        lines.append(f"{name} N={n:,} D={d:,}: batchal {t_ours:.2f} s, (2 X) c form {t_old:.2f} s, "
                     f"ratio {t_old / t_ours:.1f}x; picks equal: {ours == old}")
        print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coreset.txt").write_text("\n".join(lines) + "\n")
    print(out / "coreset.txt")


if __name__ == "__main__":
    sys.exit(main())
