"""BatchBALD for items made of several label variables that are independent given the weights:
the L binary labels of a multi-label item, the pixels of a segmentation mask.

An item's variables enter the batch's joint together: I(y_B; w) is over every variable of every
item in B. Two ways to compute it:

- exact, by the product encoding: an item with V variables of C values is one categorical
  variable with C^V values, p(y | w_k) = prod_v p(y_v | w_k) (``product_log_probs``), and
  ``batchbald`` runs on that, with its own exact-then-sampled joint and bounds (exact while the
  batch's C^(V n) configurations fit in its ``num_samples``);
- sampled, when C^V is too large to encode (``sampled_batchbald``): H(y_B) = -E log p_mix(y_B)
  estimated with S draws from the mixture (S / K per weight sample w_k, each draw's variables
  from p(. | w_k)); the draws of each candidate are fixed for the whole selection (common random
  numbers), so every greedy step compares candidates on the same draws. E_w H(y_B | w) is a
  sum of per-variable entropies, exact.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from batchal.acquisition.scores import conditional_entropy


def product_log_probs(log_probs_N_K_V_C: torch.Tensor) -> torch.Tensor:
    """N x K x C^V: log p(y_1..y_V | w_k) = sum_v log p(y_v | w_k), configurations in row-major
    order (the last variable fastest)."""
    N, K, V, C = log_probs_N_K_V_C.shape
    out = log_probs_N_K_V_C[:, :, 0, :]
    for v in range(1, V):
        out = (out[:, :, :, None] + log_probs_N_K_V_C[:, :, v, None, :]).reshape(N, K, -1)
    return out


def conditional_entropy_items(log_probs_N_K_V_C: torch.Tensor) -> torch.Tensor:
    """E_w H(y_1..y_V | w) = sum_v E_w H(y_v | w), per item (nats)."""
    N, K, V, C = log_probs_N_K_V_C.shape
    return conditional_entropy(log_probs_N_K_V_C.permute(0, 2, 1, 3).reshape(N * V, K, C)).double().reshape(N, V).sum(1)


def _draw_log_likelihoods(log_probs_n_K_V_C: torch.Tensor, components_S: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For S draws y^s ~ p(. | w_{k_s}) of one block of items: log p(y^s | w_k) for every k,
    summed over the item's variables: n x S x K."""
    n, K, V, C = log_probs_n_K_V_C.shape
    S = components_S.shape[0]
    probs = log_probs_n_K_V_C.double().exp()[:, components_S]  # n x S x V x C: each draw's own component
    flat = probs.reshape(-1, C)
    values = torch.multinomial(flat.cpu() / flat.sum(1, keepdim=True).cpu(), 1, generator=generator).reshape(n, S, V).to(probs.device)
    # log p(y^s_v | w_k) for all k: gather the drawn value from every component's distribution.
    lp = log_probs_n_K_V_C.double()  # n x K x V x C
    index = values[:, None, :, :].permute(0, 1, 3, 2)  # n x 1 x V x S
    gathered = torch.gather(lp, 3, index.expand(n, K, V, S))  # n x K x V x S
    return gathered.sum(2).permute(0, 2, 1)  # n x S x K


def sampled_batchbald(
    log_probs_N_K_V_C: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int = 1024,
    memory_bytes: int = 1 << 30,
) -> tuple[list[int], list[float], dict]:
    """Greedy BatchBALD over factorised items with the sampled joint (module docstring). Scores:
    the estimated I(y_1..y_n; w) after pick n (nats)."""
    N, K, V, C = log_probs_N_K_V_C.shape
    per = max(1, num_samples // K)
    S = per * K
    if N * S * K * 8 > memory_bytes:
        raise ValueError(f"sampled BatchBALD would hold N x S x K = {N} x {S} x {K} float64 log-likelihoods "
                         f"({N * S * K * 8 / 2**20:.0f} MiB) above memory_bytes = {memory_bytes / 2**20:.0f} MiB; "
                         "lower num_samples, prefilter the pool or raise memory_bytes")
    components_S = torch.arange(K).repeat_interleave(per).to(log_probs_N_K_V_C.device)
    step = max(1, (1 << 24) // max(1, S * K * V))
    draws_N_S_K = torch.cat([_draw_log_likelihoods(log_probs_N_K_V_C[i : i + step], components_S, generator)
                             for i in range(0, N, step)])
    conditional_N = conditional_entropy_items(log_probs_N_K_V_C)
    joint_S_K = torch.zeros(S, K, dtype=torch.float64, device=draws_N_S_K.device)  # log p(y_B^s | w_k)
    available = torch.ones(N, dtype=torch.bool, device=draws_N_S_K.device)
    picks, scores = [], []
    conditional_batch = 0.0
    for _ in range(batch_size):
        # H(y_B, y_n) estimated on the same draws for every candidate.
        joint_N = -(torch.logsumexp(joint_S_K[None] + draws_N_S_K, dim=2) - math.log(K)).mean(1)
        gains = joint_N - conditional_N - conditional_batch
        gains = torch.where(available, gains, torch.full_like(gains, -math.inf))
        i = int(torch.argmax(gains))
        picks.append(i)
        available[i] = False
        joint_S_K += draws_N_S_K[i]
        conditional_batch += float(conditional_N[i])
        scores.append(float(joint_N[i]) - conditional_batch)
    return picks, scores, {"num_samples": S, "estimator": "sampled"}


def sampled_joint_information(log_probs_b_K_V_C: torch.Tensor, num_samples: int, generator: torch.Generator) -> float:
    """I(y_B; w) of a given batch by the sampled estimator (for checks)."""
    b, K, V, C = log_probs_b_K_V_C.shape
    per = max(1, num_samples // K)
    components_S = torch.arange(K).repeat_interleave(per)
    # One draw of the whole batch per s: every item from the same component k_s.
    draws = _draw_log_likelihoods(log_probs_b_K_V_C, components_S, generator)  # b x S x K
    joint = -(torch.logsumexp(draws.sum(0), dim=1) - math.log(K)).mean()
    return float(joint - conditional_entropy_items(log_probs_b_K_V_C).sum())


def exact_joint_information(log_probs_b_K_V_C: torch.Tensor) -> float:
    """I(y_B; w) by enumerating every configuration of the batch's variables (tiny cases only)."""
    b, K, V, C = log_probs_b_K_V_C.shape
    items = product_log_probs(log_probs_b_K_V_C.double())  # b x K x C^V
    joint_K = items[0]
    for n in range(1, b):
        joint_K = (joint_K[:, :, None] + items[n][:, None, :]).reshape(K, -1)
    log_mix = torch.logsumexp(joint_K, 0) - math.log(K)
    entropy = -(log_mix.exp() * log_mix).sum()
    return float(entropy - conditional_entropy_items(log_probs_b_K_V_C).sum())


def choose_pixels(shape: tuple[int, ...], count: Optional[int], generator: torch.Generator) -> torch.Tensor:
    """``count`` flat positions of a spatial shape drawn uniformly without replacement (all of
    them, in order, when count is None or at least their number)."""
    total = math.prod(shape)
    if count is None or count >= total:
        return torch.arange(total)
    return torch.sort(torch.randperm(total, generator=generator)[:count]).values
