"""Is ``memory_bytes`` a cap? Peak memory above the loaded input, as a user meets it (issue 32).

Each case runs in its own process: it builds its input, runs a small warm-up selection (code
paths and libraries loaded on first use are not the selection's memory), resets the kernel's
peak-RSS counter (/proc/self/clear_refs) and prints how far the selection's peak rose above the
memory held before it (VmHWM - VmRSS). A cap below what the strategy needs is refused with the
number needed: that row prints the refusal.

Cases: batchbald on N = 100,000, K = 50, C = 10 (float32), b = 10, default num_samples (40,000),
memory_bytes 32, 64, 80, 128 and 256 MiB; segmentation_batchbald on N = 200, K = 20, C = 4 with 8 x 8 and
32 x 32 masks, num_samples 4,000, pixels 64 and None (every pixel), memory_bytes 16, 128 and 256 MiB.

Each case runs twice: with glibc's default allocator, which keeps freed heap memory for reuse
(so the peak RSS can exceed what is alive at any moment), and with MALLOC_MMAP_THRESHOLD_=65536
and MALLOC_TRIM_THRESHOLD_=0, which return large freed blocks to the system at once: the second
shows what the selection itself holds, the first what a user sees by default.

Usage: python benchmarks/bench_memory_caps.py [--out results/benchmarks/memory_caps.txt] [--only batchbald|segmentation]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

PRELUDE = r"""
import gc, sys, time, torch, batchal
torch.set_num_threads(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def peak_above(fn, warm_up):
    warm_up()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    start = time.perf_counter()
    try:
        fn()
    except ValueError as error:
        print(f"REFUSED\t{status('VmHWM') - before:.0f}\t{time.perf_counter() - start:.1f}\t{error}")
        return
    print(f"PEAK\t{status('VmHWM') - before:.0f}\t{time.perf_counter() - start:.1f}\t")
"""

BATCHBALD = r"""
g = torch.Generator().manual_seed(0)
N, K, C = 100_000, 50, 10
lp = torch.log_softmax(torch.randn(N, 1, C, generator=g) * 3 + torch.randn(N, K, C, generator=g), 2).float()
cap = int(sys.argv[1]) * 2**20
peak_above(lambda: batchal.select("batchbald", 10, log_probs_N_K_C=lp, seed=0, memory_bytes=cap),
           lambda: batchal.select("batchbald", 10, log_probs_N_K_C=lp[:300], seed=0, memory_bytes=cap, num_samples=2_000))
"""

SEGMENTATION = r"""
g = torch.Generator().manual_seed(0)
N, K, C, side = 200, 20, 4, int(sys.argv[2])
lp = torch.log_softmax(torch.randn(N, 1, C, side, side, generator=g) * 2 + torch.randn(N, K, C, side, side, generator=g), 2)
cap = int(sys.argv[1]) * 2**20
pixels = None if sys.argv[3] == "None" else int(sys.argv[3])
peak_above(lambda: batchal.select("segmentation_batchbald", 10, log_probs_N_K_C_H_W=lp, seed=0, memory_bytes=cap, pixels=pixels, num_samples=4_000),
           lambda: batchal.select("segmentation_batchbald", 2, log_probs_N_K_C_H_W=lp[:4], seed=0, memory_bytes=cap, pixels=4, num_samples=100))
"""

ALLOCATORS = [("default", {}), ("mmap", {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})]

CASES = [("batchbald", "N=100,000 K=50 C=10 b=10", BATCHBALD, [cap]) for cap in ("32", "64", "80", "128", "256")] + [
    ("segmentation_batchbald", f"N=200 K=20 C=4 {side}x{side} pixels={pixels} b=10", SEGMENTATION, [cap, side, pixels])
    for side in ("8", "32") for pixels in ("64", "None") for cap in ("16", "128", "256")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/benchmarks/memory_caps.txt")
    parser.add_argument("--only", choices=["batchbald", "segmentation"])
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux's /proc/self/clear_refs to reset the peak-RSS counter")
    lines = ["# command: python benchmarks/bench_memory_caps.py" + (f" --only {args.only}" if args.only else ""),
             f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, one thread per case, "
             f"load average {os.getloadavg()[0]:.2f} at start",
             "# peak above input: VmHWM - VmRSS after the input is built and a warm-up ran (MiB); ratio = peak / cap", "",
             f"{'strategy':24s} {'case':42s} {'allocator':9s} {'cap MiB':>8s} {'peak MiB':>9s} {'ratio':>6s} {'seconds':>8s}  outcome"]
    print("\n".join(lines), flush=True)
    worst = {}
    for (strategy, case, code, argv_case), (allocator, allocator_env) in ((c, a) for c in CASES for a in ALLOCATORS):
        if args.only and not strategy.startswith(args.only):
            continue
        out = subprocess.run([sys.executable, "-c", PRELUDE + code, *argv_case], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1", **allocator_env})
        result = [line for line in out.stdout.splitlines() if line.startswith(("PEAK", "REFUSED"))]
        if not result:
            raise SystemExit(f"{strategy} {case}: no result\n{out.stderr[-2000:]}")
        kind, peak, seconds, message = result[-1].split("\t", 3)
        cap = int(argv_case[0])
        ratio = float(peak) / cap
        if kind == "PEAK":
            worst[allocator] = max(worst.get(allocator, 0.0), ratio)
        outcome = "ran within 2x its cap" if kind == "PEAK" and ratio <= 2 else "OVER 2x ITS CAP" if kind == "PEAK" else f"refused: {message}"
        line = f"{strategy:24s} {case:42s} {allocator:9s} {cap:8d} {float(peak):9.0f} {ratio:6.2f} {float(seconds):8.1f}  {outcome}"
        lines.append(line)
        print(line, flush=True)
    lines += [""] + [f"largest ratio of a run that ran, {allocator} allocator: {ratio:.2f}" for allocator, ratio in worst.items()]
    print("\n".join(lines[-len(worst):]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0 if max(worst.values(), default=0) <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
