"""BatchBALD: against the reference implementation at N = 2,000, then alone at pool scale.

K = 100, C = 10, b = 10, num_samples = 40,000, float64 (batchal screens in float32 and confirms
in float64), no prefilter, on the CPU, in this one process.

Inputs (--inputs):
  synthetic  log_softmax(2 randn(N,1,C) + randn(N,K,C)), seed 0 (the issue's inputs).
  mnist      MC-dropout predictions of the paper's MNIST CNN trained on 20 labels (2 per class)
             for N MNIST training images (needs ../shared/data or $BATCHAL_DATA). The model is
             trained once and the largest pool predicted once; a smaller N is its first N rows.

At the first size (2,000 by default) batchal's lazy and plain greedy run against
batchbald_redux 2.0.5 on the same inputs: seconds, the ratio, and picks in common. At every
size batchal's lazy greedy alone: seconds, peak anonymous memory during the selection,
candidate evaluations, grouped bounds, and the GFLOP/s its candidate products achieve (GEMM
FLOPs over the whole selection's seconds) against a float32 GEMM peak measured in the same run;
then the growth exponent of time in N. Sizes above 100,000 read their log-probabilities
through a memory map (written chunk by chunk, never whole in memory).

Usage:  python benchmarks/bench_batchbald.py [--inputs synthetic|mnist] [--sizes 2000,10000,60000,1000000] [--out results/benchmarks]
Needs:  benchmarks/install.sh   (the reference batchbald_redux 2.0.5, without its torchvision, for the side-by-side)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import batchal

sys.path.insert(0, str(Path(__file__).parent))
from bench_batchbald_scale import AnonPeak, inputs as synthetic_inputs, memory_mib  # noqa: E402


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


def gemm_peak_gflops(seconds: float = 2.0) -> float:
    """float32 GEMM throughput of this machine: 2048 x 2048 products for about ``seconds``."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    out = torch.empty(2048, 2048)
    torch.matmul(a, b, out=out)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b, out=out)
        count += 1
    return 2 * 2048**3 * count / (time.perf_counter() - start) / 1e9


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", choices=["synthetic", "mnist"], default="synthetic")
    parser.add_argument("--sizes", default="2000,10000,60000,1000000:20",
                        help="comma-separated N or N:K (K for that size only); the first is compared with the reference "
                        "(mnist: at most 58,976)")
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--b", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=40_000)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    sizes = [(int(s.partition(":")[0]), int(s.partition(":")[2] or args.K)) for s in args.sizes.split(",")]
    K, C = args.K, args.C
    peak = gemm_peak_gflops()
    lines = [
        f"# BatchBALD benchmark: inputs={args.inputs}, K={K}, C={C}, b={args.b}, num_samples={args.num_samples}, float64, no prefilter",
        f"# command: python benchmarks/bench_batchbald.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; float32 GEMM peak measured now: {peak:.0f} GFLOP/s (2048^3)",
    ]
    print("\n".join(lines), flush=True)
    record = {"inputs": args.inputs, "K": K, "C": C, "b": args.b, "num_samples": args.num_samples, "gemm_peak_gflops": peak, "sizes": {}}
    mnist = mnist_log_probs(max(N for N, _ in sizes), K) if args.inputs == "mnist" else None
    tmp = tempfile.mkdtemp()

    def select(lp, lazy=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ceiling warning: reported in the README instead
            return batchal.select("batchbald", args.b, log_probs_N_K_C=lp, seed=0, num_samples=args.num_samples, lazy=lazy)

    timings = []
    for n_index, (N, K) in enumerate(sizes):
        if mnist is not None:
            lp = mnist[:N, :K]
        else:
            lp = synthetic_inputs(N, K, C, tmp if N > 100_000 else None)
            if N <= 100_000:
                lp = lp.double()
        entry = record["sizes"][f"{N}:{K}"] = {}
        before = memory_mib().get("RssAnon", 0.0)
        with AnonPeak() as anon:
            start = time.perf_counter()
            sel = select(lp)
            seconds = time.perf_counter() - start
        timings.append((N, seconds))
        gflops = sel.info["gemm_flops"] / seconds / 1e9
        entry["batchal lazy greedy"] = {"seconds": seconds, "indices": sel.indices.tolist(), "scores": sel.scores.tolist(),
                                        "peak_anonymous_mib": anon.peak - before, "gflops": gflops, **sel.info}
        lines.append(
            f"N={N:>9,} K={K:<3}  batchal lazy greedy {seconds:8.2f} s  peak memory +{max(anon.peak - before, 0):5.0f} MiB  "
            f"evaluations {sel.info['evaluations']:>8,}  grouped bounds {sel.info['bound_evaluations']:>9,}  "
            f"{gflops:5.1f} GFLOP/s ({100 * gflops / peak:.0f}% of peak)  batch information {float(sel.scores[-1]):.3f} nats")
        print(lines[-1], flush=True)
        if n_index == 0:
            start = time.perf_counter()
            plain = select(lp, lazy=False)
            plain_seconds = time.perf_counter() - start
            entry["batchal plain greedy"] = {"seconds": plain_seconds, "indices": plain.indices.tolist(), "scores": plain.scores.tolist(),
                                             "evaluations": plain.info["evaluations"]}
            lines.append(f"N={N:>9,}  batchal plain greedy {plain_seconds:7.2f} s  picks identical to lazy greedy's: "
                         f"{sum(a == b for a, b in zip(plain.indices.tolist(), sel.indices.tolist()))}/{args.b}")
            print(lines[-1], flush=True)
            if not args.skip_reference:
                from batchbald_redux.batchbald import get_batchbald_batch

                torch.manual_seed(0)
                start = time.perf_counter()
                batch = get_batchbald_batch(lp.double(), args.b, args.num_samples, dtype=torch.double)
                ref_seconds = time.perf_counter() - start
                ref = [int(i) for i in batch.indices]
                ours = sel.indices.tolist()
                entry["batchbald_redux 2.0.5"] = {"seconds": ref_seconds, "indices": ref, "scores": [float(s) for s in batch.scores]}
                lines.append(
                    f"N={N:>9,}  batchbald_redux 2.0.5 {ref_seconds:7.2f} s  batchal lazy greedy is {ref_seconds / seconds:.1f}x faster "
                    f"(plain greedy {ref_seconds / plain_seconds:.1f}x); picks identical in order {sum(a == b for a, b in zip(ours, ref))}/{args.b}, "
                    f"in the same set {len(set(ours) & set(ref))}/{args.b}; batch information: batchal {float(sel.scores[-1]):.3f}, "
                    f"reference {float(batch.scores[-1]):.3f} nats (each its own estimate)")
                print(lines[-1], flush=True)
        del lp
    same_K = [(N, t) for (N, k), (_, t) in zip(sizes, timings) if k == args.K]
    if len(same_K) > 1:
        (n0, t0), (n1, t1) = same_K[0], same_K[-1]
        lines.append(f"growth exponent at K={args.K} from N={n0:,} to N={n1:,}: {math.log(t1 / t0) / math.log(n1 / n0):.2f} (time ~ N^exponent)")
        print(lines[-1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"batchbald_{args.inputs}"
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
