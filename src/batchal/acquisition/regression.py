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
from typing import Optional

import torch

LOG_2PI_E = math.log(2 * math.pi * math.e)


def check_regression(mean_N_K, var_N_K=None, noise=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean float64 N x K, variances float64 N x K) after the checks, named in the errors."""
    if not isinstance(mean_N_K, torch.Tensor):
        raise ValueError(f"mean_N_K must be a torch.Tensor N x K (predictive means of K posterior samples), got {type(mean_N_K).__name__}")
    if mean_N_K.dim() != 2 or mean_N_K.shape[0] == 0 or mean_N_K.shape[1] == 0:
        raise ValueError(f"mean_N_K must be N x K with N, K >= 1, got shape {tuple(mean_N_K.shape)}")
    if not torch.isfinite(mean_N_K).all():
        raise ValueError("mean_N_K holds NaN or infinite values")
    mean = mean_N_K.detach().double()
    if (var_N_K is None) == (noise is None):
        raise ValueError("give the observation noise as var_N_K (N x K variances) or noise (one variance), exactly one of them")
    if var_N_K is not None:
        if not isinstance(var_N_K, torch.Tensor) or tuple(var_N_K.shape) != tuple(mean_N_K.shape):
            shape = tuple(var_N_K.shape) if isinstance(var_N_K, torch.Tensor) else type(var_N_K).__name__
            raise ValueError(f"var_N_K must be a tensor of mean_N_K's shape {tuple(mean_N_K.shape)}, got {shape}")
        var = var_N_K.detach().double()
    else:
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise):
            raise ValueError(f"noise must be a positive variance, got {noise!r}")
        var = torch.full_like(mean, float(noise))
    if not torch.isfinite(var).all() or not (var > 0).all():
        raise ValueError("the noise variances (var_N_K or noise) must be finite and > 0")
    return mean, var


def moment_bald(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """The moment-matched upper bound on I(y; w), N values (nats)."""
    total = var.mean(1) + mean.var(1, unbiased=False)
    return 0.5 * torch.log(total) - 0.5 * torch.log(var).mean(1)


def mixture_entropy_sampled(mean: torch.Tensor, var: torch.Tensor, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Monte Carlo H of each row's K-component equal-weight Gaussian mixture (nats)."""
    N, K = mean.shape
    per = max(1, num_samples // K)
    z = torch.randn(N, K, per, generator=generator, dtype=torch.float64).to(mean.device)
    y = (mean[:, :, None] + var.sqrt()[:, :, None] * z).reshape(N, 1, K * per)  # draws, stratified by component
    log_p = -0.5 * ((y - mean[:, :, None]) ** 2 / var[:, :, None] + torch.log(2 * math.pi * var[:, :, None]))  # N x K x S
    log_mix = torch.logsumexp(log_p, dim=1) - math.log(K)
    return -log_mix.mean(1)


def sampled_bald(mean: torch.Tensor, var: torch.Tensor, num_samples: int = 4096, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    conditional = 0.5 * (LOG_2PI_E + torch.log(var)).mean(1)
    return mixture_entropy_sampled(mean, var, num_samples, generator) - conditional


def _greedy_logdet(features_N_F: torch.Tensor, noise_N: torch.Tensor, batch_size: int, given: int = 0) -> tuple[list[int], list[float]]:
    """Greedy max of 1/2 log det(F_B F_B^T + diag(noise_B)) - 1/2 sum log noise_B by pivoted
    Cholesky: picks and each pick's gain (nats). The first ``given`` rows are conditioned on
    first (already labelled: bmdal_reg's TP-mode) and never picked; picks index the rest."""
    N = features_N_F.shape[0]
    d_N = (features_N_F**2).sum(1) + noise_N  # y_n's variance given nothing
    factors_N_b = torch.zeros(N, given + batch_size, dtype=features_N_F.dtype, device=features_N_F.device)  # Cholesky columns
    available = torch.ones(N, dtype=torch.bool, device=features_N_F.device)
    available[:given] = False
    picks, gains = [], []
    for j in range(given + batch_size):
        if j < given:
            i = j
        else:
            gain_N = 0.5 * torch.log(d_N.clamp(min=1e-300) / noise_N)
            gain_N = torch.where(available, gain_N, torch.full_like(gain_N, -math.inf))
            i = int(torch.argmax(gain_N))  # ties: the lowest position
            picks.append(i - given)
            gains.append(float(gain_N[i]))
            available[i] = False
        # Column i of the covariance K = F F^T + diag(noise), minus what the earlier picks explain.
        column = features_N_F @ features_N_F[i]
        column[i] += noise_N[i]
        if j:
            column -= factors_N_b[:, :j] @ factors_N_b[i, :j]
        c_new = column / math.sqrt(max(float(d_N[i]), 1e-300))
        factors_N_b[:, j] = c_new
        d_N = d_N - c_new**2
    return picks, gains


def gaussian_joint(mean: torch.Tensor, var: torch.Tensor, batch_size: int) -> tuple[list[int], list[float]]:
    """Greedy batch by the Gaussian approximation of I(y_B; w) (module docstring). Scores: each
    pick's gain; their running sum is the batch's information."""
    K = mean.shape[1]
    centred = (mean - mean.mean(1, keepdim=True)) / math.sqrt(K)  # F F^T = population covariance over k
    return _greedy_logdet(centred, var.mean(1), batch_size)


def batch_information(mean: torch.Tensor, var: torch.Tensor, batch) -> float:
    """Closed form 1/2 log det(Sigma_B + diag(s_B)) - 1/2 sum log s_B, for checks and reports."""
    batch = torch.as_tensor(batch, dtype=torch.long)
    K = mean.shape[1]
    centred = (mean[batch] - mean[batch].mean(1, keepdim=True)) / math.sqrt(K)
    noise = var[batch].mean(1)
    return float(0.5 * torch.logdet(centred @ centred.t() + torch.diag(noise)) - 0.5 * torch.log(noise).sum())


def maxdet(embeddings_N_D: torch.Tensor, noise: float, batch_size: int, labelled_embeddings: Optional[torch.Tensor] = None) -> tuple[list[int], list[float]]:
    """MaxDet on the linear kernel of the features (bmdal_reg's "maxdet" with the "ll" kernel and
    noise sigma^2): greedy max of log det(Phi_B Phi_B^T + sigma^2 I), given the labelled points'
    features when passed (TP-mode: the batch's information beyond what they already tell).
    Scores: each pick's gain, 1/2 log(d_n / sigma^2)."""
    features = embeddings_N_D.double()
    given = 0
    if labelled_embeddings is not None and len(labelled_embeddings):
        given = len(labelled_embeddings)
        features = torch.cat([labelled_embeddings.double().to(features.device), features])
    noise_N = torch.full((features.shape[0],), float(noise), dtype=torch.float64, device=features.device)
    return _greedy_logdet(features, noise_N, batch_size, given)
