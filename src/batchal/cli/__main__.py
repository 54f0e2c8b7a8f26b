"""``python -m batchal.cli ...``: the ``batchal`` command from a source tree."""

import sys

from batchal.cli import main

sys.exit(main())
