"""Argument checks for every layer: integers, numbers, batch sizes and seeds.

The ground floor: ``acquisition/``, ``bayesian/``, ``distributed/`` and the loops all check their
arguments here, raising ``ValueError`` at the boundary with the argument's name, the value it got
and what was expected. Tensor checks (log-probabilities, features) live with the strategies in
``batchal.acquisition.validation``.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch


def check_batch_size(batch_size, pool_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > pool_size:
        raise ValueError(f"batch_size={batch_size} is larger than the pool (N = {pool_size}); expected 1 <= batch_size <= {pool_size}")
    return batch_size


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)


def check_random_state(seed) -> torch.Generator:
    """Turn ``seed`` (None, an int or a ``torch.Generator``) into a CPU ``torch.Generator``.

    ``None`` draws a fresh seed from the operating system, so results then differ between calls.
    """
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator()
    if seed is None:
        generator.seed()
        return generator
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ValueError(f"seed must be None, an int or a torch.Generator, got {seed!r}")
    if seed < 0 or seed >= 2**64:
        raise ValueError(f"seed must be >= 0 and below 2^64, got {seed}")
    generator.manual_seed(int(seed))
    return generator
