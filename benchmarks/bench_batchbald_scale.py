"""BatchBALD alone at pool scale: seconds, candidate evaluations, grouped-bound evaluations and
peak memory, for several N, with the growth exponent; optionally from a memory-mapped file.

Inputs as in the issue: synthetic log_softmax(2 randn(N,1,C) + randn(N,K,C)), C = 10, b = 10,
num_samples = 40,000, float64 with float32 screening, no prefilter. With --mmap the
log-probabilities are written to a .npy file first and read through a read-only memory map
(pages come and go as the selection touches them): the process's own (anonymous) memory is then
the bounds and working blocks, not N x K x C.

Usage: python benchmarks/bench_batchbald_scale.py [--sizes 10000,60000] [--K 100] [--mmap] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import batchal


def memory_mib() -> dict:
    """Peak resident memory (VmHWM) and current anonymous memory (RssAnon) of this process."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class AnonPeak:
    """Samples RssAnon every 50 ms: the peak of the process's own memory, page cache excluded."""

    def __init__(self):
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, memory_mib().get("RssAnon", 0.0))
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def inputs(N: int, K: int, C: int, mmap_dir=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if mmap_dir is None:
        return torch.log_softmax(2 * torch.randn(N, 1, C, generator=g) + torch.randn(N, K, C, generator=g), dim=2)
    path = Path(mmap_dir) / f"log_probs_{N}_{K}_{C}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N, K, C))
    step = max(1, (1 << 24) // (K * C))
    for start in range(0, N, step):  # generated chunk by chunk: never N x K x C in memory
        n = min(step, N - start)
        out[start : start + n] = torch.log_softmax(2 * torch.randn(n, 1, C, generator=g) + torch.randn(n, K, C, generator=g), dim=2).numpy()
    out.flush()
    del out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: the array is not writable (we never write)
        return torch.from_numpy(np.load(path, mmap_mode="r"))


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,60000")
    parser.add_argument("--K", type=int, default=100)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--b", type=int, default=10)
    parser.add_argument("--mmap", action="store_true")
    parser.add_argument("--inputs", choices=["synthetic", "mnist"], default="synthetic",
                        help="mnist: MC-dropout predictions of the paper's CNN trained on 20 labels, for N MNIST training images "
                        "(as bench_batchbald.py; needs $BATCHAL_DATA or ../shared/data)")
    parser.add_argument("--bound-groups", dest="bound_groups", type=int, default=256, help="grouped bounds' G (0: stale bounds only)")
    parser.add_argument("--name", default=None, help="output file stem (default batchbald_scale[_mmap])")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lines = [
        f"# BatchBALD at scale: K={args.K}, C={args.C}, b={args.b}, num_samples=40000, float64 with float32 screening, no prefilter, "
        f"grouped bounds {'G=' + str(args.bound_groups) if args.bound_groups else 'off'}"
        + (", log-probabilities read through a memory map" if args.mmap else ""),
        f"# inputs: log_softmax(2 randn(N,1,C) + randn(N,K,C)), seed 0",
        f"# command: python benchmarks/bench_batchbald_scale.py {' '.join(sys.argv[1:])}".rstrip(),
        f"# machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    ]
    results = []
    tmp = tempfile.mkdtemp() if args.mmap else None
    if args.inputs == "mnist":
        lines[1] = "# inputs: MC-dropout log-probabilities of the MNIST CNN trained on 20 labels, N MNIST training images (bench_batchbald.mnist_log_probs)"
    for N in sizes:
        if args.inputs == "mnist":
            sys.path.insert(0, str(Path(__file__).parent))
            from bench_batchbald import mnist_log_probs

            lp = mnist_log_probs(N, args.K).float()
        else:
            lp = inputs(N, args.K, args.C, tmp)
        with warnings.catch_warnings(), AnonPeak() as anon:
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            sel = batchal.select("batchbald", args.b, log_probs_N_K_C=lp, seed=0, bound_groups=args.bound_groups or None)
            seconds = time.perf_counter() - start
        results.append((N, seconds))
        mem = memory_mib()
        lines.append(f"N={N:>9,}  {seconds:8.1f} s  evaluations {sel.info['evaluations']:>8}  grouped bounds {sel.info['bound_evaluations']:>9}  "
                     f"exact picks {sel.info['exact_picks']}  batch information {float(sel.scores[-1]):.3f} nats  "
                     f"peak RSS {mem['VmHWM']:.0f} MiB, peak anonymous {anon.peak:.0f} MiB (inputs {N * args.K * args.C * 4 / 2**20:.0f} MiB)")
        del lp
    if len(results) > 1:
        (n0, t0), (n1, t1) = results[0], results[-1]
        lines.append(f"growth exponent from N={n0:,} to N={n1:,}: {math.log(t1 / t0) / math.log(n1 / n0):.2f} (time ~ N^exponent)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.name or ('batchbald_scale' + ('_mmap' if args.mmap else ''))}.txt").write_text(text)


if __name__ == "__main__":
    main()
