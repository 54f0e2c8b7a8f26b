#!/usr/bin/env bash
# The package as users install it: wheel and sdist built (PyPA's build), metadata checked (twine),
# the wheel installed into a fresh virtual environment and smoke-tested (version, one selection,
# one short run), all outside the repository. Usage: scripts/check_package.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip install -q build twine
"$python" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
"$python" -m twine check "$work"/dist/*
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c constraints.txt "$work"/dist/batchal-*.whl
cd "$work"
"$work/venv/bin/batchal" --version
"$work/venv/bin/python" -c "
import torch, batchal
lp = torch.log_softmax(torch.randn(50, 8, 4, generator=torch.Generator().manual_seed(0)), -1)
picks = batchal.select('batchbald', 5, log_probs_N_K_C=lp, seed=0).indices.tolist()
assert len(set(picks)) == 5, picks
import importlib.resources as r
assert r.files('batchal').joinpath('py.typed').is_file() and r.files('batchal.labelling').joinpath('page.html').is_file()
print('selection:', picks)
"
"$work/venv/bin/batchal" run --dataset digits --strategy random --budget 30 --acquisition-size 5 --initial-size 20 \
    --mc-samples 2 --max-epochs 1 --epoch-samples 64 --validation-size 50 --out "$work/runs" | tail -3
echo "package check passed"
