"""Acquisition functions: per-point scores, BatchBALD, BADGE, Coreset, k-DPP, behind one contract."""

from batchal.acquisition import scores
from batchal.acquisition.conformance import check_strategy
from batchal.acquisition.registry import Selection, Strategy, describe, register, select, strategies

__all__ = ["Selection", "Strategy", "check_strategy", "describe", "register", "scores", "select", "strategies"]
