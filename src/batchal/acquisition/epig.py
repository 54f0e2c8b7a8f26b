"""EPIG (Bickford Smith, Foster, Farquhar, Kirsch, Gal et al. 2023): expected predictive
information gain on a target input distribution.

For a candidate x and target inputs x* drawn from the distribution the model will be used on,

    EPIG(x) = E_{x*} I(y; y* | x, x*)
            = E_{x*} sum_{c, c'} p(c, c') log( p(c, c') / (p(c) p*(c')) ),
    p(c, c') = (1/K) sum_k p(y = c | x, w_k) p(y* = c' | x*, w_k),

with w uniform over the K posterior samples (MC-dropout masks or ensemble members) and the
expectation over x* estimated by the mean over T target points. Since the joint's marginals
are p(c) and p*(c'), the sum is H(y) + H(y*) - H(y, y*): one pass of p log p over the joint. Unlike BALD, which rewards any
information about the weights, EPIG counts only the information that changes predictions on
the targets (nats; 0 <= EPIG <= BALD). Memory: one chunk of candidates x targets at a time.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 20  # float64 elements of the joint per chunk (8 MiB)


def epig(log_probs_N_K_C: torch.Tensor, target_log_probs_T_K_C: torch.Tensor) -> torch.Tensor:
    """EPIG of every candidate against the targets -> N scores (float64, nats)."""
    N, K, C = log_probs_N_K_C.shape
    T, K2, C2 = target_log_probs_T_K_C.shape
    if K2 != K:
        raise ValueError(f"target_log_probs has K = {K2} samples but log_probs_N_K_C has K = {K}; both must come from the same K posterior samples")
    device = log_probs_N_K_C.device
    target_T_K_C = torch.softmax(target_log_probs_T_K_C.to(device).double(), dim=2)
    target_entropy_T = -torch.special.xlogy(target_T_K_C.mean(1), target_T_K_C.mean(1)).sum(1)
    target_K_TC = target_T_K_C.permute(1, 0, 2).reshape(K, T * C2)
    out_N = torch.empty(N, dtype=torch.float64, device=device)
    # The joint of n candidates and t targets is (n C) x (t C) float64: at most _CHUNK_ELEMENTS
    # of it at a time (chunked over the targets too, so C = 1,000 stays bounded).
    t_step = max(1, min(T, _CHUNK_ELEMENTS // max(1, C * C2)))
    n_step = max(1, _CHUNK_ELEMENTS // max(1, C * t_step * C2)) if t_step == T else 1
    for start in range(0, N, n_step):
        probs_n_K_C = torch.softmax(log_probs_N_K_C[start : start + n_step].double(), dim=2)
        n = probs_n_K_C.shape[0]
        left_nC_K = probs_n_K_C.permute(0, 2, 1).reshape(n * C, K)
        joint_entropy_n_T = torch.empty(n, T, dtype=torch.float64, device=device)
        for t0 in range(0, T, t_step):
            t = min(t_step, T - t0)
            joint_nC_tC = (left_nC_K @ target_K_TC[:, t0 * C2 : (t0 + t) * C2]) / K
            joint_entropy_n_T[:, t0 : t0 + t] = -torch.special.xlogy(joint_nC_tC, joint_nC_tC).reshape(n, C, t, C2).sum((1, 3))
        marginal_n_C = probs_n_K_C.mean(1)
        entropy_n = -torch.special.xlogy(marginal_n_C, marginal_n_C).sum(1)
        out_N[start : start + n] = (entropy_n[:, None] + target_entropy_T[None, :] - joint_entropy_n_T).mean(1)
    return out_N.clamp_(min=0)
