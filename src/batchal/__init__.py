"""batchal: deep Bayesian batch active learning (BatchBALD, BADGE and their baselines) on PyTorch.

The names below are loaded on first use (PEP 562), so that ``import batchal`` and ``batchal
--version`` do not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Selection": "batchal.acquisition", "check_strategy": "batchal.acquisition", "describe": "batchal.acquisition", "register": "batchal.acquisition",
    "scores": "batchal.acquisition", "select": "batchal.acquisition", "strategies": "batchal.acquisition",
    "ConsistentMCDropout": "batchal.bayesian", "ConsistentMCDropout2d": "batchal.bayesian", "convert_dropout": "batchal.bayesian",
    "mc_dropout": "batchal.bayesian", "predict_embeddings": "batchal.bayesian", "predict_log_probs": "batchal.bayesian",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'batchal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
