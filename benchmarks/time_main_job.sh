#!/usr/bin/env bash
# Wall-clock time of the README's main job (`batchal run` with no arguments) in a temporary folder,
# written to results/benchmarks/main_job.txt. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
(cd "$out" && batchal run > run.log 2>&1)
end=$(date +%s.%N)
{
  echo "# The README's main job: batchal run (BatchBALD, BALD and random on repeated-digits, 100 labels)"
  echo "# command: bash benchmarks/time_main_job.sh"
  echo "# machine: $(uname -m), $(nproc) cores, $(python -c 'import torch; print("torch", torch.__version__)'), load before start: $(cut -d' ' -f1 /proc/loadavg)"
  printf 'wall clock: %.0f s\n' "$(echo "$end - $start" | bc)"
  tail -n 8 "$out/run.log"
} | tee results/benchmarks/main_job.txt
