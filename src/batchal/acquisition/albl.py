"""ALBL, active learning by learning (Hsu & Lin 2015), as BADGE's baseline: an EXP4.P bandit
whose experts are base strategies (Coreset and Conf, as the BADGE paper, plus the uniform
expert that Hsu & Lin and libact add), rewarded by the importance-weighted accuracy of the
retrained model on the points ALBL queried.

One query t: every expert i gives advice xi_i, a distribution over the K unlabelled points
(Conf: all mass on the least confident point; Coreset: on the k-center pick given the
labelled set and the picks so far; uniform: 1/K each). The query distribution is

    q_j = (1 - K p_min) sum_i w_i xi_i(j) / sum_i w_i + p_min,

the point j is drawn from q, and it is remembered with its probability q_j. When the model has
been retrained on the new labels, the reward is IW-ACC(f, tau) = 1/(n T) sum_{t <= tau}
[f(x_t) = y_t] / q_t (n: data set size, T: query budget) and every pending query updates

    w_i <- w_i exp(p_min / 2 (xi_i(j) r / q_j + vhat_i sqrt(ln(N / delta) / (K T)))),
    vhat_i = sum_j' xi_i(j') / q_j'.

In a batch of b, queries are drawn one after another without replacement with the weights of
the last update (the reward of a batch arrives only after it is labelled); each of its b
queries then receives the same reward. p_min = min(sqrt(ln N / (K T)), 1 / (2K)) keeps q a
distribution when K T is small (libact's sqrt(ln N / (K T)) alone can exceed 1 / K).

The state (log-weights, the pending queries, the queried points and their importance
weights) is a JSON-able dict that the runner keeps in its results rows.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from batchal.acquisition.coreset import squared_distances_to

EXPERTS = ("coreset", "conf", "uniform")


def new_state() -> dict:
    return {"log_weights": [0.0] * len(EXPERTS), "pending": [], "experts": list(EXPERTS)}


def iw_accuracy(correct: list[bool], probabilities: list[float], dataset_size: int, budget: int) -> float:
    """IW-ACC = 1/(n T) sum_t [f(x_t) = y_t] / q_t over the queried points."""
    if dataset_size < 1 or budget < 1:
        raise ValueError(f"dataset_size and budget must be >= 1, got {dataset_size} and {budget}")
    return float(sum(c / q for c, q in zip(correct, probabilities)) / (dataset_size * budget))


def update(state: dict, reward: float, pool_size: int, budget: int, delta: float = 0.1) -> dict:
    """EXP4.P's weight update for every pending query with ``reward``; returns a new state."""
    n_experts = len(state["log_weights"])
    log_w = list(state["log_weights"])
    p_min = min_probability(n_experts, pool_size, budget)
    bonus = math.sqrt(math.log(n_experts / delta) / (max(1, pool_size) * budget))
    for pick in state["pending"]:
        q = pick["q"]
        for i in range(n_experts):
            y_hat = pick["xi"][i] * reward / q
            log_w[i] += p_min / 2 * (y_hat + pick["vhat"][i] * bonus)
    top = max(log_w)
    return {**state, "log_weights": [w - top for w in log_w], "pending": []}


def min_probability(n_experts: int, pool_size: int, budget: int) -> float:
    return min(math.sqrt(math.log(n_experts) / (max(1, pool_size) * budget)), 1 / (2 * max(1, pool_size)))


def albl(
    confidence_N: torch.Tensor,
    embeddings_N_D: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    state: Optional[dict],
    budget: int,
    labelled_embeddings_L_D: Optional[torch.Tensor] = None,
) -> tuple[list[int], list[float], dict]:
    """``batch_size`` queries; returns (picks, each pick's query probability q_j, new state with
    the picks pending). ``confidence_N``: Conf's score (higher = less confident)."""
    state = dict(state) if state is not None else new_state()
    N = confidence_N.shape[0]
    weights = torch.tensor(state["log_weights"], dtype=torch.float64).exp()
    weights = weights / weights.sum()
    x = embeddings_N_D.double()
    sq = (x**2).sum(1)
    if labelled_embeddings_L_D is not None and labelled_embeddings_L_D.shape[0] > 0:
        dist = squared_distances_to(x, sq, labelled_embeddings_L_D.double())
    else:
        dist = ((x - x.mean(0)) ** 2).sum(1)
    conf = confidence_N.double().clone()
    # The distance updates of the picks in float32 (half the memory traffic; only their order matters).
    x32 = x.float()
    sq32 = (x32**2).sum(1)
    available = torch.ones(N, dtype=torch.bool)
    w = weights.tolist()
    picks, probabilities, pending = [], [], list(state.get("pending", []))
    for _ in range(batch_size):
        K = N - len(picks)
        p_min = min_probability(len(EXPERTS), K, budget)
        mix = 1 - K * p_min
        advice = [int(torch.where(available, dist, torch.full_like(dist, -1.0)).argmax()),
                  int(torch.where(available, conf, torch.full_like(conf, -math.inf)).argmax())]
        # q is constant (uniform expert + p_min) except at the one-hot experts' two points.
        base = p_min + mix * w[2] / K
        q = torch.where(available, torch.full((N,), base, dtype=torch.float64), torch.zeros(N, dtype=torch.float64))
        for i, c in enumerate(advice):
            q[c] += mix * w[i]
        q = q / q.sum()
        j = int(torch.multinomial(q.float(), 1, generator=generator))
        special = set(advice)
        # After normalising, the points no one-hot expert names all hold q = base / total.
        total = (K * p_min + mix * (w[2] + w[0] + w[1]))
        plain = base / total
        uniform_vhat = sum((1 / K) / float(q[c]) for c in special) + (K - len(special)) * (1 / K) / plain
        vhat = [1 / float(q[advice[0]]), 1 / float(q[advice[1]]), uniform_vhat]
        xi = [float(j == advice[0]), float(j == advice[1]), 1 / K]
        pending.append({"q": float(q[j]), "xi": xi, "vhat": vhat})
        picks.append(j)
        probabilities.append(float(q[j]))
        available[j] = False
        dist = torch.minimum(dist, (sq32 + sq32[j] - 2 * x32 @ x32[j]).double().clamp(min=0))
        dist[j] = 0.0
    return picks, probabilities, {**state, "pending": pending}
