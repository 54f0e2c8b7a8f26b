#!/usr/bin/env bash
# The benchmark environment: batchal with its [bench] extra, then the reference implementation
# batchbald_redux 2.0.5 without its declared dependencies. Its batchbald module needs only torch,
# toma, psutil and tqdm (the extra); its metadata also asks for torchvision, for which the
# registry has only CUDA builds that replace the CPU torch pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -c constraints.txt -e ".[bench]"
pip install --no-deps "batchbald_redux==2.0.5"
# bmdal_reg 3.0.2 (Holzmüller et al.) for bench_regression.py: its selection code needs torch, numpy
# and dill; its declared plotting and data-download dependencies (seaborn, openml, ...) are not needed.
pip install dill && pip install --no-deps "bmdal_reg==3.0.2"
python -c "import torch, batchal; from batchbald_redux.batchbald import get_batchbald_batch; print('benchmark environment ok: torch', torch.__version__)"
