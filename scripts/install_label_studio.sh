#!/usr/bin/env bash
# Label Studio in its own virtual environment (its pins clash with ours: Django, pydantic, ...),
# for tests/test_label_studio.py's real-server test and for trying `batchal label-studio` by hand.
# Usage: scripts/install_label_studio.sh [VENV_DIR]   (default .venv-label-studio)
# Then:  export BATCHAL_LABEL_STUDIO=VENV_DIR/bin/label-studio
# Tested with Label Studio 1.23.2 (about 2 minutes to install on 2 cores).
set -euo pipefail
venv="${1:-.venv-label-studio}"
python3 -m venv "$venv"
# sentry-sdk 3 (released December 2026) drops options Label Studio 1.23.2 passes at start-up
# ("TypeError: Unknown option 'send_default_pii'"): the 2.x series it was built with.
"$venv/bin/pip" install -q "label-studio==1.23.2" "sentry-sdk<3"
"$venv/bin/python" -c "import label_studio; print('Label Studio', label_studio.__version__, 'in $venv')"
