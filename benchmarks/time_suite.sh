#!/usr/bin/env bash
# Wall-clock time of the README's test command's suite (python -m pytest -q in this checkout's environment),
# written to results/benchmarks/suite.txt with the machine, its load and what the browser and Label Studio
# tests found. Run it on an otherwise idle machine for the README's figure; the load is recorded either way,
# and so are failures (the file's last lines; the script then exits with pytest's status).
# Then run python scripts/generated.py, which carries the figure into the README (tests/test_generated.py checks they agree).
set -euo pipefail
cd "$(dirname "$0")/.."
load=$(cut -d' ' -f1 /proc/loadavg)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
status=0
python -m pytest -q -p no:cacheprovider > "$log" 2>&1 || status=$?
end=$(date +%s.%N)
{
  echo "# The README's test command's suite: python -m pytest -q (two one-thread workers, pyproject's addopts)"
  echo "# command: bash benchmarks/time_suite.sh"
  echo "# machine: $(uname -m), $(nproc) cores, $(python -c 'import torch; print("torch", torch.__version__)'), load before start: $load"
  echo "# chromium: $(command -v chromium || echo missing); Label Studio: ${BATCHAL_LABEL_STUDIO:-not set}"
  printf 'wall clock: %.0f s\n' "$(echo "$end - $start" | bc)"
  grep -E "^(FAILED|ERROR) " "$log" || true
  tail -n 1 "$log"
} | tee results/benchmarks/suite.txt
exit "$status"
