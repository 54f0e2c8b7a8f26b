"""Per-point acquisition scores: functions N x K x C log-probabilities -> N scores.

Each takes ``log_probs_N_K_C`` (K MC-dropout samples of the predictive log-distribution over C
classes for N pool points) and returns a float64 tensor of N scores, higher = more worth
labelling. Work is done in float64 over chunks of the pool, so the extra memory is bounded
whatever N. ``0 * log 0`` is taken as 0, so a ``-inf`` log-probability never gives NaN.

Sources: BALD (Houlsby et al. 2011; Gal et al. 2017), variation ratios (Freeman 1965),
mean std (Kampffmeyer et al. 2016), least confidence and margin (Settles 2009, as in BADGE's
baselines "Conf" and "Marg").
"""

from __future__ import annotations

import math
from typing import Callable

import torch

_CHUNK_ELEMENTS = 1 << 17  # float64 elements per working chunk (1 MiB; its temporaries a few times that)


def _chunked(log_probs_N_K_C: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    N = log_probs_N_K_C.shape[0]
    per_row = max(1, log_probs_N_K_C[0].numel())
    step = max(1, _CHUNK_ELEMENTS // per_row)
    out_N = torch.empty(N, dtype=torch.float64, device=log_probs_N_K_C.device)
    for start in range(0, N, step):
        # Renormalised in float64: float32 inputs sum to 1 only up to ~1e-7.
        out_N[start : start + step] = fn(torch.log_softmax(log_probs_N_K_C[start : start + step].double(), dim=2))
    return out_N


def _mean_log_probs_n_C(log_probs_n_K_C: torch.Tensor) -> torch.Tensor:
    """log of the MC-averaged predictive distribution: logsumexp_k log p_k - log K."""
    return torch.logsumexp(log_probs_n_K_C, dim=1) - math.log(log_probs_n_K_C.shape[1])


def predictive_probs(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """The MC-averaged predictive distribution mean_k p(y | x_n, w_k), N x C in float64."""
    return log_probs_N_K_C.double().exp().mean(1)


def _entropy_of_log_probs(log_probs: torch.Tensor, dim: int) -> torch.Tensor:
    """-sum p log p along ``dim`` with 0 log 0 = 0."""
    probs = log_probs.exp()
    return -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(dim)


def entropy(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Predictive entropy H[y | x] = H[mean_k p(y | x, w_k)]  ->  entropies_N (nats)."""
    return _chunked(log_probs_N_K_C, lambda lp: _entropy_of_log_probs(_mean_log_probs_n_C(lp), dim=1))


def conditional_entropy(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Expected conditional entropy E_w H[y | x, w] = mean_k H[p(y | x, w_k)]  ->  N (nats)."""
    return _chunked(log_probs_N_K_C, lambda lp: _entropy_of_log_probs(lp, dim=2).mean(1))


def bald(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """BALD: I[y; w | x] = H[mean_k p_k] - mean_k H[p_k]  ->  N (nats, >= 0 up to rounding)."""

    def score(lp: torch.Tensor) -> torch.Tensor:
        return _entropy_of_log_probs(_mean_log_probs_n_C(lp), 1) - _entropy_of_log_probs(lp, 2).mean(1)

    return _chunked(log_probs_N_K_C, score)


def variation_ratios(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Variation ratios (Freeman 1965; Gal et al. 2017): the share of the K samples that do not
    vote for the modal class, 1 - max_c #{k : argmax_c' p_kc' = c} / K  ->  N, in [0, 1 - 1/C].

    Each sample votes for its most probable class (a tie inside one sample goes to the lowest
    class index). This counts votes, unlike ``least_confidence`` (1 - max of the mean
    prediction); with K = 1 it is 0 for every point.
    """

    def score(lp: torch.Tensor) -> torch.Tensor:
        n, K, C = lp.shape
        votes_n_C = torch.zeros(n, C, dtype=torch.float64, device=lp.device)
        votes_n_C.scatter_add_(1, lp.argmax(2), torch.ones(n, K, dtype=torch.float64, device=lp.device))
        return 1 - votes_n_C.amax(1) / K

    return _chunked(log_probs_N_K_C, score)


def mean_std(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Mean standard deviation: mean_c std_k p_kc (population std over the K samples)  ->  N."""
    return _chunked(log_probs_N_K_C, lambda lp: lp.exp().std(1, correction=0).mean(1))


def least_confidence(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Least confidence: 1 - max_c p_c on the mean prediction p = mean_k p_k  ->  N."""
    return _chunked(log_probs_N_K_C, lambda lp: 1 - _mean_log_probs_n_C(lp).exp().amax(1))


def margin(log_probs_N_K_C: torch.Tensor) -> torch.Tensor:
    """Margin: -(p_(1) - p_(2)), the gap between the two most likely classes of the mean prediction.

    Negated so that higher = more uncertain, like every other score. With C = 1 the margin is -1.
    """

    def score(lp: torch.Tensor) -> torch.Tensor:
        probs_n_C = _mean_log_probs_n_C(lp).exp()
        if probs_n_C.shape[1] < 2:
            return -torch.ones(probs_n_C.shape[0], dtype=probs_n_C.dtype, device=probs_n_C.device)
        top2 = probs_n_C.topk(2, dim=1).values
        return -(top2[:, 0] - top2[:, 1])

    return _chunked(log_probs_N_K_C, score)


#: Every per-point score by strategy name.
SCORE_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "entropy": entropy,
    "bald": bald,
    "variation_ratios": variation_ratios,
    "mean_std": mean_std,
    "least_confidence": least_confidence,
    "margin": margin,
}
