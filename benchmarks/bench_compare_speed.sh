#!/usr/bin/env bash
# Is `batchal compare` fast enough to use before a project starts? (issue 34, item 6)
# 5 strategies x 5 seeds on letter (16,000 training rows) to 1,000 labels, in worker processes
# (--workers 2) and on a local Ray cluster (--ray local), each from an empty folder, with its wall
# clock. Writes results/benchmarks/compare_speed.txt. Run it on an otherwise idle machine.
# Usage: bash benchmarks/bench_compare_speed.sh [workers|ray|both]   (default both)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-both}
data=${BATCHAL_DATA:-$(cd .. && pwd)/shared/data}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The protocol: b = 100 from 20 class-balanced labels, K = 20 MC-dropout samples, the letter MLP
# with batchal run's training (epochs of 5,056 examples, at most 30, early stopping after 3);
# BatchBALD's CPU shortcuts: only the 300 points of highest BALD compete, 1,000 joint samples.
args=(letter --data-dir "$data" --strategy margin,bald,batchbald,badge --seeds 0,1,2,3,4 --budget 1000 --batch-size 100
      --mc-samples 20 --prefilter 300 --num-samples 1000)
file=results/benchmarks/compare_speed.txt
run() {  # $1: label, rest: extra arguments
  local label=$1; shift
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local start end; start=$(date +%s.%N)
  batchal compare "${args[@]}" "$@" --out "$out/$label" > "$out/$label.log" 2>&1 || { tail -20 "$out/$label.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%s: wall clock %.0f s (load before start %s)\n' "$label" "$(echo "$end - $start" | bc)" "$load" >> "$out/times"
  sed -n '/^b = /p;/^Use /p' "$out/$label.log" | sed "s/^/  $label verdict: /" >> "$out/times"
}
[[ $which == ray ]] || run workers --workers 2
[[ $which == workers ]] || run ray --ray local
{
  echo "# batchal compare's speed: 5 strategies (random, margin, BALD, BatchBALD, BADGE) x 5 seeds on letter to 1,000 labels"
  echo "# command: bash benchmarks/bench_compare_speed.sh $which"
  echo "# machine: $(uname -m), $(nproc) cores, $(python -c 'import torch; print("torch", torch.__version__)')"
  echo "# protocol: b = 100 from 20 class-balanced labels (10 rounds), K = 20 MC-dropout samples, the letter MLP trained as"
  echo "# batchal run trains (epochs of 5,056 examples, at most 30, early stopping after 3 on 1,000 validation rows), test"
  echo "# accuracy on letter's 4,000 test rows every round; BatchBALD's CPU shortcuts: --prefilter 300 --num-samples 1000"
  echo "# (at b = 100 with K = 20 its batch information reaches the log K ceiling after a few picks, and it says so);"
  echo "# plus the full-pool model per seed, the report and its plots."
  cat "$out/times"
} | tee "$file"
