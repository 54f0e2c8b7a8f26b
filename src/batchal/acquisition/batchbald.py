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

Grouped-configuration bounds: h is concave, so merging configurations into G groups (pi_g =
sum of their pi_m, ratio_g the pi-weighted mean of their R rows) can only raise
sum_m pi_m h_m(x): the grouped value is an upper bound on H(y_x | y_S), exact or estimated
alike, and splitting a group can only lower it again. The groups come from a few weighted
k-means steps on the rows of R (configurations that leave similar posteriors over w), seeded by
weighted farthest-first (the most probable configuration, then the one of largest
pi_m d(m, nearest seed)^2): near the ceiling every configuration's posterior sits on one or a
few masks, and seeds that miss a mask merge its configurations with others' and loosen the
bound by far more than the differences between the gains being compared. At every pick, lazy greedy first evaluates the 16 candidates of highest
bound; their best gain bounds the winner's from below, so only candidates whose bound beats it
get the grouped bound (G = ``bound_groups``, 256, at most M / 4; it costs G / M of an
evaluation); then, level by level while more than 256 remain and a level costs at most a
quarter of an evaluation, the survivors get the bound of a refinement that splits every group
in four (a finer partition, so a tighter bound). Lazy greedy then re-evaluates, in order of
bound, only candidates whose bound still beats the best fresh gain; it returns the same picks
as plain greedy (tested), because every bound it uses is an upper bound on the value plain
greedy computes.

Near the ceiling: I(y_S, y_x; w) <= H(w) = log K, so no candidate can add more than
log K - I(y_S; w). Once the best fresh gain comes within ``tie_tolerance`` of that cap, every
remaining candidate counts as tied with it and lazy greedy stops re-evaluating (without this,
once the batch's information reaches log K every gain is near zero, no stale bound is beaten
and every pick re-evaluates the whole pool). Far from the ceiling the rule never fires, so the
picks there are those of plain greedy.

Float32 screening: with float64 requested, candidate gains are first computed in float32
(about 2.5x cheaper), and every candidate whose float32 gain is within 2 * SCREEN_TOLERANCE of
the best is re-evaluated in float64; the pick is the float64 argmax, so the picks and scores
are those of the float64 computation (float32's error is far below the tolerance; tested).

Candidate products: the pool's probabilities are laid out K x N x C once (in the screening
precision), so a block of b candidates is a K x (b*C) view and one (M x K) @ (K x b*C) GEMM
gives every r_mc; probabilities are floored at 1e-30, which makes every r_mc positive and
r log r one log and one multiply with no clamp.

Memory: besides the input, O(N) for the gains, O(M K) for P and at most ``memory_bytes``
(default 256 MiB) for the block of candidate joint probabilities (two M x b*C buffers),
whatever N; plus, when they fit in ``memory_bytes``, the pool's probabilities in the screening
precision (K x N x C, so that a block of candidates is a view). A larger pool is read block by
block in order at each pick: a memory-mapped pool needs only the bounds and one block.
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
    bound_evaluations: int = 0  # grouped upper bounds computed (each far cheaper than an evaluation)
    pick_evaluations: list[int] | None = None  # candidate gains computed for each pick
    bound_refinements: int = 0  # finer levels of grouped bounds computed (over all picks)
    gemm_flops: int = 0  # floating-point operations in the candidate products (2 M K C per candidate)


#: Exact configurations whose probability p(y_S = m) falls below this are dropped. Each dropped
#: row changes a joint entropy by less than 1e-18 nats, far below float64 rounding of the sums.
PRUNE_PROBABILITY = 1e-20

#: Default tie tolerance near the ceiling (nats): candidates that could beat the best fresh gain
#: by less than this, because the batch's information is that close to log K, count as tied.
TIE_TOLERANCE = 0.02

#: Groups of configurations for the grouped upper bounds (None: stale bounds only).
BOUND_GROUPS = 256

#: Candidate probabilities are raised to at least this (1e-30 changes an entropy by under
#: 1e-28 nats) so that log r needs no clamp: r is a convex combination of them.
PROBABILITY_FLOOR = 1e-30

#: Grouped bounds are used once min(bound_groups, M / 4) reaches this many groups.
MIN_BOUND_GROUPS = 16

#: A finer level is computed only for more candidates than this (splitting the groups costs
#: about as much as evaluating a hundred candidates; fewer are left to lazy greedy).
REFINE_MIN_CANDIDATES = 256

#: The first level's k-means seeds are chosen among at most this many times G configurations.
SEED_SAMPLE = 8

