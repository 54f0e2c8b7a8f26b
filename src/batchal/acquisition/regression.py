"""Regression: BALD and batch selection from K posterior samples of a predictive Gaussian.

Inputs: ``mean_N_K`` (each sample's predictive mean mu_nk) and the observation noise, either
``var_N_K`` (each sample's predictive variance, heteroscedastic) or a scalar ``noise`` (the same
variance sigma^2 everywhere). Given w_k, y_n ~ N(mu_nk, var_nk); over w, y_n follows the
K-component Gaussian mixture.

BALD, I(y; w) = H[mixture] - mean_k 1/2 log(2 pi e var_k), has no closed form. Two stated estimators:

- ``"moment"``: the mixture's entropy replaced by that of the Gaussian with its mean and variance
  (var = mean_k var_k + Var_k mu_k, population variance over the K samples). The Gaussian has
  the largest entropy for a given variance, so this is an upper bound on I (tested against
  numerical integration in 1-D).
- ``"sampled"``: H[mixture] by Monte Carlo, -mean log p_mix(y_s) over S draws y_s from the
  mixture (S / K per component, stratified); unbiased for H, its error shrinking as 1/sqrt(S).

Batch selection, the joint view of BatchBALD: with the K samples' mean vectors as a Gaussian
process over the pool (covariance Sigma = the population covariance of mu over k) and noise
variances s_n = mean_k var_nk,

    I(y_B; w) ~= 1/2 log det(Sigma_B + diag(s_B)) - 1/2 sum_{n in B} log s_n,

the Gaussian approximation of the batch's information. It is submodular, and greedy picks the
point of largest gain 1/2 log(d_n / s_n), d_n being y_n's variance given the batch so far.
Each pick updates every d_n by one rank-one (pivoted Cholesky) step, O(N (K + b)), so the greedy
is exact without lazy bounds; the scores add up to the closed-form log det (tested).
The same greedy on a kernel of last-layer features, k(x, x') = phi(x) . phi(x'), is bmdal_reg's
MaxDet (Holzmüller et al. 2023) on the "ll" kernel: :func:`maxdet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from batchal.acquisition.validation import check_finite, rescale
from batchal.checks import check_positive_float

LOG_2PI_E = math.log(2 * math.pi * math.e)
LN2 = math.log(2.0)

#: A point's remaining prior variance (given the batch so far) below this many float64 epsilons of
#: its prior variance, times the picks made, is rounding error: the point counts as explained.
RESIDUAL_EPSILONS = 64


@dataclass(frozen=True)
class RegressionPool:
    """The K samples' predictive Gaussians, rescaled by one power of two so that no value
    overflows: ``centred_N_K`` = (mu_nk - mean_k mu_nk) * 2^exponent, ``log_var_N_K`` = log var_nk
    + 2 exponent ln 2, both in the rescaled units (information is scale-free: 2^exponent
    multiplies the means' spread and the noise's standard deviation alike). The noise stays in
    logs: a variance 1e-300 of the spread is exact here, where as a number it would underflow."""

    centred_N_K: torch.Tensor
    log_var_N_K: torch.Tensor
    exponent: int


def _log2_max_abs(tensor: torch.Tensor) -> float:
    largest = float(tensor.abs().max())
    return -math.inf if largest == 0.0 else math.log2(largest)


def check_regression(mean_N_K, var_N_K=None, noise=None) -> RegressionPool:
    """Check the pool's means and noise (named in the errors) and rescale them (``RegressionPool``).

    ``mean_N_K``: real N x K (numpy or torch, any dtype but complex, integers as exact floats);
    exactly one of ``var_N_K`` (positive, N x K) and ``noise`` (one positive variance: a Python,
    numpy or 0-d tensor number)."""
    mean = check_finite(mean_N_K, "mean_N_K", 2, "N x K: predictive means of K posterior samples").double()
    if (var_N_K is None) == (noise is None):
        raise ValueError("give the observation noise as var_N_K (N x K variances) or noise (one variance), exactly one of them")
    if var_N_K is not None:
        var = check_finite(var_N_K, "var_N_K", 2, "N x K: predictive variances", positive=True).double()
        if tuple(var.shape) != tuple(mean.shape):
            raise ValueError(f"var_N_K must have mean_N_K's shape {tuple(mean.shape)}, got {tuple(var.shape)}")
        log_var = torch.log(var.to(mean.device))
    else:
        log_var = torch.full_like(mean, math.log(check_positive_float(noise, "noise")))
    # Centre in units where the largest |mean| is near 1 (no sum overflows), then choose the one
    # power of two that brings max(|centred|, largest standard deviation) near 1.
    e0 = 0 if float(mean.abs().max()) == 0.0 else -math.frexp(float(mean.abs().max()))[1]
    scaled = mean * math.ldexp(1.0, e0)
    centred = scaled - scaled.mean(1, keepdim=True)
    log2_sd = 0.5 * float(log_var.max()) / LN2 + e0
    exponent = e0 - math.ceil(max(_log2_max_abs(centred), log2_sd))
    centred = rescale(centred, exponent - e0)  # two exact steps: 2^(exponent - e0) itself may not fit a float64
    return RegressionPool(centred, log_var + 2 * exponent * LN2, exponent)


def _log_mean_exp(log_values: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(log_values, dim) - math.log(log_values.shape[dim])


def moment_bald(pool: RegressionPool) -> torch.Tensor:
    """The moment-matched upper bound on I(y; w), N values (nats):
    1/2 log(mean_k var_k + Var_k mu_k) - 1/2 mean_k log var_k, the first log as a log-sum."""
    log_spread = torch.log((pool.centred_N_K**2).mean(1))  # -inf where the samples agree
    total = torch.logaddexp(_log_mean_exp(pool.log_var_N_K, 1), log_spread)
    return (0.5 * (total - pool.log_var_N_K.mean(1))).clamp(min=0.0)


#: The sampled estimator draws in the rescaled units, where a variance below this is treated
#: as this (the estimate then saturates near 1/2 log(spread / floor), about 345 nats).
SAMPLED_VARIANCE_FLOOR = 1e-300


def mixture_entropy_sampled(mean: torch.Tensor, var: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Monte Carlo H of each row's K-component equal-weight Gaussian mixture (nats)."""
    N, K = mean.shape
    per = max(1, num_samples // K)
    z = torch.randn(N, K, per, generator=generator, dtype=torch.float64).to(mean.device)
    y = (mean[:, :, None] + var.sqrt()[:, :, None] * z).reshape(N, 1, K * per)  # draws, stratified by component
    log_p = -0.5 * ((y - mean[:, :, None]) ** 2 / var[:, :, None] + torch.log(2 * math.pi * var[:, :, None]))  # N x K x S
    log_mix = torch.logsumexp(log_p, dim=1) - math.log(K)
    return -log_mix.mean(1)


def sampled_bald(pool: RegressionPool, num_samples: int = 4096, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """I(y; w) with H[mixture] by Monte Carlo (module docstring), in the pool's rescaled units."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    var = pool.log_var_N_K.exp().clamp(min=SAMPLED_VARIANCE_FLOOR)
    conditional = 0.5 * (LOG_2PI_E + torch.log(var)).mean(1)
    return (mixture_entropy_sampled(pool.centred_N_K, var, num_samples, generator) - conditional).clamp(min=0.0)


def _greedy_logdet(features_N_F: torch.Tensor, log_noise_N: torch.Tensor, batch_size: int, generator: torch.Generator,
                   given: int = 0) -> tuple[list[int], list[float], dict]:
    """Greedy max of 1/2 log det(F_B F_B^T + diag(noise_B)) - 1/2 sum log noise_B by pivoted
    Cholesky: picks, each pick's gain (nats) and an info dict. The first ``given`` rows are
    conditioned on first (already labelled: bmdal_reg's TP-mode) and never picked; picks index the rest.

    Numerics that hold at any legal magnitude: the noise enters as its log; each point keeps
    r_n, its variance given the batch so far *without* the noise (floored at 0, so d_n = r_n +
    noise_n >= noise_n), and its gain is 1/2 log(d_n / noise_n) = 1/2 softplus(log r_n - log
    noise_n): never negative, never NaN or inf. Once every remaining r_n is rounding error
    (below ``RESIDUAL_EPSILONS`` x eps x picks of its prior variance) the features' rank is
    exhausted: the rest of the batch is drawn uniformly at random (bmdal_reg does the same when
    its next diagonal entry is not positive), with gain 0, and ``info["rank_exhausted_after"]``
    says after how many picks."""
    N = features_N_F.shape[0]
    r_N = (features_N_F**2).sum(1)  # f_n's variance given nothing
    tolerance_N = RESIDUAL_EPSILONS * torch.finfo(torch.float64).eps * r_N
    noise_N = log_noise_N.exp()  # may underflow to 0 where the noise is negligible: only the pivot uses it
    factors_N_b = torch.zeros(N, given + batch_size, dtype=features_N_F.dtype, device=features_N_F.device)  # Cholesky columns
    available = torch.ones(N, dtype=torch.bool, device=features_N_F.device)
    available[:given] = False
    picks, gains, info = [], [], {}
    for j in range(given + batch_size):
        if j < given:
            i = j
        else:
            explained = r_N <= tolerance_N * (j + 1)
            gain_N = 0.5 * F.softplus(torch.log(r_N) - log_noise_N)
            gain_N = torch.where(available & ~explained, gain_N, torch.full_like(gain_N, -math.inf))
            i = int(torch.argmax(gain_N))  # ties: the lowest position
            if gain_N[i] == -math.inf:
                rest = available.nonzero().flatten()
                rest = rest[torch.randperm(len(rest), generator=generator)[: given + batch_size - j].to(rest.device)]
                info["rank_exhausted_after"] = len(picks)
                picks += (rest - given).tolist()
                gains += [0.0] * len(rest)
                break
            picks.append(i - given)
            gains.append(float(gain_N[i]))
            available[i] = False
        # Column i of the covariance K = F F^T + diag(noise), minus what the earlier picks explain.
        column = features_N_F @ features_N_F[i]
        column[i] += noise_N[i]
        if j:
            column -= factors_N_b[:, :j] @ factors_N_b[i, :j]
        pivot = float(r_N[i]) + float(noise_N[i])
        c_new = column / math.sqrt(pivot) if pivot > 0 else torch.zeros_like(column)
        factors_N_b[:, j] = c_new
        r_N = (r_N - c_new**2).clamp(min=0.0)
    return picks, gains, info


def gaussian_joint(pool: RegressionPool, batch_size: int, generator: Optional[torch.Generator] = None) -> tuple[list[int], list[float], dict]:
    """Greedy batch by the Gaussian approximation of I(y_B; w) (module docstring). Scores: each
    pick's gain; their running sum is the batch's information."""
    K = pool.centred_N_K.shape[1]
    features = pool.centred_N_K / math.sqrt(K)  # F F^T = population covariance over k
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return _greedy_logdet(features, _log_mean_exp(pool.log_var_N_K, 1), batch_size, generator)


def batch_information(mean: torch.Tensor, var: torch.Tensor, batch) -> float:
    """Closed form 1/2 log det(Sigma_B + diag(s_B)) - 1/2 sum log s_B, for checks and reports."""
    batch = torch.as_tensor(batch, dtype=torch.long)
    K = mean.shape[1]
    centred = (mean[batch] - mean[batch].mean(1, keepdim=True)) / math.sqrt(K)
    noise = var[batch].mean(1)
    return float(0.5 * torch.logdet(centred @ centred.t() + torch.diag(noise)) - 0.5 * torch.log(noise).sum())


def maxdet(embeddings_N_D: torch.Tensor, noise: float, batch_size: int, labelled_embeddings: Optional[torch.Tensor] = None,
           generator: Optional[torch.Generator] = None, log_noise: Optional[float] = None) -> tuple[list[int], list[float], dict]:
    """MaxDet on the linear kernel of the features (bmdal_reg's "maxdet" with the "ll" kernel and
    noise sigma^2): greedy max of log det(Phi_B Phi_B^T + sigma^2 I), given the labelled points'
    features when passed (TP-mode: the batch's information beyond what they already tell).
    Scores: each pick's gain, 1/2 log(d_n / sigma^2). ``log_noise`` (log sigma^2), when given,
    replaces ``noise``: features rescaled by 2^e come with log noise + 2 e ln 2, the same picks."""
    features = embeddings_N_D.double()
    given = 0
    if labelled_embeddings is not None and len(labelled_embeddings):
        given = len(labelled_embeddings)
        features = torch.cat([labelled_embeddings.double().to(features.device), features])
    log_noise = math.log(noise) if log_noise is None else log_noise
    log_noise_N = torch.full((features.shape[0],), log_noise, dtype=torch.float64, device=features.device)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return _greedy_logdet(features, log_noise_N, batch_size, generator, given)
