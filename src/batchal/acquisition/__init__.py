"""Acquisition functions: per-point scores, BatchBALD, BADGE, Coreset, k-DPP, behind one contract."""

from batchal.acquisition import scores
from batchal.acquisition.registry import Selection, Strategy, describe, register, select, strategies

__all__ = ["Selection", "Strategy", "describe", "register", "scores", "select", "strategies"]
