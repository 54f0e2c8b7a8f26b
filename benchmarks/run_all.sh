#!/usr/bin/env bash
# Every benchmark, one after the other (never two at once: they share 2 cores), results under results/benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/bench_badge.py
python benchmarks/bench_batchbald.py --inputs synthetic
python benchmarks/bench_batchbald.py --inputs mnist
python benchmarks/bench_ceiling.py
python benchmarks/bench_distributed.py
python benchmarks/bench_batchbald_scale.py --sizes 10000,60000 --K 100
python benchmarks/bench_batchbald_scale.py --sizes 1000000 --K 20 --mmap
