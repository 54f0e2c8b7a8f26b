"""Pool scoring throughput in-process and on a local Ray cluster with 1 and 2 workers.

The paper's MNIST CNN (random weights; the speed does not depend on them), K = 20 MC-dropout
samples, a .npy pool of random 28 x 28 images, shards of 1,024. Measures items/s in-process
(the same shard loop, no Ray), on Ray with 1 and 2 scoring actors (1 CPU and 1 torch thread
each), each worker's peak memory, Ray's overhead against the in-process pass at the same thread
count, and projects (labelled as a projection) the time for 10 million items on N nodes from
the measured per-worker throughput.

Usage: python benchmarks/bench_distributed.py [--items 16384] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from batchal.distributed.scoring import ScoreJob, score_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16384)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp())
    np.save(tmp / "pool.npy", np.random.default_rng(0).standard_normal((args.items, 1, 28, 28)).astype(np.float32))

    def job():
        return ScoreJob(pool=str(tmp / "pool.npy"), model="mnist_cnn", num_classes=10, mc_samples=args.k, seed=0, shard_size=1024)

    lines = [
        f"# Distributed pool scoring: mnist_cnn, K={args.k}, {args.items} random 28x28 images, shards of 1024",
        f"# command: python benchmarks/bench_distributed.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.machine()}, {torch.get_num_threads()} torch threads in the driver, torch {torch.__version__}, ray {ray.__version__}",
    ]
    rates = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        score_pool(job(), tmp / f"in-process-{threads}")
        rates[f"in-process, {threads} thread(s)"] = args.items / (time.perf_counter() - start)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from batchal.distributed.cluster import quiet_ray_data

    quiet_ray_data(ray)
    peaks = {}
    for workers in (1, 2):
        start = time.perf_counter()
        manifest = score_pool(job(), tmp / f"ray-{workers}", ray_address="auto", workers=workers, cpus_per_worker=1)
        rates[f"Ray, {workers} worker(s) x 1 CPU"] = args.items / (time.perf_counter() - start)
        peaks[workers] = manifest["worker_peak_rss_mib"]
    ray.shutdown()
    for name, rate in rates.items():
        lines.append(f"{name:<32} {rate:8.0f} items/s")
    per_worker = rates["Ray, 1 worker(s) x 1 CPU"]
    lines.append(f"Ray overhead against in-process at 1 thread: {rates['in-process, 1 thread(s)'] / per_worker:.2f}x the time "
                 f"(actor start, model load and Parquet writes included)")
    lines.append(f"2 workers against 1: {rates['Ray, 2 worker(s) x 1 CPU'] / per_worker:.2f}x the throughput on this 2-core machine")
    lines.append(f"peak memory per worker: {peaks[1]:.0f} MiB (1 worker), {peaks[2]:.0f} MiB (2 workers)")
    lines.append(f"PROJECTION (not measured): 10,000,000 items at {per_worker:.0f} items/s per 1-CPU worker, linear scaling assumed:")
    for nodes, cpus in ((1, 16), (4, 16), (16, 16)):
        hours = 10_000_000 / (per_worker * nodes * cpus) / 3600
        lines.append(f"  {nodes:>2} node(s) x {cpus} CPUs: {hours:6.2f} h")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "distributed.txt").write_text(text)


if __name__ == "__main__":
    main()
