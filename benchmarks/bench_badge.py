"""BADGE selection speed and peak memory at pool scale, against a materialising implementation.

N = 60,000, C = 10, D = 128, b = 100 by default, on the CPU. The factorised k-means++ never
builds the N x (C*D) gradient embeddings; the comparison builds them (float32) and runs the
same seeding on the materialised matrix.

Usage: python benchmarks/bench_badge.py [--N 60000] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

import batchal


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def materialised_kmeans_pp(log_probs_N_1_C, h_N_D, b, generator):
    p = log_probs_N_1_C[:, 0].exp()
    a = p.clone()
    a[torch.arange(len(a)), p.argmax(1)] -= 1
    G = (a[:, :, None] * h_N_D[:, None, :]).flatten(1)  # N x C*D
    norms = (G**2).sum(1)
    picks = [int(norms.argmax())]
    dist = torch.full_like(norms, float("inf"))
    for _ in range(1, b):
        dist = torch.minimum(dist, ((G - G[picks[-1]]) ** 2).sum(1))
        w = dist.clone()
        w[picks] = 0
        picks.append(int(torch.multinomial(w.double(), 1, generator=generator)))
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=60_000)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--D", type=int, default=128)
    parser.add_argument("--b", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(3 * torch.randn(args.N, 1, args.C, generator=g), dim=2)
    h = torch.relu(torch.randn(args.N, args.D, generator=g))
    batchal.select("badge", 2, log_probs_N_K_C=log_probs[:100], embeddings_N_D=h[:100], seed=0)  # warm-up
    before = peak_rss_mib()
    times = []
    for r in range(args.repeats):
        start = time.perf_counter()
        sel = batchal.select("badge", args.b, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=r)
        times.append(time.perf_counter() - start)
    extra = peak_rss_mib() - before
    start = time.perf_counter()
    materialised_kmeans_pp(log_probs, h, args.b, torch.Generator().manual_seed(0))
    mat_seconds = time.perf_counter() - start
    mat_extra = peak_rss_mib() - before
    lines = [
        f"# BADGE benchmark: N={args.N}, C={args.C}, D={args.D}, b={args.b}",
        f"# command: python benchmarks/bench_badge.py {' '.join(sys.argv[1:])}",
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
        f"batchal badge (factorised): best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s over {args.repeats} runs; "
        f"peak memory above the inputs {max(extra, 0):.0f} MiB (inputs: {(log_probs.numel() + h.numel()) * 4 / 2**20:.0f} MiB)",
        f"materialised k-means++ (float32 N x C*D = {args.N * args.C * args.D * 4 / 2**20:.0f} MiB): {mat_seconds:.3f} s, "
        f"peak memory above the inputs {max(mat_extra, 0):.0f} MiB; factorised is {mat_seconds / min(times):.1f}x faster",
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "badge.txt").write_text("\n".join(lines) + "\n")
    (out / "badge.json").write_text(json.dumps({"seconds": times, "peak_extra_mib": extra, "materialised_seconds": mat_seconds,
                                                "materialised_peak_extra_mib": mat_extra, **vars(args)}, indent=1))


if __name__ == "__main__":
    main()
