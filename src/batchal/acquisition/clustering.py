"""Strategies built on clusters of the pool's features.

Cluster-Margin (Citovsky et al. 2021, "Batch active learning at scale"): take the
``margin_multiplier * b`` points of smallest margin, cluster them with hierarchical agglomerative
clustering (average linkage on their features), order the clusters from smallest to largest
and take one point of each in turn (a random one), round-robin, until the batch is full; so a
large batch spans the clusters of the uncertain points instead of piling into one. (The paper
clusters the whole pool once, up front; clustering the candidates each round is the same rule
on the points that can be picked, at a cost that does not grow with the pool.)

TypiClust (Hacohen, Dekel, Weinshall 2022, "Active learning on a budget"): k-means with
|labelled| + b clusters on the features of pool and labelled points; the b largest clusters
holding no labelled point each give their most typical point, typicality being the inverse of
the mean distance to its k nearest neighbours (k = min(20, cluster size - 1)) inside the
cluster. Built for the cold start: it needs no model predictions, only features.
"""

from __future__ import annotations

import numpy as np
import torch


def cluster_margin(
    margins_N: torch.Tensor, embeddings_N_D: torch.Tensor, batch_size: int, generator: torch.Generator, margin_multiplier: float = 10.0
) -> tuple[list[int], list[float]]:
    """Picks (pool positions) and each pick's margin score (higher = smaller margin)."""
    from sklearn.cluster import AgglomerativeClustering

    N = margins_N.shape[0]
    m = min(N, max(batch_size, int(np.ceil(margin_multiplier * batch_size))))
    candidates = torch.sort(-margins_N.cpu(), stable=True).indices[:m]
    if m == 1:
        return [int(candidates[0])], [float(margins_N[candidates[0]])]
    features = embeddings_N_D[candidates].double().cpu().numpy()
    clusters = min(batch_size, m)
    assignment = AgglomerativeClustering(n_clusters=clusters, linkage="average").fit_predict(features)
    members = [candidates[torch.from_numpy(np.flatnonzero(assignment == c))] for c in range(clusters)]
    # Smallest clusters first (ties by their smallest position, for determinism); members in random order.
    members.sort(key=lambda idx: (len(idx), int(idx.min())))
    queues = [idx[torch.randperm(len(idx), generator=generator)].tolist() for idx in members]
    picks: list[int] = []
    while len(picks) < batch_size:
        for queue in queues:
            if queue and len(picks) < batch_size:
                picks.append(queue.pop())
    return picks, [float(margins_N[p]) for p in picks]


def typiclust(
    embeddings_N_D: torch.Tensor, batch_size: int, generator: torch.Generator, labelled_L_D: torch.Tensor | None = None, neighbours: int = 20
) -> tuple[list[int], list[float]]:
    """Picks (pool positions) and each pick's typicality."""
    from sklearn.cluster import KMeans

    pool = embeddings_N_D.double().cpu().numpy()
    labelled = labelled_L_D.double().cpu().numpy() if labelled_L_D is not None and len(labelled_L_D) else np.empty((0, pool.shape[1]))
    N, L = len(pool), len(labelled)
    points = np.concatenate([pool, labelled])
    clusters = min(L + batch_size, N + L)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    if clusters > 1:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters: some stay empty
            assignment = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(points)
    else:
        assignment = np.zeros(N + L, dtype=int)
    covered = set(assignment[N:].tolist())
    sizes = np.bincount(assignment[:N], minlength=clusters)
    # Uncovered clusters, largest first (ties to the lower cluster index); then covered ones, if b needs more.
    order = sorted(range(clusters), key=lambda c: (c in covered, -sizes[c], c))
    picks: list[int] = []
    scores: list[float] = []
    taken = np.zeros(N, dtype=bool)
    while len(picks) < batch_size:
        progressed = False
        for c in order:
            if len(picks) == batch_size:
                break
            idx = np.flatnonzero((assignment[:N] == c) & ~taken)
            if len(idx) == 0:
                continue
            typicality = _typicality(pool[np.flatnonzero(assignment[:N] == c)], pool[idx], neighbours)
            best = int(np.argmax(typicality))  # ties to the lowest position
            picks.append(int(idx[best]))
            scores.append(float(typicality[best]))
            taken[idx[best]] = True
            progressed = True
        if not progressed:
            break
    return picks, scores


def _typicality(cluster: np.ndarray, points: np.ndarray, neighbours: int) -> np.ndarray:
    """1 / mean distance to the k nearest other members of the cluster (k = min(neighbours, size - 1))."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, len(cluster) - 1)
    if k < 1:
        return np.ones(len(points))
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(cluster).kneighbors(points)
    return 1.0 / (distances[:, 1:].mean(1) + 1e-12)  # the nearest is the point itself (distance 0)
