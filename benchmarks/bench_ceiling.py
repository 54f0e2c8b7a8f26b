"""BatchBALD when the batch's information reaches its ceiling log K, with and without the tie tolerance.

The issue's case: N = 3,000, K = 8, C = 10, synthetic log_softmax(2 randn(N,1,C) + 2 randn(N,K,C)),
num_samples = 40,000, b = 10 and 20. With ``tie_tolerance=0`` lazy greedy re-evaluates the whole
pool at every pick once all gains are near zero; with the default it stops once no candidate can
beat the best fresh gain by more than the tolerance.

Usage: python benchmarks/bench_ceiling.py [--N 3000] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

import batchal
from batchal.acquisition.batchbald import TIE_TOLERANCE


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=3000)
    parser.add_argument("--K", type=int, default=8)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--sizes", default="10,20")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(2 * torch.randn(args.N, 1, args.C, generator=g) + 2 * torch.randn(args.N, args.K, args.C, generator=g), dim=2)
    lines = [
        f"# BatchBALD at the log K ceiling: N={args.N}, K={args.K}, C={args.C}, num_samples=40000, float64 (log K = {math.log(args.K):.4f})",
        f"# command: python benchmarks/bench_ceiling.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    ]
    for b in [int(x) for x in args.sizes.split(",")]:
        results = {}
        for tol in (TIE_TOLERANCE, 0.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                sel = batchal.select("batchbald", b, log_probs_N_K_C=lp, seed=0, tie_tolerance=tol)
                seconds = time.perf_counter() - start
            results[tol] = (seconds, sel)
            lines.append(f"b={b:<3} tie_tolerance={tol:<5} {seconds:8.2f} s  {sel.info['evaluations']:7d} candidate evaluations  "
                         f"batch information {float(sel.scores[-1]):.4f} nats  picks {sel.indices.tolist()}")
        (t_on, on), (t_off, off) = results[TIE_TOLERANCE], results[0.0]
        pairs = list(zip(on.indices.tolist(), off.indices.tolist()))
        same = next((i for i, (x, y) in enumerate(pairs) if x != y), len(pairs))
        lines.append(f"b={b}: tie tolerance {t_off / t_on:.1f}x faster, {off.info['evaluations'] / on.info['evaluations']:.1f}x fewer evaluations; "
                     f"first {same} of {b} picks identical in order; final information {float(on.scores[-1]):.4f} vs {float(off.scores[-1]):.4f} nats")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.txt").write_text(text)


if __name__ == "__main__":
    main()
