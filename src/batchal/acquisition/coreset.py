"""Coreset (Sener & Savarese 2018): greedy furthest-first traversal (k-center) on features.

Each pick is the pool point furthest from its nearest centre,

    x_next = argmax_x min_{c in centres} ||h_x - h_c||,

where the centres start as the labelled set's features (when given) and grow with every pick.
Without a labelled set the first pick is the point furthest from the pool's mean (a
deterministic start). Distances are kept incrementally in float64; memory O(N + chunk).
"""

from __future__ import annotations

from typing import Optional

import torch

_CHUNK_ELEMENTS = 1 << 22


def squared_distances_to(points_N_D: torch.Tensor, sq_norms_N: torch.Tensor, centres_L_D: torch.Tensor) -> torch.Tensor:
    """min over the L centres of ||x_n - c||^2, chunked over centres."""
    best_N = torch.full_like(sq_norms_N, float("inf"))
    step = max(1, _CHUNK_ELEMENTS // max(1, points_N_D.shape[0]))
    for start in range(0, centres_L_D.shape[0], step):
        c = centres_L_D[start : start + step]
        d = sq_norms_N[:, None] + (c**2).sum(1)[None, :] - 2 * (points_N_D @ c.t())
        torch.minimum(best_N, d.amin(1), out=best_N)
    return best_N.clamp_(min=0)


def k_center_greedy(
    embeddings_N_D: torch.Tensor, batch_size: int, labelled_embeddings_L_D: Optional[torch.Tensor] = None
) -> tuple[list[int], list[float]]:
    """Picks in order and each pick's distance to its nearest centre at the time it was picked.

    Each pick costs one pass over the points still available (a matrix-vector product, memory-
    bound for large D): the picked rows are dropped from the working copy whenever a quarter of
    it has been picked, so a batch of most of the pool reads less memory (the picks are brute-force
    k-center's: tests/test_badge.py)."""
    x_N_D = embeddings_N_D.double()
    sq_norms_N = (x_N_D**2).sum(1)
    if labelled_embeddings_L_D is not None and labelled_embeddings_L_D.shape[0] > 0:
        distances_N = squared_distances_to(x_N_D, sq_norms_N, labelled_embeddings_L_D.double().to(x_N_D.device))
        seeded = True
    else:
        distances_N = ((x_N_D - x_N_D.mean(0)) ** 2).sum(1)
        seeded = False
    # The working set: positions still available (ascending, so argmax ties go to the lowest
    # position), their features, squared norms and squared distances to the nearest centre.
    positions = torch.arange(x_N_D.shape[0], device=x_N_D.device)
    x_w, sq_w, d_w = x_N_D, sq_norms_N, distances_N.clone()
    picked_w = torch.zeros(len(positions), dtype=torch.bool, device=x_N_D.device)
    indices: list[int] = []
    scores: list[float] = []
    for n in range(batch_size):
        j = int(d_w.argmax())  # picked rows hold -1
        pick = int(positions[j])
        indices.append(pick)
        scores.append(float(d_w[j].sqrt()))
        to_pick = (sq_w + sq_norms_N[pick] - 2 * (x_w @ x_N_D[pick])).clamp_(min=0)
        if n == 0 and not seeded:
            d_w = torch.where(picked_w, d_w, to_pick)  # the pool mean was only a start, not a centre
        else:
            torch.minimum(d_w, to_pick, out=d_w)
        picked_w[j] = True
        d_w[j] = -1.0
        if int(picked_w.sum()) * 4 >= len(positions) and n + 1 < batch_size:
            keep = ~picked_w
            positions, x_w, sq_w, d_w = positions[keep], x_w[keep], sq_w[keep], d_w[keep]
            picked_w = torch.zeros(len(positions), dtype=torch.bool, device=x_N_D.device)
    return indices, scores
