"""BatchBALD (Kirsch, van Amersfoort, Gal 2019): greedy maximisation of I(y_1..y_b; w).

The batch score is

    a(x_1..x_n) = I(y_1..y_n; w) = H(y_1..y_n) - sum_i E_w H(y_i | w),

with w uniform over the K MC-dropout masks. It is submodular, so greedy selection is
(1 - 1/e)-approximate: at step n the gain of a candidate x is

    gain(x) = H(y_S, y_x) - H(y_S) - E_w H(y_x | w),

and the first step is exactly BALD.

Joint entropy of the chosen set S plus a candidate x, for all M configurations y_S:

    p(y_S = m, y_x = c) = (1/K) sum_k P[m, k] p(y_x = c | w_k),   P[m, k] = p(y_S = m | w_k),

one (M x K) @ (K x C) product per candidate, done as (M x K) @ (K x b*C) for a block of b
candidates. P is exact (all C^|S| configurations) while C^|S| <= num_samples; past that it holds
M = (num_samples // K) * K sampled configurations: S draws per mask w_k, each chosen point's
label drawn from p(y | w_k), so the configurations come from the marginal
q_m = p(y_S = m) = mean_k P[m, k]; the importance-sampled estimate is

    H(y_S, y_x) ~= (1/M) sum_m sum_c -p(m, c) log p(m, c) / q_m.

Unlike the reference code, which redraws every sample at every step, a new chosen point extends
the existing samples (its label drawn from p(y | w_k) of each sample's own mask k), which costs
O(M K) instead of O(|S| M K) and keeps consecutive gains comparable.

Lazy greedy (Minoux 1978): gains only shrink as S grows (submodularity), so a candidate's last
computed gain bounds its current one. Candidates are re-evaluated in order of their bound, a
few at a time, until the best fresh gain beats every stale bound. With exact joint entropies
this returns the same picks as plain greedy (ties broken towards the lowest pool position in
both); it usually re-evaluates a small fraction of the pool.

Memory: besides the input, O(N) for the gains, O(M K) for P and at most ``memory_bytes``
(default 256 MiB) for the block of candidate joint probabilities (two M x b*C buffers),
whatever N.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from batchal.acquisition.scores import conditional_entropy

#: Default working memory for one block of candidate joint probabilities.
DEFAULT_MEMORY_BYTES = 256 * 2**20


class BatchBALDWarning(UserWarning):
    """The estimate is unreliable: too few samples, or the batch score is near its log K ceiling."""


@dataclass
class BatchBALDResult:
    """Picks in order, the batch's mutual information after each pick, and work counters."""

    indices: list[int]
    scores: list[float]
    exact_picks: int  # picks made with exact joint entropies
    evaluations: int  # candidate gains computed over the whole selection


#: Exact configurations whose probability p(y_S = m) falls below this are dropped. Each dropped
#: row changes a joint entropy by less than 1e-18 nats, far below float64 rounding of the sums.
PRUNE_PROBABILITY = 1e-20


