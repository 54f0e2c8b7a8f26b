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
from typing import Callable, Optional

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


#: Items = a function (start, stop) -> the n x K x V x C log-probabilities of items start..stop-1,
#: so that the pool's items (pixels of a mask, binary labels) are never copied whole.
Items = Callable[[int, int], torch.Tensor]


def _draw_log_likelihoods(item_K_V_C: torch.Tensor, per: int, generator: torch.Generator, work_bytes: int = 1 << 26) -> torch.Tensor:
    """S = K * per draws of one item, ``per`` from each p(. | w_k) (the draws of component k are
    rows k*per..(k+1)*per-1), and log p(y^s | w_k') for every k', summed over the item's
    variables: S x K. The sum over V is an embedding-bag lookup (never an S x V x K array), and
    the draws are made ``chunk`` at a time so that their values (chunk x V integers, a few
    copies) stay within ``work_bytes``."""
    K, V, C = item_K_V_C.shape
    lp = item_K_V_C.double()
    probs = lp.exp()
    probs = (probs / probs.sum(2, keepdim=True)).cpu()
    table_VC_K = lp.permute(1, 2, 0).reshape(V * C, K)
    offsets = torch.arange(V, device=lp.device) * C  # position of (v, y_v) in the V*C table
    chunk = max(1, min(per, work_bytes // (3 * V * 8)))
    out = torch.empty(K * per, K, dtype=torch.float64, device=lp.device)
    for k in range(K):
        for start in range(0, per, chunk):
            count = min(chunk, per - start)
            values_V_n = torch.multinomial(probs[k], count, replacement=True, generator=generator)
            rows = k * per + start
            out[rows : rows + count] = torch.nn.functional.embedding_bag(values_V_n.t().to(lp.device) + offsets, table_VC_K, mode="sum")
    return out


def sampled_memory_floor(N: int, S: int, K: int) -> int:
    """Bytes sampled BatchBALD holds whatever its working budget: the pool's draws N x S x K
    (float64, the model of the joint) and the batch's S x K log-likelihoods."""
    return (N + 1) * S * K * 8


def sampled_batchbald(
    items: Items | torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    num_samples: int = 1024,
    memory_bytes: int = 1 << 30,
    pool_size: Optional[int] = None,
) -> tuple[list[int], list[float], dict]:
    """Greedy BatchBALD over factorised items with the sampled joint (module docstring). Scores:
    the estimated I(y_1..y_n; w) after pick n (nats).

    ``items``: an N x K x V x C tensor, or a function (start, stop) -> the items start..stop-1
    (with ``pool_size``) so that a strategy need not copy its pool. ``memory_bytes`` caps what
    this function holds above its input: the floor (``sampled_memory_floor``: the pool's N x S x
    K draws) plus working blocks within the rest; a cap that leaves no room for one candidate's
    working block is refused before anything is drawn, with the number needed."""
    if isinstance(items, torch.Tensor):
        tensor = items
        items, pool_size = (lambda start, stop: tensor[start:stop]), tensor.shape[0]
    N = pool_size
    first = items(0, 1)
    _, K, V, C = first.shape
    per = max(1, num_samples // K)
    S = per * K
    floor = sampled_memory_floor(N, S, K)
    per_candidate = 3 * S * K * 8  # the logsumexp's temporaries of one candidate's S x K block
    per_item = S * K * 8 + 4 * K * V * C * 8 + 3 * V * 8  # one item's draws, its probabilities (a few copies), one draw's values
    needed = floor + max(per_candidate, per_item)
    if needed > memory_bytes:
        raise ValueError(f"sampled BatchBALD holds the pool's N x S x K = {N} x {S} x {K} float64 log-likelihoods "
                         f"({floor / 2**20:.1f} MiB) and needs at least {math.ceil(needed / 2**20)} MiB in all, above "
                         f"memory_bytes = {memory_bytes / 2**20:.0f} MiB; raise memory_bytes to {math.ceil(needed / 2**20)} MiB, "
                         "lower num_samples or prefilter the pool")
    device = first.device
    draws_N_S_K = torch.empty(N, S, K, dtype=torch.float64, device=device)
    conditional_N = torch.empty(N, dtype=torch.float64, device=device)
    for i in range(N):
        item = items(i, i + 1)
        draws_N_S_K[i] = _draw_log_likelihoods(item[0], per, generator, work_bytes=memory_bytes - floor - 4 * K * V * C * 8)
        conditional_N[i] = conditional_entropy_items(item)[0]
    block = max(1, (memory_bytes - floor) // per_candidate)
    joint_S_K = torch.zeros(S, K, dtype=torch.float64, device=device)  # log p(y_B^s | w_k)
    available = torch.ones(N, dtype=torch.bool, device=device)
    picks, scores = [], []
    conditional_batch = 0.0
    joint_N = torch.empty(N, dtype=torch.float64, device=device)
    for _ in range(batch_size):
        # H(y_B, y_n) estimated on the same draws for every candidate, a block of candidates at a time.
        for start in range(0, N, block):
            joint_N[start : start + block] = -(torch.logsumexp(joint_S_K[None] + draws_N_S_K[start : start + block], dim=2)
                                               - math.log(K)).mean(1)
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
    """I(y_B; w) of a given batch by the sampled estimator (for checks): every draw s takes all
    of the batch's items from the same component k_s."""
    b, K, V, C = log_probs_b_K_V_C.shape
    # The batch as one item of b * V variables (independent given w).
    whole_K_V_C = log_probs_b_K_V_C.permute(1, 0, 2, 3).reshape(K, b * V, C)
    draws_S_K = _draw_log_likelihoods(whole_K_V_C, max(1, num_samples // K), generator)
    joint = -(torch.logsumexp(draws_S_K, dim=1) - math.log(K)).mean()
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
