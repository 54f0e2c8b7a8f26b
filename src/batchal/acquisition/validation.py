"""Tensor input checks shared by every acquisition strategy (argument checks: ``batchal.checks``).

Each check raises ``ValueError`` at the boundary, naming the argument, the value it got and
what was expected, so that a bad input never turns into a traceback deep inside the maths
or, worse, into silently wrong picks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Rows of N checked at a time, so that checking a large pool needs little extra memory.
_CHECK_CHUNK_ELEMENTS = 1 << 17  # elements checked at a time (float64 temporaries of a few MiB)

#: |logsumexp_c log p_c| allowed before float32/float64 log-probabilities count as unnormalised.
NORMALISATION_TOLERANCE = 1e-3

#: Magnitude of features above (or, when non-zero, below the inverse of) which squared distances
#: in float64 could overflow (underflow): such embeddings are rescaled by a power of two.
EMBEDDING_RESCALE_THRESHOLD = 2.0**100


def normalisation_tolerance(dtype: torch.dtype, num_classes: int) -> float:
    """|logsumexp_c log p_c| allowed for log-probabilities stored in ``dtype``.

    A correctly computed ``log_softmax`` rounds each value log p_c with a relative error up to
    eps / 2, so p_c is off by a factor exp(|log p_c| eps / 2) and the total by about
    eps * (typical |log p|), which grows like log C. Measured on random pools, bfloat16
    (eps = 2^-7) is off by up to 0.02 and float16 by up to 0.0025 for C from 2 to 1,000;
    the tolerance eps * (4 + ln C) covers both with room. Logits are off by far more.
    """
    eps = torch.finfo(dtype).eps
    return max(NORMALISATION_TOLERANCE, eps * (4 + math.log(num_classes)))


def as_float_tensor(value, name: str, ndim, shape_hint: str, allow_integers: bool = False) -> torch.Tensor:
    """Return ``value`` as a floating-point tensor with ``ndim`` dimensions (an int, or a
    ``(least, most)`` range), or raise naming ``name``.

    numpy arrays of any layout (negative strides, Fortran order) are accepted; the result is
    detached from any autograd graph (strategies never differentiate through their inputs).
    Refused by name: meta tensors (no data), complex, boolean and object values, integers
    unless ``allow_integers`` (features, means and variances may be counts; log-probabilities
    may not), and a pool with no points or an empty dimension.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "c":
            raise ValueError(f"{name} must be real, got a complex numpy array ({value.dtype}); expected a float array of shape {shape_hint}")
        if value.dtype.kind not in "fiub":
            raise ValueError(f"{name} must hold numbers, got a numpy array of dtype {value.dtype}; expected a float array of shape {shape_hint}")
        # torch cannot view negative strides (a reversed array): copy those, share the rest.
        value = torch.from_numpy(value.copy() if any(stride < 0 for stride in value.strides) else value)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape {shape_hint}, got {type(value).__name__}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device, which holds shapes but no data; move it to 'cpu' or 'cuda' first")
    value = value.detach()
    least, most = (ndim, ndim) if isinstance(ndim, int) else ndim
    if not least <= value.dim() <= most:
        wanted = f"{least}" if least == most else f"{least} or more"
        raise ValueError(f"{name} must have {wanted} dimensions ({shape_hint}), got shape {tuple(value.shape)}")
    if value.is_complex():
        raise ValueError(f"{name} must be real, got dtype {value.dtype}; a complex value's imaginary part would be lost")
    if not value.is_floating_point():
        if allow_integers and value.dtype != torch.bool:
            value = value.double()  # integer features (counts, pixel values) are exact in float64
        else:
            raise ValueError(f"{name} must be floating point, got dtype {value.dtype}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} holds an empty pool (N = 0, shape {tuple(value.shape)}); nothing can be selected")
    if any(s == 0 for s in value.shape[1:]):
        raise ValueError(f"{name} has an empty dimension: shape {tuple(value.shape)}, expected {shape_hint} with every size >= 1")
    return value


