#!/usr/bin/env bash
# Every benchmark, one after the other (never two at once: they share 2 cores), results under results/benchmarks.
# The BatchBALD side-by-side needs the reference implementation: benchmarks/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/bench_badge.py
python benchmarks/bench_coreset.py
python benchmarks/bench_batchbald.py --inputs synthetic --sizes 2000,10000,60000,1000000:20
python benchmarks/bench_batchbald.py --inputs mnist --sizes 2000,10000,58000
python benchmarks/bench_batchbald_scale.py --sizes 20000 --K 20 --name batchbald_scale_groups
python benchmarks/bench_batchbald_scale.py --sizes 20000 --K 20 --bound-groups 0 --name batchbald_scale_nogroups
python benchmarks/bench_ceiling.py
python benchmarks/bench_distributed.py
python benchmarks/bench_bait.py
