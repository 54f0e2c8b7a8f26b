import os
from pathlib import Path

import pytest
import torch

# The thread policy of batchal.threads (1 unless BATCHAL_THREADS says otherwise): the suite stays
# fast when other jobs share the cores, and seeded results do not depend on the machine.
from batchal.threads import use_threads  # noqa: E402

use_threads()

try:  # hypothesis keeps no example database: tests never write into the repository
    from hypothesis import settings

    settings.register_profile("batchal", database=None)
    settings.load_profile("batchal")
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[1]


def random_log_probs(N: int, K: int, C: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    """MC log-probabilities with disagreement between samples (nonzero BALD)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, 1, C, generator=g) * scale + torch.randn(N, K, C, generator=g) * scale
    return torch.log_softmax(logits, dim=2)


@pytest.fixture
def shared_data_dir() -> Path:
    path = Path(os.environ.get("BATCHAL_DATA", REPO.parent / "shared" / "data"))
    if not (path / "mnist").is_dir():
        pytest.skip(f"reference data not found at {path} (set BATCHAL_DATA to the folder holding mnist/, fashion-mnist/, letter/)")
    return path
