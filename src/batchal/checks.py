"""Argument checks for every layer: integers, numbers, batch sizes and seeds.

The ground floor: ``acquisition/``, ``bayesian/``, ``distributed/`` and the loops all check their
arguments here, raising ``ValueError`` at the boundary with the argument's name, the value it got
and what was expected. Tensor checks (log-probabilities, features) live with the strategies in
``batchal.acquisition.validation``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch


def as_number(value):
    """A Python, numpy or 0-d tensor number as a Python ``int`` or ``float``; anything else unchanged.

    Booleans (Python, numpy or tensor) and complex numbers stay as they are, so the checks
    below refuse them by name; so do tensors with more than one element and meta tensors.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.device.type == "meta" or value.dtype == torch.bool or value.is_complex():
            return value
        return value.item()
    if isinstance(value, np.generic) and not isinstance(value, (np.bool_, np.complexfloating)):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def is_real_number(value) -> bool:
    """True for int and float values (after ``as_number``), never for bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and not isinstance(value, np.bool_)


def check_batch_size(batch_size, pool_size: int) -> int:
    batch_size = as_number(batch_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > pool_size:
        raise ValueError(f"batch_size={batch_size} is larger than the pool (N = {pool_size}); expected 1 <= batch_size <= {pool_size}")
    return batch_size


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with ``allow_zero``): Python, numpy or a 0-d tensor."""
    value = as_number(value)
    if not is_real_number(value) or not math.isfinite(value):
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
