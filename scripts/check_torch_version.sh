#!/usr/bin/env bash
# Install batchal into a fresh environment that already holds another torch (default 2.11.0, the
# lowest version pyproject.toml admits, a CUDA build from PyPI), check that the install leaves that
# torch in place, and run the test suite there. Writes results/compat/torch-VERSION.txt.
# Usage: bash scripts/check_torch_version.sh [VERSION]   (several GB of download on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-2.11.0}
env=$(mktemp -d)/venv
out=results/compat/torch-$version.txt
mkdir -p results/compat
python3 -m venv "$env"
"$env/bin/pip" install -q "torch==$version" 2>/dev/null
before=$("$env/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
"$env/bin/pip" install -q -e ".[dev]" 2>/dev/null   # no constraints file: what a user with their own torch runs
after=$("$env/bin/python" -c 'import torch; print(torch.__version__)')
tests=$(cd "$env/.." && "$env/bin/python" -m pytest -q "$OLDPWD/tests" 2>&1 | tail -n 1)
{
  echo "# batchal next to an installed torch: bash scripts/check_torch_version.sh $version"
  echo "# machine: $(uname -m), $(nproc) cores, no GPU"
  echo "torch before 'pip install -e .[dev]': $before"
  echo "torch after:                          $after"
  [ "$before" = "$after" ] && echo "torch left in place: yes" || echo "torch left in place: NO"
  echo "test suite under torch $after: $tests"
} | tee "$out"
rm -rf "$(dirname "$env")"
[ "$before" = "$after" ]
