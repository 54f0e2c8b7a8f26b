"""BatchBALD speed and agreement against the reference implementation (batchbald_redux 2.0.5).

Both run in this one process on the same inputs, float64, on the CPU:
N = 2,000, K = 100, C = 10, b = 10, num_samples = 40,000 by default.

Inputs (--inputs):
  synthetic  MC predictions drawn from a fixed random generator: per point a mean logit vector
             and a per-mask perturbation of varied strength (BALD spread like a real model's).
  mnist      MC-dropout predictions of the paper's MNIST CNN trained on 20 labels (2 per class)
             for 2,000 MNIST training points (needs ../shared/data or $BATCHAL_DATA).

Usage:  python benchmarks/bench_batchbald.py [--inputs synthetic|mnist] [--out results/benchmarks]
Needs:  benchmarks/install.sh   (the reference batchbald_redux 2.0.5, without its torchvision, for the side-by-side)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import batchal


def synthetic_log_probs(N: int, K: int, C: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mean_N_1_C = torch.randn(N, 1, C, generator=g) * torch.empty(N, 1, 1).uniform_(0.5, 4.0, generator=g)
    spread_N_1_1 = torch.empty(N, 1, 1).uniform_(0.0, 2.5, generator=g)
    logits = mean_N_1_C + spread_N_1_1 * torch.randn(N, K, C, generator=g)
    return torch.log_softmax(logits.double(), dim=2)


def mnist_log_probs(N: int, K: int, seed: int = 0) -> torch.Tensor:
    from batchal.data import load_dataset
    from batchal.experiment import balanced_initial_indices
    from batchal.models import create_model
    from batchal.training import TrainConfig, train_model

    data = load_dataset("mnist")
    labelled = balanced_initial_indices(data.train_y, 20, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    rest = torch.randperm(len(data.train_y), generator=g)
    validation = rest[:1024]
    pool = rest[1024 : 1024 + N]
    torch.manual_seed(seed)
    model = create_model("mnist_cnn", data.input_shape, data.num_classes)
    train_model(model, data.train_x[labelled], data.train_y[labelled], data.train_x[validation], data.train_y[validation], TrainConfig())
    return batchal.predict_log_probs(model, data.train_x[pool], K, 500, seed=seed).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", choices=["synthetic", "mnist"], default="synthetic")
    parser.add_argument("--N", type=int, default=2000)
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--b", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=40_000)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()

    if args.inputs == "synthetic":
        log_probs = synthetic_log_probs(args.N, args.K, args.C)
    else:
        log_probs = mnist_log_probs(args.N, args.K)
    N, K, C = log_probs.shape
    lines = [
        f"# BatchBALD benchmark: inputs={args.inputs}, N={N}, K={K}, C={C}, b={args.b}, num_samples={args.num_samples}, float64",
        f"# command: python benchmarks/bench_batchbald.py {' '.join(sys.argv[1:])}",
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}",
    ]
    record = {"inputs": args.inputs, "N": N, "K": K, "C": C, "b": args.b, "num_samples": args.num_samples, "runs": {}}

    def timed(name, fn):
        start = time.perf_counter()
        indices, scores, extra = fn()
        seconds = time.perf_counter() - start
        record["runs"][name] = {"seconds": seconds, "indices": indices, "scores": scores, **extra}
        lines.append(f"{name:<28} {seconds:8.2f} s  picks {indices}")
        print(lines[-1], flush=True)

    for lazy in (True, False):
        name = "batchal lazy greedy" if lazy else "batchal plain greedy"

        def run(lazy=lazy):
            sel = batchal.select("batchbald", args.b, log_probs_N_K_C=log_probs, seed=0, num_samples=args.num_samples, lazy=lazy)
            return sel.indices.tolist(), sel.scores.tolist(), sel.info

        timed(name, run)

    if not args.skip_reference:
        from batchbald_redux.batchbald import get_batchbald_batch

        def reference():
            torch.manual_seed(0)
            batch = get_batchbald_batch(log_probs, args.b, args.num_samples, dtype=torch.double)
            return list(batch.indices), list(batch.scores), {}

        timed("batchbald_redux 2.0.5", reference)
        ref = record["runs"]["batchbald_redux 2.0.5"]
        for name in ("batchal lazy greedy", "batchal plain greedy"):
            ours = record["runs"][name]
            agree = sum(a == b for a, b in zip(ours["indices"], ref["indices"]))
            same_set = len(set(ours["indices"]) & set(ref["indices"]))
            ratio = ref["seconds"] / ours["seconds"]
            ours["speedup_vs_reference"] = ratio
            lines.append(f"{name}: {ratio:.1f}x faster than the reference; {agree}/{args.b} picks identical in order, {same_set}/{args.b} in the same set; exact picks {ours['exact_picks']}, candidate evaluations {ours['evaluations']}")
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"batchbald_{args.inputs}"
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
