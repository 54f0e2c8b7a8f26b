"""BADGE selection: the factorised k-means++ against the best straightforward alternative.

For each setting (N, C, D) and b = 100, three implementations of the same k-means++ seeding,
each timed in its own process (so each peak memory is its own):

  factorised     batchal: the N x (C*D) gradient embeddings are never built; a step costs
                 O(N (C + D)) and memory is N (C + D).
  materialised   the plain alternative: build the embeddings once (float32, N x C*D), keep
                 their squared norms, and update distances to the newest centre with one
                 matrix-vector product per step: |g_n|^2 + |g_c|^2 - 2 G g_c.
  naive          the textbook loop: ((G - g_c)^2).sum(1) at every step, an N x C*D temporary
                 each time (the baseline this file used before; --naive to include it).

All three draw from the same distribution; the factorised and materialised picks are compared
with the same generator (identical up to float32 rounding of the materialised distances).

Usage: python benchmarks/bench_badge.py [--settings 60000x10x128,20000x100x768] [--naive] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import batchal


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inputs(N: int, C: int, D: int):
    g = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(3 * torch.randn(N, 1, C, generator=g), dim=2)
    h = torch.relu(torch.randn(N, D, generator=g))
    return log_probs, h


def embeddings(log_probs_N_1_C, h_N_D):
    """The materialised gradient embeddings (float32, N x C*D), built in slices."""
    p = log_probs_N_1_C[:, 0].exp()
    a = p.clone()
    a[torch.arange(len(a)), p.argmax(1)] -= 1
    N, C, D = len(a), a.shape[1], h_N_D.shape[1]
    G = torch.empty(N, C * D)
    for s in range(0, N, 4096):
        G[s : s + 4096] = (a[s : s + 4096, :, None] * h_N_D[s : s + 4096, None, :]).flatten(1)
    return G


def materialised_kmeans_pp(G, b, generator, naive=False):
    norms = torch.einsum("nd,nd->n", G, G).double()  # no N x C*D temporary
    picks = [int(norms.argmax())]
    dist = torch.full_like(norms, float("inf"))
    for _ in range(1, b):
        if naive:
            to_newest = ((G - G[picks[-1]]) ** 2).sum(1).double()
        else:
            to_newest = (norms + norms[picks[-1]] - 2 * (G @ G[picks[-1]]).double()).clamp_(min=0)
        dist = torch.minimum(dist, to_newest)
        w = dist.clone()
        w[picks] = 0
        picks.append(int(torch.multinomial(w, 1, generator=generator)))
    return picks


def measure(method: str, N: int, C: int, D: int, b: int, repeats: int) -> dict:
    """One implementation on one setting, in this process: best seconds, peak memory above the inputs."""
    log_probs, h = inputs(N, C, D)
    batchal.select("badge", 2, log_probs_N_K_C=log_probs[:100], embeddings_N_D=h[:100], seed=0)  # warm-up
    before = peak_rss_mib()
    times, picks = [], None
    for r in range(repeats):
        start = time.perf_counter()
        if method == "factorised":
            picks = batchal.select("badge", b, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=0).indices.tolist()
        else:
            G = embeddings(log_probs, h)
            picks = materialised_kmeans_pp(G, b, torch.Generator().manual_seed(0), naive=method == "naive")
            del G
        times.append(time.perf_counter() - start)
    return {"method": method, "seconds": min(times), "peak_mib": max(peak_rss_mib() - before, 0.0), "picks": picks,
            "inputs_mib": (log_probs.numel() + h.numel()) * 4 / 2**20}


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="60000x10x128,20000x100x768", help="comma-separated NxCxD")
    parser.add_argument("--b", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also time the N x C*D-temporary-per-step loop")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # method,N,C,D: run one measurement (child process)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    if args.one:
        method, N, C, D = args.one.split(",")
        print(json.dumps(measure(method, int(N), int(C), int(D), args.b, args.repeats)))
        return
    lines = [
        f"# BADGE k-means++ seeding, b={args.b}: factorised (batchal) against materialised embeddings with one mat-vec per step"
        + (" and the naive N x C*D temporary per step" if args.naive else ""),
        f"# each figure: best of {args.repeats} runs in a fresh process; memory: peak RSS above the inputs (materialised includes building G)",
        f"# command: python benchmarks/bench_badge.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
    ]
    print("\n".join(lines), flush=True)
    records = []
    for setting in args.settings.split(","):
        N, C, D = (int(x) for x in setting.split("x"))
        row = {}
        for method in ["factorised", "materialised"] + (["naive"] if args.naive else []):
            out = subprocess.run([sys.executable, __file__, "--one", f"{method},{N},{C},{D}", "--b", str(args.b),
                                  "--repeats", str(args.repeats)], capture_output=True, text=True)
            if out.returncode != 0:
                row[method] = {"method": method, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
            else:
                row[method] = json.loads(out.stdout.strip().splitlines()[-1])
        f = row["factorised"]
        lines.append(f"N={N:,} C={C} D={D} (embeddings {N * C * D * 4 / 2**30:.2f} GiB float32, inputs {f['inputs_mib']:.0f} MiB):")
        for method, r in row.items():
            if "error" in r:
                lines.append(f"  {method:<13} failed: {r['error']}")
                continue
            ratio = "" if method == "factorised" else (
                f"  time {r['seconds'] / f['seconds']:.1f}x and memory {r['peak_mib'] / max(f['peak_mib'], 1):.0f}x the factorised run's")
            lines.append(f"  {method:<13} {r['seconds']:8.3f} s  peak {r['peak_mib']:8.0f} MiB{ratio}")
        if "picks" in row.get("materialised", {}):
            same = sum(a == b for a, b in zip(f["picks"], row["materialised"]["picks"]))
            lines.append(f"  picks identical to the materialised run's (same generator): {same}/{args.b}")
        print("\n".join(lines[-len(row) - 2 :]), flush=True)
        records.append({"N": N, "C": C, "D": D, "runs": row})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "badge.txt").write_text("\n".join(lines) + "\n")
    (out / "badge.json").write_text(json.dumps({"b": args.b, "repeats": args.repeats, "settings": records}, indent=1))


if __name__ == "__main__":
    main()
