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


def _squared_distances_to(points_N_D: torch.Tensor, sq_norms_N: torch.Tensor, centres_L_D: torch.Tensor) -> torch.Tensor:
    """min over the L centres of ||x_n - c||^2, chunked over centres."""
    best_N = torch.full_like(sq_norms_N, float("inf"))
    step = max(1, _CHUNK_ELEMENTS // max(1, points_N_D.shape[0]))
    for start in range(0, centres_L_D.shape[0], step):
        c = centres_L_D[start : start + step]
        d = sq_norms_N[:, None] + (c**2).sum(1)[None, :] - 2 * points_N_D @ c.t()
        torch.minimum(best_N, d.amin(1), out=best_N)
    return best_N.clamp_(min=0)


def k_center_greedy(
    embeddings_N_D: torch.Tensor, batch_size: int, labelled_embeddings_L_D: Optional[torch.Tensor] = None
) -> tuple[list[int], list[float]]:
    """Picks in order and each pick's distance to its nearest centre at the time it was picked."""
    x_N_D = embeddings_N_D.double()
    sq_norms_N = (x_N_D**2).sum(1)
    available_N = torch.ones(x_N_D.shape[0], dtype=torch.bool, device=x_N_D.device)
    indices: list[int] = []
    scores: list[float] = []
    if labelled_embeddings_L_D is not None and labelled_embeddings_L_D.shape[0] > 0:
        distances_N = _squared_distances_to(x_N_D, sq_norms_N, labelled_embeddings_L_D.double().to(x_N_D.device))
    else:
        distances_N = ((x_N_D - x_N_D.mean(0)) ** 2).sum(1)
    for _ in range(batch_size):
        pick = int(torch.where(available_N, distances_N, torch.full_like(distances_N, -1.0)).argmax())
        indices.append(pick)
        scores.append(float(distances_N[pick].sqrt()))
        available_N[pick] = False
        to_pick = (sq_norms_N + sq_norms_N[pick] - 2 * x_N_D @ x_N_D[pick]).clamp_(min=0)
        if len(indices) == 1 and (labelled_embeddings_L_D is None or labelled_embeddings_L_D.shape[0] == 0):
            distances_N = to_pick  # the pool mean was only a start, not a centre
        else:
            torch.minimum(distances_N, to_pick, out=distances_N)
        distances_N[pick] = 0.0
    return indices, scores
