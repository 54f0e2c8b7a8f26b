"""Fuzz every label kind's strategies with legal inputs at any magnitude (issue 32's run).

For each label kind (classification, multi-label, regression, segmentation): CASES legal inputs
(batchal.acquisition.conformance.fuzz_case: pools of 1 to 24 points, logits, features and means
of magnitude 10^-150 to 10^150, log-uniform, and for regression a noise variance drawn
independently over the same range), the kind's strategies taken in turn. A case fails on any
exception, a repeated or out-of-range pick, a NaN or infinite score, or (regression's exact
greedy) a negative gain: conformance.fuzz_failure. Prints and writes one line per kind and every
failure.

Usage: python benchmarks/fuzz_label_kinds.py [--cases 300] [--out results/benchmarks/fuzz.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from batchal.acquisition import conformance, registry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="legal inputs per label kind")
    parser.add_argument("--out", default="results/benchmarks/fuzz.txt")
    args = parser.parse_args(argv)
    lines = [f"# command: python benchmarks/fuzz_label_kinds.py --cases {args.cases}",
             f"# machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"load average {os.getloadavg()[0]:.2f} at start",
             f"# magnitudes 10^{conformance.FUZZ_LOG10_RANGE[0]:.0f} to 10^{conformance.FUZZ_LOG10_RANGE[1]:.0f}; seeds 0..{args.cases - 1} per kind", ""]
    total_failures = 0
    for kind in registry.KINDS:
        names = registry.strategies(kind)
        start = time.perf_counter()
        failures = []
        for seed in range(args.cases):
            strategy = names[seed % len(names)]
            failure = conformance.fuzz_failure(strategy, seed)
            if failure is not None:
                failures.append(f"  {strategy} seed {seed}: {failure}")
        total_failures += len(failures)
        lines.append(f"{kind:15s} {args.cases} cases over {len(names)} strategies ({', '.join(names)}): "
                     f"{len(failures)} failures, {time.perf_counter() - start:.1f} s")
        lines += failures
    lines += ["", f"total failures: {total_failures}"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 1 if total_failures else 0


if __name__ == "__main__":
    sys.exit(main())