class _JointProbabilities:
    """P[m, k] = p(y_S = m | w_k) for the chosen set S, exact or sampled, with entropy weights.

    Exact: every configuration of S (those of probability below PRUNE_PROBABILITY dropped),
    weights 1. It stays exact while the configurations kept number at most num_samples: never
    shorter than the C^|S| <= num_samples rule, much longer when predictions are confident.
    Sampled: M = (num_samples // K) * K label configurations, S per mask; identical
    configurations are merged with their counts, so the rows are the distinct ones and
    weight_u = count_u / (M q_u).
    """

    def __init__(self, K: int, num_samples: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator):
        self.K = K
        self.num_samples = num_samples
        self.generator = generator
        self.probs_M_K = torch.ones(1, K, dtype=dtype, device=device)
        self.weights_M = torch.ones(1, dtype=dtype, device=device)
        self.chosen_probs: list[torch.Tensor] = []  # K x C per chosen point
        self.sampled = False
        self.labels_M_n: torch.Tensor | None = None  # sampled configurations, one row per sample
        self.entropy = 0.0  # H(y_S), exact or estimated

    @property
    def M(self) -> int:
        return self.probs_M_K.shape[0]

    def add(self, probs_K_C: torch.Tensor) -> None:
        K, C = probs_K_C.shape
        self.chosen_probs.append(probs_K_C)
        if not self.sampled:
            # Exact: every configuration m of S extended by every class c of the new point.
            probs_M_K = (self.probs_M_K[:, None, :] * probs_K_C.t()[None, :, :]).reshape(-1, K)
            probs_M_K = probs_M_K[probs_M_K.mean(1) >= PRUNE_PROBABILITY]
            if probs_M_K.shape[0] <= self.num_samples:
                self.probs_M_K = probs_M_K
                probs_M = probs_M_K.mean(1)
                self.weights_M = torch.ones_like(probs_M)
                self.entropy = float(-torch.special.xlogy(probs_M, probs_M).sum())
                return
            self.sampled = True
            S = self.num_samples // K
            self.labels_M_n = torch.stack([self._draw_labels(p, S) for p in self.chosen_probs], dim=1)
        else:
            new_M = self._draw_labels(probs_K_C, self.num_samples // K)
            self.labels_M_n = torch.cat([self.labels_M_n, new_M[:, None]], dim=1)
        distinct_U_n, counts_U = torch.unique(self.labels_M_n, dim=0, return_counts=True)
        log_probs_U_K = torch.zeros(distinct_U_n.shape[0], K, dtype=probs_K_C.dtype, device=probs_K_C.device)
        for i, chosen_K_C in enumerate(self.chosen_probs):
            log_probs_U_K += chosen_K_C.log().t()[distinct_U_n[:, i].to(probs_K_C.device)]
        self.probs_M_K = log_probs_U_K.exp()
        q_U = self.probs_M_K.mean(1)
        frequency_U = counts_U.to(q_U) / self.labels_M_n.shape[0]
        self.weights_M = frequency_U / q_U
        self.entropy = float(-(frequency_U * q_U.log()).sum())

    def _draw_labels(self, probs_K_C: torch.Tensor, S: int) -> torch.Tensor:
        """S labels from p(y | w_k) for every mask k: a vector of K*S labels, mask-major."""
        return torch.multinomial(probs_K_C.cpu(), S, replacement=True, generator=self.generator).flatten()

    def joint_entropies(self, probs_b_K_C: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
        """H(y_S, y_x) for each candidate x of the block, exact or importance-sampled.

        ``workspace``: optional flat buffer of at least 2 * M * b * C elements, reused to avoid
        allocating (and page-faulting) the large intermediates at every block.
        """
        b, K, C = probs_b_K_C.shape
        size = self.M * b * C
        if workspace is None:
            workspace = torch.empty(2 * size, dtype=self.probs_M_K.dtype, device=self.probs_M_K.device)
        joint_M_bC = workspace[:size].view(self.M, b * C)
        log_M_bC = workspace[size : 2 * size].view(self.M, b * C)
        torch.matmul(self.probs_M_K, probs_b_K_C.permute(1, 0, 2).reshape(K, b * C), out=joint_M_bC)
        joint_M_bC /= K
        # -p log p with 0 log 0 = 0: log of max(p, tiny) is finite, times p = 0 gives 0.
        torch.clamp(joint_M_bC, min=torch.finfo(joint_M_bC.dtype).tiny, out=log_M_bC)
        log_M_bC.log_()
        log_M_bC *= joint_M_bC
        return -(self.weights_M @ log_M_bC).view(b, C).sum(1)


def batchbald(
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    *,
    num_samples: int = 40_000,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    lazy: bool = True,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: Optional[Callable[[int, int], None]] = None,
) -> BatchBALDResult:
    """Select ``batch_size`` pool positions by greedy BatchBALD (inputs already validated).

    ``progress(done, total)`` is called after every pick.
    """
    N, K, C = log_probs_N_K_C.shape
    device = log_probs_N_K_C.device
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if num_samples // K < 10 and C ** min(batch_size - 1, 64) > num_samples:
        warnings.warn(
            f"num_samples={num_samples} gives only {num_samples // K} sampled configurations per mask (K={K}); "
            "the joint-entropy estimate will be noisy",
            BatchBALDWarning,
            stacklevel=4,
        )
    conditional_N = conditional_entropy(log_probs_N_K_C).to(dtype)
    joint = _JointProbabilities(K, num_samples, dtype, device, generator)

    def probs_of(indices: torch.Tensor) -> torch.Tensor:
        return log_probs_N_K_C[indices].to(dtype).exp()

    itemsize = torch.finfo(dtype).bits // 8

    def gains_of(indices: torch.Tensor) -> torch.Tensor:
        # Two M x (block * C) buffers fit in memory_bytes.
        block = min(len(indices), max(1, memory_bytes // (2 * joint.M * C * itemsize)))
        workspace = torch.empty(2 * joint.M * block * C, dtype=dtype, device=device)
        parts = [
            joint.joint_entropies(probs_of(indices[i : i + block]), workspace) for i in range(0, len(indices), block)
        ]
        return torch.cat(parts) - joint.entropy - conditional_N[indices]

    available_N = torch.ones(N, dtype=torch.bool, device=device)
    all_indices = torch.arange(N, device=device)
    # Step 1 is BALD (M = 1 configuration); its gains are every candidate's first bound.
    bound_N = gains_of(all_indices)
    evaluations = N
    indices: list[int] = []
    scores: list[float] = []
    exact_picks = 0
    conditional_sum = 0.0
    ceiling = math.log(K)
    warned_ceiling = False
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=device)

    for step in range(batch_size):
        if step > 0:
            if lazy:
                fresh_N = torch.zeros(N, dtype=torch.bool, device=device)
                block = 16
                while True:
                    stale_N = available_N & ~fresh_N
                    fresh_gains = torch.where(fresh_N, bound_N, neg_inf)
                    if fresh_N.any():
                        best_fresh = int(fresh_gains.argmax())
                        if not stale_N.any():
                            break
                        stale_bounds = torch.where(stale_N, bound_N, neg_inf)
                        best_stale = int(stale_bounds.argmax())
                        g, u = float(bound_N[best_fresh]), float(bound_N[best_stale])
                        if g > u or (g == u and best_fresh < best_stale):
                            break
                    else:
                        stale_bounds = torch.where(stale_N, bound_N, neg_inf)
                    count = min(block, int(stale_N.sum()))
                    candidates = stale_bounds.topk(count).indices
                    bound_N[candidates] = gains_of(candidates)
                    fresh_N[candidates] = True
                    evaluations += count
                    block = min(block * 2, 1024)
            else:
                candidates = available_N.nonzero().flatten()
                bound_N[candidates] = gains_of(candidates)
                evaluations += len(candidates)
        pick = int(torch.where(available_N, bound_N, neg_inf).argmax())
        gain = float(bound_N[pick])
        conditional_sum += float(conditional_N[pick])
        # Batch score I(y_1..y_n; w) = H(y_S, y_pick) - sum of conditional entropies.
        scores.append(gain + joint.entropy + float(conditional_N[pick]) - conditional_sum)
        indices.append(pick)
        exact_picks += 0 if joint.sampled else 1
        available_N[pick] = False
        if step + 1 < batch_size:
            joint.add(probs_of(torch.tensor([pick], device=device))[0])
        if not warned_ceiling and scores[-1] > 0.9 * ceiling and step + 1 < batch_size:
            warned_ceiling = True
            warnings.warn(
                f"the batch's mutual information ({scores[-1]:.3f} nats) is near its ceiling log K = {ceiling:.3f} "
                f"after {step + 1} picks; later picks are ranked mostly by estimator noise: use more MC samples K",
                BatchBALDWarning,
                stacklevel=4,
            )
        if progress is not None:
            progress(step + 1, batch_size)
    return BatchBALDResult(indices=indices, scores=scores, exact_picks=exact_picks, evaluations=evaluations)


def exact_joint_entropy(log_probs_n_K_C: torch.Tensor) -> float:
    """H(y_1..y_n) with w uniform over the K samples, by the incremental product over configurations.

    Costs C^n x K memory: for small n only (tests, diagnostics).
    """
    n, K, C = log_probs_n_K_C.shape
    joint = _JointProbabilities(K, max(C**n, 1), torch.float64, log_probs_n_K_C.device, torch.Generator())
    for i in range(n):
        joint.add(log_probs_n_K_C[i].double().exp())
    return joint.entropy
