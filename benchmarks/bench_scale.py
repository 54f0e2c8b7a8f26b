"""Selection on a pool of a million points, on the CPU: BALD, BADGE and BatchBALD.

Inputs are synthetic (a fixed generator): MC log-probabilities N x K x C (float32) and
features N x D. The time includes input validation. The model's forward passes are not
included (they depend on the model; see results/timing for the paper's CNN).

Usage: python benchmarks/bench_scale.py [--N 1000000] [--K 20] [--out results/benchmarks]
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


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", type=int, default=1_000_000)
    parser.add_argument("--K", type=int, default=20)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--D", type=int, default=128)
    parser.add_argument("--strategies", default="bald,badge,batchbald-prefilter,batchbald",
                        help="comma-separated subset of bald,badge,batchbald-prefilter,batchbald")
    parser.add_argument("--prefilter", type=int, default=5_000, help="BatchBALD prefilter size for batchbald-prefilter")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    N, K, C, D = args.N, args.K, args.C, args.D
    # Most points confidently predicted, a minority uncertain: like a trained model's pool.
    confidence = torch.empty(N, 1, 1).exponential_(1.0, generator=g) * 3 + 1
    spread = torch.empty(N, 1, 1).exponential_(1.0, generator=g) * 0.5
    log_probs = torch.log_softmax(confidence * torch.randn(N, 1, C, generator=g) + spread * torch.randn(N, K, C, generator=g), dim=2)
    features = torch.relu(torch.randn(N, D, generator=g))
    lines = [
        f"# Selection at scale: N={N}, K={K}, C={C}, D={D}, synthetic inputs ({log_probs.numel() * 4 / 2**30:.2f} GiB of log-probabilities)",
        f"# command: python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}",
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
    ]
    record = {"N": N, "K": K, "C": C, "D": D, "runs": {}}
    wanted = set(args.strategies.split(","))
    cases = [
        ("bald", "bald b=100", lambda: batchal.select("bald", 100, log_probs_N_K_C=log_probs)),
        ("badge", "badge b=100", lambda: batchal.select("badge", 100, log_probs_N_K_C=log_probs[:, :1], embeddings_N_D=features, seed=0)),
        ("batchbald-prefilter", f"batchbald b=10 (prefilter {args.prefilter:,}, num_samples 40,000)",
         lambda: batchal.select("batchbald", 10, log_probs_N_K_C=log_probs, seed=0, prefilter=args.prefilter)),
        ("batchbald", "batchbald b=10 (num_samples 40,000)", lambda: batchal.select("batchbald", 10, log_probs_N_K_C=log_probs, seed=0)),
    ]
    for key, name, run in cases:
        if key not in wanted:
            continue
        start = time.perf_counter()
        selection = run()
        seconds = time.perf_counter() - start
        record["runs"][name] = {"seconds": seconds, "info": selection.info, "indices": selection.indices.tolist()}
        extra = f", {selection.info['evaluations']} candidate evaluations" if "evaluations" in selection.info else ""
        lines.append(f"{name:<56} {seconds:8.1f} s{extra}")
        print(lines[-1], flush=True)
    lines.append(f"peak resident memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    print(lines[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.txt").write_text("\n".join(lines) + "\n")
    (out / "scale.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