def _row_chunks(tensor: torch.Tensor):
    per_row = max(1, tensor[0].numel())
    step = max(1, _CHECK_CHUNK_ELEMENTS // per_row)
    for start in range(0, tensor.shape[0], step):
        yield start, tensor[start : start + step]


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs (float16, bfloat16) as float32, so every strategy computes in float32 or float64."""
    return tensor.float() if torch.finfo(tensor.dtype).bits < 32 else tensor


def _refuse_nan_and_posinf(chunk: torch.Tensor, start: int, name: str, what: str) -> None:
    if torch.isnan(chunk).any():
        n = start + int(torch.isnan(chunk).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"{name} contains NaN (first at pool position {n}); expected {what}")
    if torch.isposinf(chunk).any():
        n = start + int(torch.isposinf(chunk).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"{name} contains +inf (first at pool position {n}); log-probabilities are <= 0")


def check_normalised_log_probs(value, name: str, ndim, class_dim: int, shape_hint: str) -> torch.Tensor:
    """Check log-probabilities normalised over ``class_dim``: no NaN or +inf, logsumexp over the
    classes 0 within ``normalisation_tolerance`` of the dtype; ``-inf`` allowed (a class of
    probability zero). The one check behind every kind's categorical input (N x K x C for
    classification, N x K x C x H x W for segmentation). Half precision comes back as float32."""
    value = as_float_tensor(value, name, ndim, shape_hint)
    tolerance = normalisation_tolerance(value.dtype, value.shape[class_dim])
    for start, chunk in _row_chunks(value):
        _refuse_nan_and_posinf(chunk, start, name, "finite log-probabilities")
        total = torch.logsumexp(chunk.double(), dim=class_dim)
        bad = (total.abs() > tolerance) | torch.isnan(total)
        if bad.any():
            where = [int(i) for i in bad.nonzero()[0]]
            n, k = start + where[0], where[1]
            raise ValueError(
                f"{name} must be log-probabilities (logsumexp over the classes, dimension {class_dim}, equal to 0), but at "
                f"pool position {n}, sample {k} it is {float(total[tuple(where)]):.4g} (tolerance {tolerance:.2g} for {value.dtype}); "
                f"if these are logits, apply log_softmax over dimension {class_dim} (the classes)"
            )
    return _at_least_float32(value)


def check_log_probs(log_probs_N_K_C, name: str = "log_probs_N_K_C") -> torch.Tensor:
    """Check MC log-probabilities of shape N x K x C: no NaN or +inf, each row normalised
    (within a tolerance that depends on the dtype: ``normalisation_tolerance``).

    ``-inf`` is allowed (a class of probability zero). Half-precision inputs (float16,
    bfloat16) are returned as float32, so every strategy computes in float32 or float64.
    """
    return check_normalised_log_probs(log_probs_N_K_C, name, 3, 2, "N x K x C")


def check_binary_log_probs(value, name: str = "log_probs_N_K_L") -> torch.Tensor:
    """Check log p(y_l = 1) of L independent binary labels, N x K x L (log sigmoid outputs): no
    NaN or +inf, every value <= 0 within the dtype's tolerance (each label's own normalisation:
    p <= 1; logits are refused as soon as one is positive); returned clamped at 0."""
    value = as_float_tensor(value, name, 3, "N x K x L")
    tolerance = normalisation_tolerance(value.dtype, 2)
    for start, chunk in _row_chunks(value):
        _refuse_nan_and_posinf(chunk, start, name, "finite log-probabilities")
        if (chunk > tolerance).any():
            n = start + int((chunk > tolerance).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{name} must hold log-probabilities of label l being present (<= 0), but pool position {n} "
                             f"has {float(chunk[n - start].max()):.4g}: pass F.logsigmoid(logits), not the logits")
    return _at_least_float32(value).clamp(max=0.0)


def check_finite(value, name: str, ndim, shape_hint: str, positive: bool = False) -> torch.Tensor:
    """Check real values (features, means, variances): finite, and > 0 when ``positive``;
    integers accepted as exact float64; half precision returned as float32."""
    value = as_float_tensor(value, name, ndim, shape_hint, allow_integers=True)
    for start, chunk in _row_chunks(value):
        finite = torch.isfinite(chunk)
        if not finite.all():
            n = start + int((~finite).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{name} contains NaN or inf (first at pool position {n}); expected finite values")
        if positive and not (chunk > 0).all():
            n = start + int((chunk <= 0).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{name} must be > 0 everywhere (variances), but pool position {n} has {float(chunk[n - start].min()):.4g}")
    return _at_least_float32(value)


def samples_identical(log_probs_N_K_C: torch.Tensor) -> bool:
    """True when K > 1 and every sample k equals the first for every point (chunked)."""
    if log_probs_N_K_C.shape[1] < 2:
        return False
    for _, chunk in _row_chunks(log_probs_N_K_C):
        if not torch.equal(chunk, chunk[:, :1].expand_as(chunk)):
            return False
    return True


def check_embeddings(embeddings_N_D, name: str = "embeddings_N_D") -> torch.Tensor:
    """Check an N x D feature matrix: two dimensions, every value finite."""
    return check_finite(embeddings_N_D, name, 2, "N x D")


def _max_abs(tensor: torch.Tensor) -> float:
    """max |x| without a full-size temporary: the largest of the row chunks' maxima and minima."""
    return max(max(abs(float(chunk.max())), abs(float(chunk.min()))) for _, chunk in _row_chunks(tensor))


def embedding_exponent(*embeddings: torch.Tensor | None) -> int:
    """0, or the power of two e such that features * 2^e have their largest |value| near 1, when
    squared distances between these features would overflow (or underflow) float64. A power of
    two rescales exactly, and distance-based picks do not depend on the scale."""
    largest = max((_max_abs(e) for e in embeddings if e is not None and e.numel()), default=0.0)
    if largest == 0.0 or 1 / EMBEDDING_RESCALE_THRESHOLD <= largest <= EMBEDDING_RESCALE_THRESHOLD:
        return 0
    return -math.frexp(largest)[1]


def embedding_scale(exponent: int) -> float:
    """The factor 2^exponent of ``embedding_exponent`` (inf where it exceeds float64: subnormal features)."""
    return math.ldexp(1.0, exponent) if exponent < 1024 else math.inf


def rescale(embeddings: torch.Tensor, exponent: int) -> torch.Tensor:
    """``embeddings * 2^exponent`` in float64 (a float32 feature below 2^-126 rescaled would
    overflow float32), in two exact steps (2^1029 itself does not fit a float64)."""
    half = exponent // 2
    return embeddings.double() * math.ldexp(1.0, half) * math.ldexp(1.0, exponent - half)
