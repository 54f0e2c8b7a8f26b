"""batchal: deep Bayesian batch active learning (BatchBALD, BADGE and their baselines) on PyTorch."""

from batchal.acquisition import Selection, describe, register, scores, select, strategies
from batchal.bayesian import (
    ConsistentMCDropout,
    ConsistentMCDropout2d,
    convert_dropout,
    mc_dropout,
    predict_embeddings,
    predict_log_probs,
)

__version__ = "0.1.0"

__all__ = [
    "ConsistentMCDropout",
    "ConsistentMCDropout2d",
    "Selection",
    "convert_dropout",
    "describe",
    "mc_dropout",
    "predict_embeddings",
    "predict_log_probs",
    "register",
    "scores",
    "select",
    "strategies",
]
