"""Slowdown under contention: the README's main job and one BatchBALD selection, alone and with
2 and 4 CPU-bound background processes ("hogs") that this script starts, at torch's default
thread count (before the thread policy: one thread per core) and at batchal's policy (1 thread).

The fair share of a job that competes with H hogs on C cores is 1 + H / C times its time alone
(every runnable process gets an equal slice). The target: within 1.5x of the fair share.

    python benchmarks/bench_contention.py [--cap SECONDS] [--out results/benchmarks/contention.txt]

Each job runs in a fresh subprocess (so the thread count is set from scratch); a job that runs
past --cap seconds is stopped and reported as "> cap". Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SELECTION = r"""
import sys, time, torch, batchal
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
N, K, C = 5_000, 100, 10
logits = torch.randn(N, 1, C, generator=g) * 2 + torch.randn(N, K, C, generator=g) * 2
log_probs = torch.log_softmax(logits, dim=2)
start = time.perf_counter()
batch = batchal.select("batchbald", 10, log_probs_N_K_C=log_probs, seed=0)
print(time.perf_counter() - start)
print(batch.indices.tolist())
"""


def _hog() -> None:  # pragma: no cover - runs in a child process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def _run(cmd: list[str], cwd: str, cap: float, env: dict) -> tuple[float, str, bool]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, "", False
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout, True


def main_job(threads: int, cap: float) -> tuple[float, bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BATCHAL_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        seconds, out, finished = _run([sys.executable, "-m", "batchal.cli", "run", "--out", tmp], tmp, cap, env)
    accuracy = ""
    for line in out.splitlines():
        if line.startswith("| batchbald"):
            accuracy = line.split("|")[4].strip()
    return seconds, finished, accuracy


def selection(threads: int, cap: float) -> tuple[float, bool, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    seconds, out, finished = _run([sys.executable, "-c", SELECTION, str(threads)], str(REPO), cap, env)
    if not finished:
        return seconds, False, ""
    lines = out.splitlines()
    return float(lines[0]), True, lines[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=300.0, help="seconds after which a job is stopped (default 300)")
    parser.add_argument("--hogs", default="0,2,4", help="background process counts (default 0,2,4)")
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "contention.txt"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    before_threads = torch.get_num_threads() if "OMP_NUM_THREADS" not in os.environ else cores
    lines = [
        "# Slowdown under contention: the main job (`batchal run`) and one BatchBALD selection "
        "(N = 5,000 synthetic, K = 100, C = 10, b = 10), alone and with H CPU-bound background processes",
        f"# command: python benchmarks/bench_contention.py --cap {args.cap:g} --hogs {args.hogs}",
        f"# machine: {platform.machine()}, {cores} cores, torch {torch.__version__}, load before start: {os.getloadavg()[0]:.2f}",
        f"# before = torch's default ({before_threads} threads, one per core); after = batchal's policy (1 thread, batchal.threads)",
        "# fair share = 1 + H / cores; 'vs fair' = slowdown / fair share (target <= 1.5); '> cap' = stopped at --cap",
        "",
        "| job | threads | hogs | seconds | slowdown | fair share | vs fair | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    hog_counts = [int(h) for h in args.hogs.split(",")]
    for job_name, job in (("selection", selection), ("main job", main_job)):
        for threads in (1, before_threads):
            alone = None
            for hogs in hog_counts:
                procs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(hogs)]
                for p in procs:
                    p.start()
                try:
                    time.sleep(1.0 if hogs else 0.0)
                    seconds, finished, result = job(threads, args.cap)
                finally:
                    for p in procs:
                        p.terminate()
                    for p in procs:
                        p.join()
                if hogs == 0:
                    alone = seconds
                fair = 1 + hogs / cores
                slow = seconds / alone if alone else float("nan")
                shown = f"{seconds:.1f}" if finished else f"> {args.cap:.0f}"
                ratio = f"{slow / fair:.2f}" if finished else f"> {slow / fair:.1f}"
                line = f"| {job_name} | {threads} | {hogs} | {shown} | {slow:.2f}{'' if finished else '+'} | {fair:.1f} | {ratio} | {result[:60]} |"
                lines.append(line)
                print(line, flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
