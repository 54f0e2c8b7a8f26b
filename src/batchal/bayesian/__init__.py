"""Bayesian model plumbing: consistent MC dropout and pool predictions."""

from batchal.bayesian.dropout import ConsistentMCDropout, ConsistentMCDropout2d, convert_dropout, mc_dropout
from batchal.bayesian.predict import last_linear_layer, predict_embeddings, predict_log_probs

__all__ = [
    "ConsistentMCDropout",
    "ConsistentMCDropout2d",
    "convert_dropout",
    "last_linear_layer",
    "mc_dropout",
    "predict_embeddings",
    "predict_log_probs",
]
