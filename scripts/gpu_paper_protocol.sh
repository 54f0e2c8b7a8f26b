#!/usr/bin/env bash
# The BatchBALD paper's own protocol on one GPU: the studies mnist-paper, repeated-mnist-paper
# and mnist-sweep-paper (scripts/reproduce.py), run side by side by WORKERS one-thread processes
# that share the runs (a run in progress is locked; the others take the next one), in that order.
# Every run resumes from its results.jsonl, so the same command on a later machine continues.
#
# Usage: scripts/gpu_paper_protocol.sh RUNS_ROOT [WORKERS] [DATA_DIR]
#   RUNS_ROOT  where the studies' run folders go (RUNS_ROOT/STUDY/runs/...). On first use it is
#              seeded from results/STUDY/runs, so runs brought back from an earlier machine resume.
#   WORKERS    processes sharing the GPU (default 16).
#   DATA_DIR   the data sets (default $BATCHAL_DATA, else ../shared/data).
# Each worker logs to RUNS_ROOT/worker-N.log. Reports: scripts/reproduce.py STUDY --report-only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: scripts/gpu_paper_protocol.sh RUNS_ROOT [WORKERS] [DATA_DIR]}
workers=${2:-16}
data=${3:-${BATCHAL_DATA:-../shared/data}}
studies="mnist-paper repeated-mnist-paper mnist-sweep-paper"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here: these studies are a GPU job')"
mkdir -p "$root"
for study in $studies; do
  if [ -d "results/$study/runs" ] && [ ! -d "$root/$study/runs" ]; then
    mkdir -p "$root/$study" && cp -r "results/$study/runs" "$root/$study/"
  fi
done
for i in $(seq 1 "$workers"); do
  (
    for study in $studies; do
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python3 scripts/reproduce.py "$study" --device cuda --out "$root" \
        --data-dir "$data" --no-report || echo "worker $i: $study stopped with an error; rerun to resume"
    done
  ) >"$root/worker-$i.log" 2>&1 &
done
wait
echo "all workers finished"