#: Each refinement level of the grouped bounds splits every group in up to this many.
REFINE_FACTOR = 4

#: Bound on |gain in float32 - gain in float64| used by the float32 screening (nats). The
#: measured error is below 1e-5 (tests check it stays under a tenth of this bound).
SCREEN_TOLERANCE = 1e-3


def _distinct_rows(labels_M_n: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(labels_M_n, dim=0, return_counts=True) for labels in 0..C-1, in the same
    (lexicographic) order, through one int64 key per row while C^n fits (a 1-D unique is
    several times faster)."""
    n = labels_M_n.shape[1]
    if C**n >= 2**62:
        return torch.unique(labels_M_n, dim=0, return_counts=True)
    powers_n = C ** torch.arange(n - 1, -1, -1, dtype=torch.int64)
    keys_U, counts_U = torch.unique((labels_M_n * powers_n).sum(1), return_counts=True)
    return (keys_U[:, None] // powers_n) % C, counts_U


def _group_means(ids_M: torch.Tensor, pi_M: torch.Tensor, ratios_M_K: torch.Tensor, previous_G_K: torch.Tensor, rows: int):
    """One k-means update, weighted by pi: each group's pi-weighted mean of its members' rows of
    ``ratios_M_K`` and its weight, summed ``rows`` configurations at a time; a group with no
    member keeps its previous centre. Returns (centres_G_K, weight_G, used_G)."""
    G = previous_G_K.shape[0]
    weight_G = torch.zeros(G, dtype=pi_M.dtype, device=pi_M.device).index_add_(0, ids_M, pi_M)
    sums_G_K = torch.zeros_like(previous_G_K)
    for start in range(0, len(pi_M), rows):
        part = slice(start, start + rows)
        sums_G_K.index_add_(0, ids_M[part], pi_M[part, None] * ratios_M_K[part])
    used_G = weight_G > 0
    centres_G_K = torch.where(used_G[:, None], sums_G_K / weight_G.clamp(min=torch.finfo(pi_M.dtype).tiny)[:, None], previous_G_K)
    return centres_G_K, weight_G, used_G


class _JointProbabilities:
    """The chosen set S as weighted configurations m: pi_m and R[m, k] = p(y_S = m | w_k) / p(y_S = m).

    With this normalisation the joint entropy of S and a candidate x splits by the chain rule,

        H(y_S, y_x) = H(y_S) + sum_m pi_m h_m(x),   h_m(x) = -sum_c r_mc log r_mc,
        r_mc = (1/K) sum_k R[m, k] p(y_x = c | w_k) = p(y_x = c | y_S = m),

    and every factor is of order one (no underflow however many points are chosen).
    Exact: every configuration of S (those of probability below PRUNE_PROBABILITY dropped),
    pi_m = p(y_S = m); it stays exact while the configurations kept number at most num_samples:
    never shorter than the C^|S| <= num_samples rule, much longer when predictions are confident.
    Sampled: M = (num_samples // K) * K label configurations, S per mask, drawn from the marginal;
    identical configurations are merged, pi_u = count_u / M, which is the importance-sampled
    estimator (1/M) sum_m sum_c -p(m, c) log p(m, c) / q_m with its constant part taken out.
    """

    def __init__(self, K: int, num_samples: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator,
                 work_bytes: int = 1 << 25):
        self.K = K
        self.work_bytes = work_bytes  # temporaries of the updates and groupings are made within this, row block by row block
        self.num_samples = num_samples
        self.generator = generator
        self.ratios_M_K = torch.ones(1, K, dtype=dtype, device=device)
        self.pi_M = torch.ones(1, dtype=dtype, device=device)
        self.chosen_probs: list[torch.Tensor] = []  # K x C per chosen point
        self.sampled = False
        self.labels_M_n: torch.Tensor | None = None  # sampled configurations, one row per sample
        self.entropy = 0.0  # H(y_S), exact or estimated
        self._cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def M(self) -> int:
        return self.ratios_M_K.shape[0]

    def add(self, probs_K_C: torch.Tensor) -> None:
        K, C = probs_K_C.shape
        self._cast.clear()
        self.chosen_probs.append(probs_K_C)
        if not self.sampled:
            # Exact: every configuration m of S extended by every class c of the new point, made
            # a block of configurations at a time (never the whole M x C x K product).
            M = self.M
            rows = self._rows(C * K * 8 * 3)
            conditional_M_C = torch.cat([self._extend(start, rows, probs_K_C)[1] for start in range(0, M, rows)])
            pi_MC = self.pi_M[:, None] * conditional_M_C  # p(y_S = m, y_x = c)
            keep_MC = pi_MC >= PRUNE_PROBABILITY
            kept = int(keep_MC.sum())
            if kept <= self.num_samples:
                ratios = torch.empty(kept, K, dtype=self.ratios_M_K.dtype, device=self.ratios_M_K.device)
                filled = 0
                for start in range(0, M, rows):
                    joint_m_C_K, conditional_m_C = self._extend(start, rows, probs_K_C)
                    keep = keep_MC[start : start + rows]
                    block = (joint_m_C_K / conditional_m_C.clamp(min=torch.finfo(pi_MC.dtype).tiny)[:, :, None])[keep]
                    ratios[filled : filled + len(block)] = block
                    filled += len(block)
                self.ratios_M_K, self.pi_M = ratios, pi_MC[keep_MC]
                self.entropy = float(-torch.special.xlogy(self.pi_M, self.pi_M).sum())
                return
            self.sampled = True
            S = self.num_samples // K
            self.labels_M_n = torch.stack([self._draw_labels(p, S) for p in self.chosen_probs], dim=1)
        else:
            new_M = self._draw_labels(probs_K_C, self.num_samples // K)
            self.labels_M_n = torch.cat([self.labels_M_n, new_M[:, None]], dim=1)
        self.ratios_M_K = None  # rebuilt from the labels: the old configurations' ratios are not needed
        distinct_U_n, counts_U = _distinct_rows(self.labels_M_n, C)
        log_probs_U_K = torch.zeros(distinct_U_n.shape[0], K, dtype=probs_K_C.dtype, device=probs_K_C.device)
        for i, chosen_K_C in enumerate(self.chosen_probs):
            log_probs_U_K += chosen_K_C.log().t()[distinct_U_n[:, i].to(probs_K_C.device)]
        del distinct_U_n
        log_q_U = torch.logsumexp(log_probs_U_K, dim=1) - math.log(K)
        self.ratios_M_K = log_probs_U_K.sub_(log_q_U[:, None]).exp_()  # in place: one U x K array
        self.pi_M = counts_U.to(log_q_U) / self.labels_M_n.shape[0]
        self.entropy = float(-(self.pi_M * log_q_U).sum())

    def _rows(self, bytes_per_row: int) -> int:
        """Rows of M processed at a time so that temporaries of ``bytes_per_row`` each stay within the work budget."""
        return max(1, self.work_bytes // max(1, bytes_per_row))

    def _extend(self, start: int, rows: int, probs_K_C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For configurations start..start+rows-1: p(y_S = m, y_x = c | w_k) / p(y_S = m) (m x C x K)
        and its mean over k, p(y_x = c | y_S = m) (m x C)."""
        joint_m_C_K = self.ratios_M_K[start : start + rows, None, :] * probs_K_C.t()[None, :, :]
        return joint_m_C_K, joint_m_C_K.mean(2)

    def _draw_labels(self, probs_K_C: torch.Tensor, S: int) -> torch.Tensor:
        """S labels from p(y | w_k) for every mask k: a vector of K*S labels, mask-major."""
        return torch.multinomial(probs_K_C.cpu(), S, replacement=True, generator=self.generator).flatten()

    def grouped(self, groups: int, dtype: torch.dtype, level: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The configurations merged into groups whose conditional entropies bound the exact ones
        from above (concavity of h): (ratios_G_K, pi_G). Level 0: at most ``groups`` groups from a
        few weighted k-means steps on the rows of R. Level l > 0: every group of level l - 1 split
        in up to REFINE_FACTOR by k-means among its own members (a finer partition, so a tighter
        bound, at REFINE_FACTOR times the cost; the split costs O(M K REFINE_FACTOR))."""
        key = ("grouped", groups, dtype, level)
        if key not in self._cast:
            if level == 0:
                ratios, pi = self.ratios(dtype), self.pi_M.to(dtype)
                G = min(groups, self.M)
                centres = ratios[self._spread_seeds(ratios, pi, G)]
                rows = self._rows(2 * (G + self.K) * ratios.element_size())
                for _ in range(3):
                    # Nearest centre: argmin_g |c_g|^2 - 2 r . c_g (|r|^2 is the same for every g), one GEMM per block of rows.
                    norms = (centres * centres).sum(1)[None, :]
                    assignment = torch.cat([torch.addmm(norms, ratios[i : i + rows], centres.t(), alpha=-2).argmin(1)
                                            for i in range(0, self.M, rows)])
                    centres, weight_G, used = _group_means(assignment, pi, ratios, centres, rows)
                assignment = (used.cumsum(0) - 1)[assignment]  # ids of the groups kept, 0..G'-1
                self._cast[key] = (centres[used], weight_G[used], assignment)
            else:
                self.grouped(groups, dtype, level - 1)
                self._cast[key] = self._split(*self._cast[("grouped", groups, dtype, level - 1)][2:], dtype)
        return self._cast[key][:2]

    @staticmethod
    def _spread_seeds(ratios_M_K: torch.Tensor, pi_M: torch.Tensor, G: int) -> torch.Tensor:
        """G configurations to start k-means from: the most probable, then greedily the one of
        largest pi_m d(m, nearest seed)^2 (the configuration adding most to the weighted k-means
        objective, which is what the grouped bound's looseness grows with). With more than
        SEED_SAMPLE G configurations the greedy runs on a systematic pi-weighted sample of
        SEED_SAMPLE G of them (deterministic; every configuration of probability above
        1 / (SEED_SAMPLE G) is in it), each weighted by how often it was drawn."""
        M = len(pi_M)
        if M > SEED_SAMPLE * G:
            quantiles = (torch.arange(SEED_SAMPLE * G, dtype=torch.float64, device=pi_M.device) + 0.5) / (SEED_SAMPLE * G)
            cumulative = pi_M.double().cumsum(0)
            drawn = torch.searchsorted(cumulative / cumulative[-1], quantiles).clamp_(max=M - 1)
            candidates, weights = torch.unique_consecutive(drawn, return_counts=True)  # drawn is sorted
            weights = weights.to(pi_M.dtype)
        else:
            candidates, weights = torch.arange(M, device=pi_M.device), pi_M
        points = ratios_M_K[candidates]
        norms = (points * points).sum(1)
        seeds = [int(weights.argmax())]
        nearest = torch.full_like(weights, float("inf"))
        for _ in range(1, min(G, len(candidates))):
            c = seeds[-1]
            torch.minimum(nearest, (norms + norms[c] - 2 * (points @ points[c])).clamp_(min=0), out=nearest)
            seeds.append(int((weights * nearest).argmax()))
        return candidates[torch.tensor(seeds, device=pi_M.device)]

    def _split(self, assignment_M: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every group of ``assignment_M`` split in up to REFINE_FACTOR sub-groups by two k-means
        steps among its members, seeded in every group at once as ``_spread_seeds`` seeds the
        first level: its most probable configuration, then the largest pi_m d(m, nearest seed)^2."""
        ratios, pi = self.ratios(dtype), self.pi_M.to(dtype)
        M, K = ratios.shape
        s = REFINE_FACTOR
        G = int(assignment_M.max()) + 1
        positions = torch.arange(M, device=ratios.device)
        rows = self._rows(3 * K * ratios.element_size())
        centres_G_s_K = torch.zeros(G, s, K, dtype=dtype, device=ratios.device)
        valid_G_s = torch.zeros(G, s, dtype=torch.bool, device=ratios.device)
        nearest_M = torch.full((M,), float("inf"), dtype=dtype, device=ratios.device)
        score_M = pi.clone()
        for j in range(s):
            # Each group's configuration of largest score (the lowest position among ties).
            best_G = torch.full((G,), -1.0, dtype=dtype, device=ratios.device).scatter_reduce_(0, assignment_M, score_M, "amax")
            at_best = score_M == best_G[assignment_M]
            seed_G = torch.full((G,), M, dtype=torch.long, device=ratios.device).scatter_reduce_(
                0, assignment_M, torch.where(at_best, positions, M), "amin")
            new_G = (best_G > 0) & (seed_G < M)  # a group whose members all sit on seeds gets none
            if not new_G.any():
                break
            centres_G_s_K[new_G, j] = ratios[seed_G[new_G]]
            valid_G_s[new_G, j] = True
            seeded_M = new_G[assignment_M]
            distance_M = torch.cat([((ratios[i : i + rows] - centres_G_s_K[assignment_M[i : i + rows], j]) ** 2).sum(1)
                                    for i in range(0, M, rows)])
            nearest_M = torch.where(seeded_M, torch.minimum(nearest_M, distance_M), nearest_M)
            score_M = pi * torch.where(torch.isinf(nearest_M), 0.0, nearest_M)
        chunk = max(1, min(2**22 // (s * K), self._rows(3 * s * K * ratios.element_size())))
        for _ in range(2):
            sub_M = torch.empty(M, dtype=torch.long, device=ratios.device)
            norms_G_s = (centres_G_s_K * centres_G_s_K).sum(2).masked_fill_(~valid_G_s, float("inf"))
            for i in range(0, M, chunk):
                g = assignment_M[i : i + chunk]
                # argmin_j |c_j|^2 - 2 r . c_j over the group's own sub-centres
                dots = torch.bmm(centres_G_s_K[g], ratios[i : i + chunk, :, None])[:, :, 0]
                sub_M[i : i + chunk] = (norms_G_s[g] - 2 * dots).argmin(1)
            ids = assignment_M * s + sub_M
            centres, weight, used = _group_means(ids, pi, ratios, centres_G_s_K.view(G * s, K), rows)
            centres_G_s_K, valid_G_s = centres.view(G, s, K), used.view(G, s)
        return centres[used], weight[used], (used.cumsum(0) - 1)[ids]

    def conditional_entropies(self, probs_b_K_C: torch.Tensor, workspace: torch.Tensor | None = None, groups: Optional[int] = None,
                              level: int = 0) -> torch.Tensor:
        """H(y_x | y_S) = sum_m pi_m h_m(x) for each candidate x of the block, in the dtype of
        ``probs_b_K_C`` (float64 result); with ``groups``, the grouped upper bound instead."""
        b, K, C = probs_b_K_C.shape
        floored = probs_b_K_C.clamp(min=PROBABILITY_FLOOR) / K
        return self.conditional_entropies_of(floored.permute(1, 0, 2).reshape(K, b * C), C, workspace, groups, level)

    def ratios(self, dtype: torch.dtype) -> torch.Tensor:
        """R in ``dtype``: the array itself in its own dtype, one cached copy in the other."""
        if dtype == self.ratios_M_K.dtype:
            return self.ratios_M_K
        key = ("ratios", dtype)
        if key not in self._cast:
            self._cast[key] = self.ratios_M_K.to(dtype)
        return self._cast[key]

    def _operands(self, dtype: torch.dtype, groups: Optional[int], level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, pi) in ``dtype``, of the configurations or of their groups."""
        if groups is not None:
            return self.grouped(groups, dtype, level)
        return self.ratios(dtype), self.pi_M.to(dtype)

    def conditional_entropies_of(self, probs_K_bC: torch.Tensor, C: int, workspace: torch.Tensor | None = None,
                                 groups: Optional[int] = None, level: int = 0) -> torch.Tensor:
        """As ``conditional_entropies``, for candidates given as one K x (b*C) matrix (any row
        stride: a block of a K x N x C array is a view) of probabilities at least
        PROBABILITY_FLOOR, divided by K (so that r = R @ matrix with no M x K copy of R / K), so
        that every r_mc, a convex combination of them, is positive and its log finite. ``workspace``: optional flat buffer of at
        least 2 * M * b * C elements of that dtype, reused so the large intermediates are not
        allocated (and page-faulted) at every block."""
        dtype = probs_K_bC.dtype
        ratios_M_K, pi_M = self._operands(dtype, groups, level)
        M, bC = ratios_M_K.shape[0], probs_K_bC.shape[1]
        size = M * bC
        if workspace is None:
            workspace = torch.empty(2 * size, dtype=dtype, device=ratios_M_K.device)
        r_M_bC = workspace[:size].view(M, bC)
        log_M_bC = workspace[size : 2 * size].view(M, bC)
        torch.matmul(ratios_M_K, probs_K_bC, out=r_M_bC)  # r_mc = sum_k R[m, k] p(y_x = c | w_k) / K
        torch.log(r_M_bC, out=log_M_bC)
        log_M_bC *= r_M_bC
        return -(pi_M @ log_M_bC).view(bC // C, C).sum(1).double()

    def joint_entropies(self, probs_b_K_C: torch.Tensor) -> torch.Tensor:
        """H(y_S, y_x) for each candidate x of the block, exact or importance-sampled."""
        return self.entropy + self.conditional_entropies(probs_b_K_C)


def memory_floor(N: int, K: int, C: int, num_samples: int, batch_size: int, dtype: torch.dtype = torch.float64,
                 screen: bool = True) -> int:
    """Bytes ``batchbald`` holds above its input whatever ``memory_bytes`` says: its model of the
    joint and the per-point state. ``memory_bytes`` caps the total; what is left above this floor
    goes to blocks of candidates (and to the pool's probabilities when they fit in half of it).

    - the configurations' ratios R, M x K with M <= num_samples, in ``dtype``, twice while an
      exact step builds the next from the last; their float32 copy for screening; the grouped
      bounds' centres (at most a third of M x K in float32 over all refinement levels);
    - per configuration, about 12 vectors of 8 bytes (pi, the groupings' assignments and k-means
      state), and the sampled labels with their distinct rows, 3 x M x b integers;
    - per pool point, about 10 vectors of 8 bytes (conditional entropies, bounds, masks, gains).
    """
    itemsize = torch.finfo(dtype).bits // 8
    screening = 4 if screen and dtype == torch.float64 else 0
    model = num_samples * K * (2 * itemsize + screening + 4)
    per_configuration = num_samples * (12 * 8 + 3 * batch_size * 8)
    return model + per_configuration + N * 10 * 8


def _block_bytes(M: int, K: int, C: int, itemsize: int) -> int:
    """Bytes of one candidate's work: two M x C buffers and its probabilities' copies (K x C, four)."""
    return (2 * M * C + 4 * K * C) * itemsize


def batchbald(
    log_probs_N_K_C: torch.Tensor,
    batch_size: int,
    *,
    num_samples: int = 40_000,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    lazy: bool = True,
    screen: bool = True,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    tie_tolerance: float = TIE_TOLERANCE,
    bound_groups: Optional[int] = BOUND_GROUPS,
    progress: Optional[Callable[[int, int], None]] = None,
) -> BatchBALDResult:
    """Select ``batch_size`` pool positions by greedy BatchBALD (inputs already validated).

    screen: with dtype float64, compute candidate gains first in float32 (about 2.5x cheaper)
    and re-evaluate in float64 every candidate that could still be the best (float32 gain
    within 2 * SCREEN_TOLERANCE of the best): the picks and scores are the float64 ones.
    tie_tolerance: lazy greedy stops once log K - I(y_S; w), the most any candidate can add,
    is within this of the best fresh gain (nats; 0 turns the rule off).
    bound_groups: G for the grouped upper bounds (at most M / 4 groups of the M configurations;
    refined level by level for the candidates that survive; None: stale bounds only).
    ``progress(done, total)`` is called after every pick.
    """
    N, K, C = log_probs_N_K_C.shape
    device = log_probs_N_K_C.device
    floor = memory_floor(N, K, C, num_samples, batch_size, dtype, screen)
    needed = floor + _block_bytes(num_samples, K, C, torch.finfo(dtype).bits // 8)
    if memory_bytes < needed:
        raise ValueError(
            f"memory_bytes = {memory_bytes / 2**20:.0f} MiB is below what BatchBALD needs here: {math.ceil(needed / 2**20)} MiB "
            f"(its model of the joint, up to num_samples = {num_samples} configurations x K = {K} samples, and the state of "
            f"N = {N} pool points: {floor / 2**20:.0f} MiB, plus one candidate's work); raise memory_bytes to at least "
            f"{math.ceil(needed / 2**20)} MiB, or lower num_samples or prefilter the pool")
    work = memory_bytes - floor  # candidate blocks, the cached pool and the joint's temporaries share this
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if num_samples // K < 10 and C ** min(batch_size - 1, 64) > num_samples:
        warnings.warn(
            f"num_samples={num_samples} gives only {num_samples // K} sampled configurations per mask (K={K}); "
            "the joint-entropy estimate will be noisy",
            BatchBALDWarning,
            stacklevel=4,
        )
    conditional_N = conditional_entropy(log_probs_N_K_C).double()
    joint = _JointProbabilities(K, num_samples, dtype, device, generator, work_bytes=work)
    screen_dtype = torch.float32 if screen and dtype == torch.float64 else dtype
    tolerance = SCREEN_TOLERANCE if screen_dtype != dtype else 0.0

    def probs_of(indices, work_dtype: torch.dtype) -> torch.Tensor:
        """p(y | x, w_k) renormalised in the working precision: the chain rule needs sum_c p = 1."""
        probs = log_probs_N_K_C[indices].to(work_dtype).exp()
        return probs.div_(probs.sum(-1, keepdim=True)).clamp_(min=PROBABILITY_FLOOR)

    gemm_flops = 0
    # The screening precision's probabilities for the whole pool, laid out K x N x C so that a
    # block of candidates is a K x (b*C) view: computed once when they fit in memory_bytes (a
    # larger pool, memory-mapped say, is read block by block in order instead).
    cache_K_N_C = None
    cache_bytes = N * K * C * (torch.finfo(screen_dtype).bits // 8)
    if cache_bytes <= work // 2:
        work -= cache_bytes
        joint.work_bytes = work
        cache_K_N_C = torch.empty(K, N, C, dtype=screen_dtype, device=device)
        step = max(1, 2**19 // (K * C))  # a few MiB of temporaries at a time
        for i in range(0, N, step):
            cache_K_N_C[:, i : i + step] = probs_of(slice(i, i + step), screen_dtype).div_(K).permute(1, 0, 2)

    def matrix_of(selection, work_dtype: torch.dtype) -> torch.Tensor:
        """The candidates' probabilities / K as one K x (b*C) matrix (a slice of the cache is a view)."""
        if cache_K_N_C is not None and work_dtype == cache_K_N_C.dtype:
            block = cache_K_N_C[:, selection] if isinstance(selection, slice) else cache_K_N_C.index_select(1, selection)
        else:
            block = probs_of(selection, work_dtype).div_(K).permute(1, 0, 2)
        return block.reshape(K, -1)

    def gains_of(indices: Optional[torch.Tensor], work_dtype: torch.dtype, groups: Optional[int] = None, level: int = 0) -> torch.Tensor:
        """gain(x) = H(y_x | y_S) - E_w H(y_x | w), in float64, computed in ``work_dtype``
        (with ``groups``: the grouped upper bound on it at that refinement level), for the
        candidates ``indices`` or (None) the whole pool in order."""
        nonlocal gemm_flops
        itemsize = torch.finfo(work_dtype).bits // 8
        M = joint.M if groups is None else joint.grouped(groups, work_dtype, level)[1].shape[0]
        count = N if indices is None else len(indices)
        gemm_flops += 2 * M * K * C * count
        # Two M x b*C buffers and the block's probabilities (read, converted, laid out K x b*C) fit in the work budget.
        block = min(count, max(1, work // _block_bytes(M, K, C, itemsize)))
        workspace = torch.empty(2 * M * block * C, dtype=work_dtype, device=device)
        parts = [
            joint.conditional_entropies_of(
                matrix_of(slice(i, i + block) if indices is None else indices[i : i + block], work_dtype), C, workspace, groups, level
            )
            for i in range(0, count, block)
        ]
        return torch.cat(parts) - (conditional_N if indices is None else conditional_N[indices])

    available_N = torch.ones(N, dtype=torch.bool, device=device)
    # Step 1 is BALD (M = 1 configuration); its gains, screened like every later step's, are
    # every candidate's first bounds.
    screened = gains_of(None, screen_dtype)
    bound_N = screened + tolerance
    low_N = screened - tolerance  # lower bound of each candidate's current float64 gain
    exact_N = torch.full((N,), tolerance == 0, dtype=torch.bool, device=device)  # low_N == bound_N == the float64 gain
    evaluations = N
    bound_evaluations = 0  # grouped bounds computed (each G/M of an evaluation's cost)
    refinements = 0  # finer levels of grouped bounds computed
    indices: list[int] = []
    scores: list[float] = []
    exact_picks = 0
    pick_evaluations: list[int] = []
    conditional_sum = 0.0
    ceiling = math.log(K)
    warned_ceiling = False
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64, device=device)

    def screen_candidates(candidates: torch.Tensor) -> None:
        gains = gains_of(candidates, screen_dtype)
        bound_N[candidates] = gains + tolerance
        low_N[candidates] = gains - tolerance
        exact_N[candidates] = tolerance == 0

    def evaluate_leaders(count: int = 16) -> float:
        """Screen the ``count`` stale candidates of highest bound; the best fresh lower bound."""
        nonlocal evaluations
        stale_N = available_N & ~fresh_N
        leaders = torch.where(stale_N, bound_N, neg_inf).topk(min(count, int(stale_N.sum()))).indices
        screen_candidates(leaders)
        fresh_N[leaders] = True
        evaluations += len(leaders)
        return float(torch.where(fresh_N, low_N, neg_inf).max())

    for step in range(batch_size):
        if step > 0:
            fresh_N = torch.zeros(N, dtype=torch.bool, device=device)
            exact_N[:] = False
            if lazy:
                groups = None if bound_groups is None else min(bound_groups, joint.M // 4)
                if groups is not None and groups >= min(bound_groups, MIN_BOUND_GROUPS):
                    # Grouped bounds (upper bounds whatever the grouping; float32 error covered by
                    # SCREEN_TOLERANCE) cap the stale ones, level by level, for the candidates
                    # whose bound still beats the best gain evaluated so far (which bounds the
                    # winner's gain from below), while a level costs at most a quarter of an
                    # evaluation.
                    level = 0
                    while True:
                        best_fresh = evaluate_leaders()
                        candidates_N = available_N & ~fresh_N & (bound_N > best_fresh)
                        count = int(candidates_N.sum())
                        if count <= 16 or (level > 0 and (count <= REFINE_MIN_CANDIDATES or 4 * groups * REFINE_FACTOR**level > joint.M)):
                            break
                        if count > N // 2:  # the whole pool in order: blocks are views, no gather
                            torch.minimum(bound_N, gains_of(None, torch.float32, groups, level) + SCREEN_TOLERANCE, out=bound_N)
                        else:
                            candidates = candidates_N.nonzero().flatten()
                            bound_N[candidates] = torch.minimum(bound_N[candidates],
                                                                gains_of(candidates, torch.float32, groups, level) + SCREEN_TOLERANCE)
                        bound_evaluations += count
                        refinements += level > 0
                        level += 1
                # Lazy greedy: bounds only shrink, so stop once the best lower bound among the
                # re-evaluated candidates beats every stale bound.
                block = 16
                # No candidate can add more than log K - I(y_S; w) (in the exact regime).
                cap = ceiling - scores[-1]
                while True:
                    stale_N = available_N & ~fresh_N
                    if not stale_N.any():
                        break
                    stale_bounds = torch.where(stale_N, bound_N, neg_inf)
                    if fresh_N.any():
                        best_fresh = float(torch.where(fresh_N, low_N, neg_inf).max())
                        if best_fresh > float(stale_bounds.max()) or (tie_tolerance > 0 and cap <= best_fresh + tie_tolerance):
                            break
                    candidates = stale_bounds.topk(min(block, int(stale_N.sum()))).indices
                    screen_candidates(candidates)
                    fresh_N[candidates] = True
                    evaluations += len(candidates)
                    block = min(block * 2, 256)
            else:
                candidates = available_N.nonzero().flatten()
                screen_candidates(candidates)
                fresh_N[candidates] = True
                evaluations += len(candidates)
            # Every fresh candidate that could still be the best gets its float64 gain.
            best_low = float(torch.where(fresh_N, low_N, neg_inf).max())
            contenders = (fresh_N & ~exact_N & (bound_N >= best_low)).nonzero().flatten()
            if len(contenders):
                exact_gains = gains_of(contenders, dtype)
                bound_N[contenders] = low_N[contenders] = exact_gains
                exact_N[contenders] = True
            pick = int(torch.where(fresh_N & exact_N, bound_N, neg_inf).argmax())
        else:
            contenders = (~exact_N & (bound_N >= float(low_N.max()))).nonzero().flatten()
            if len(contenders):
                bound_N[contenders] = low_N[contenders] = gains_of(contenders, dtype)
                exact_N[contenders] = True
            pick = int(torch.where(exact_N, bound_N, neg_inf).argmax())
        gain = float(bound_N[pick])
        conditional_sum += float(conditional_N[pick])
        # Batch score I(y_1..y_n; w) = H(y_S, y_pick) - sum of conditional entropies.
        scores.append(gain + joint.entropy + float(conditional_N[pick]) - conditional_sum)
        indices.append(pick)
        exact_picks += 0 if joint.sampled else 1
        available_N[pick] = False
        bound_N[pick] = neg_inf
        if step + 1 < batch_size:
            joint.add(probs_of(pick, dtype))
        if not warned_ceiling and scores[-1] > 0.9 * ceiling and step + 1 < batch_size:
            warned_ceiling = True
            warnings.warn(
                f"the batch's mutual information ({scores[-1]:.3f} nats) is near its ceiling log K = {ceiling:.3f} "
                f"after {step + 1} picks; later picks are ranked mostly by estimator noise and count as tied within "
                f"{tie_tolerance} nats: raise K, the MC-dropout samples (mc_samples, --mc-samples), for more informative batches",
                BatchBALDWarning,
                stacklevel=4,
            )
        pick_evaluations.append(evaluations - sum(pick_evaluations))
        if progress is not None:
            progress(step + 1, batch_size)
    return BatchBALDResult(indices=indices, scores=scores, exact_picks=exact_picks, evaluations=evaluations,
                           bound_evaluations=bound_evaluations, pick_evaluations=pick_evaluations,
                           bound_refinements=refinements, gemm_flops=gemm_flops)


def exact_joint_entropy(log_probs_n_K_C: torch.Tensor) -> float:
    """H(y_1..y_n) with w uniform over the K samples, by the incremental product over configurations.

    Costs C^n x K memory: for small n only (tests, diagnostics).
    """
    n, K, C = log_probs_n_K_C.shape
    joint = _JointProbabilities(K, max(C**n, 1), torch.float64, log_probs_n_K_C.device, torch.Generator())
    for i in range(n):
        joint.add(torch.softmax(log_probs_n_K_C[i].double(), dim=-1))
    return joint.entropy
