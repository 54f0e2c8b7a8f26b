"""BAIT (Ash, Goel, Krishnamurthy, Kakade 2021, "Gone Fishing: Neural Active Learning with
Fisher Embeddings"): a batch that minimises tr((M_S + lambda I)^-1 F).

For the last linear layer W (C x D) on features h, the Fisher information of one point with
predictive distribution p is

    I(x) = sum_c p_c g_c g_c^T,   g_c = (e_c - p) (outer) h   (the gradient of log p_c w.r.t. W)
         = (diag(p) - p p^T) (kron) h h^T = V_x V_x^T,   V_x = U_x (kron) h,

with U_x = diag(sqrt p) - p sqrt(p)^T (C x C), so V_x is CD x C. F = mean of I(x) over the pool
(the Fisher the model will face), M_S = sum of I(x) over the labelled set and the batch.

Forward greedy (the paper's Algorithm 1): with A = (M + lambda I)^-1 and B = A F A, adding x
lowers tr(A F) by tr((I_C + V^T A V)^-1 V^T B V) (Woodbury); the point of largest decrease is
added and A updated. BAIT oversamples: 2b forward picks, then backward pruning removes, one at
a time, the pick whose removal raises tr(A F) least, tr((I_C - V^T A V)^-1 V^T B V), until b
remain. V^T A V = U^T H U with H[c, c'] = h^T A_cc' h (A_cc' the D x D blocks of A, c <= c'
by symmetry), so no CD x C factor is ever formed: a forward step costs O(N C^2 D^2 / 2)
(chunked over N); A and B = A F A follow each pick by a rank-C update (Woodbury), O((CD)^2 C);
memory is O((CD)^2) for A, F and B. This is BAIT's known price: on 2 cores, N = 300, C = 10,
D = 256 (CD = 2,560) takes seconds per batch.

Features are scaled to unit mean squared norm over the pool first, so ``lamb`` (1 by default,
as in the authors' code) is relative to the pool's typical Fisher information and the picks do
not depend on the features' units.

Scores: each kept pick's forward decrease of tr(A F) when it was added.
"""

from __future__ import annotations

import torch

#: Refuse feature spaces whose CD x CD matrices would take more than this (three are kept).
MAX_MATRIX_BYTES = 2**30


def fisher_factors(probs_N_C: torch.Tensor) -> torch.Tensor:
    """U_x = diag(sqrt p) - p sqrt(p)^T for every point: N x C x C, with U U^T = diag(p) - p p^T."""
    root = probs_N_C.sqrt()
    return torch.diag_embed(root) - probs_N_C[:, :, None] * root[:, None, :]


def _blocks(matrix: torch.Tensor, C: int) -> torch.Tensor:
    """The D x D blocks matrix_cc' with c <= c' of a symmetric CD x CD matrix, laid out
    D x (P D), P = C (C + 1) / 2: column (pair, e) of row d is matrix_cc'[d, e]."""
    D = matrix.shape[0] // C
    rows, cols = torch.triu_indices(C, C, device=matrix.device)
    return matrix.view(C, D, C, D).permute(1, 0, 2, 3)[:, rows, cols, :].reshape(D, -1)


def _projected(blocks: torch.Tensor, U_n_C_C: torch.Tensor, h_n_D: torch.Tensor) -> torch.Tensor:
    """V^T matrix V = U^T H U for every point (n x C x C), with H[c, c'] = h^T matrix_cc' h (a
    symmetric C x C matrix, so only c <= c' is computed) and the matrix given as ``_blocks``."""
    n, D = h_n_D.shape
    C = U_n_C_C.shape[1]
    pairs = ((h_n_D @ blocks).view(n, -1, D) * h_n_D[:, None, :]).sum(2)
    rows, cols = torch.triu_indices(C, C, device=h_n_D.device)
    H = torch.zeros(n, C, C, dtype=pairs.dtype, device=pairs.device)
    H[:, rows, cols] = pairs
    H[:, cols, rows] = pairs
    return U_n_C_C.transpose(1, 2) @ H @ U_n_C_C


def _factor(U_C_C: torch.Tensor, h_D: torch.Tensor) -> torch.Tensor:
    """V = U (kron) h as a CD x C matrix (rows ordered (c, d) as W's row-major vec)."""
    C, D = U_C_C.shape[0], h_D.shape[0]
    return (U_C_C[:, None, :] * h_D[None, :, None]).reshape(C * D, C)


def bait(
    probs_N_C: torch.Tensor,
    h_N_D: torch.Tensor,
    batch_size: int,
    labelled_probs: torch.Tensor | None = None,
    labelled_h: torch.Tensor | None = None,
    lamb: float = 1.0,
    oversample: int = 2,
    chunk: int = 256,
) -> tuple[list[int], list[float]]:
    """BAIT's forward-backward greedy; picks in forward order and their forward decreases."""
    N, C = probs_N_C.shape
    D = h_N_D.shape[1]
    if (C * D) ** 2 * 8 > MAX_MATRIX_BYTES:
        raise ValueError(
            f"BAIT keeps three (C*D) x (C*D) matrices: C = {C} classes times D = {D} features gives {C * D} rows, "
            f"{(C * D) ** 2 * 8 / 2**30:.1f} GiB each in float64; use fewer features (a smaller penultimate layer)")
    probs, h = probs_N_C.double(), h_N_D.double()
    labelled_h = None if labelled_h is None else labelled_h.double()
    # Features scaled to unit mean squared norm over the pool: the criterion is then the same
    # whatever the features' units (lamb is relative to the pool's typical Fisher information),
    # and large features cannot make I - V^T A V numerically singular.
    scale = float(h.pow(2).sum(1).mean().sqrt())
    if scale > 0:
        h = h / scale
        if labelled_h is not None:
            labelled_h = labelled_h / scale
    U_N = fisher_factors(probs)
    CD = C * D

    def fisher_sum(U: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """sum over points of (U U^T) (kron) h h^T, chunked."""
        total = torch.zeros(C * C, D * D, dtype=torch.float64, device=probs.device)
        for i in range(0, len(U), chunk):
            S = (U[i : i + chunk] @ U[i : i + chunk].transpose(1, 2)).reshape(-1, C * C)  # diag(p) - p p^T
            hh = (feats[i : i + chunk, :, None] * feats[i : i + chunk, None, :]).reshape(-1, D * D)
            total += S.t() @ hh  # [(a, b), (d, e)] = sum_n S_n[a, b] h_n[d] h_n[e]
        return total.view(C, C, D, D).permute(0, 2, 1, 3).reshape(CD, CD)

    F = fisher_sum(U_N, h) / N
    M = lamb * torch.eye(CD, dtype=torch.float64, device=probs.device)
    if labelled_probs is not None and len(labelled_probs):
        M += fisher_sum(fisher_factors(labelled_probs.double()), labelled_h)
    A = torch.linalg.inv(M)
    B = A @ F @ A
    eye_C = torch.eye(C, dtype=torch.float64, device=probs.device)

    def rank_update(A: torch.Tensor, B: torch.Tensor, V: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        """A' = (A^-1 + sign V V^T)^-1 = A - sign X S X^T (X = A V, S = (I + sign V^T A V)^-1), and
        B' = A' F A' from B in O((CD)^2 C) instead of two (CD)^3 products."""
        X = A @ V
        S = torch.linalg.inv(eye_C + sign * (V.t() @ X))
        T = A @ (F @ X)  # A F X with the old A
        # B' = B + A F G + G F A + G F G with G = -sign X S X^T: one rank-2C product [T X] core [T X]^T.
        core = torch.cat([torch.cat([torch.zeros_like(S), -sign * S], 1), torch.cat([-sign * S, S @ (X.t() @ F @ X) @ S], 1)], 0)
        W = torch.cat([T, X], 1)
        return torch.addmm(A, X @ S, X.t(), alpha=-sign), torch.addmm(B, W @ core, W.t())

    available = torch.ones(N, dtype=torch.bool, device=probs.device)
    chosen: list[int] = []
    gains: list[float] = []
    for _ in range(min(oversample * batch_size, N)):
        best, best_gain = -1, float("-inf")
        A_blocks, B_blocks = _blocks(A, C), _blocks(B, C)
        for i in range(0, N, chunk):
            P = _projected(A_blocks, U_N[i : i + chunk], h[i : i + chunk])
            Q = _projected(B_blocks, U_N[i : i + chunk], h[i : i + chunk])
            gain = torch.linalg.solve(eye_C + P, Q).diagonal(dim1=1, dim2=2).sum(1)
            gain = torch.where(available[i : i + chunk], gain, torch.tensor(float("-inf"), dtype=gain.dtype, device=gain.device))
            value, position = gain.max(0)
            if float(value) > best_gain:  # ties go to the lowest position (earlier chunk, then max's first)
                best, best_gain = i + int(position), float(value)
        A, B = rank_update(A, B, _factor(U_N[best], h[best]), 1.0)
        available[best] = False
        chosen.append(best)
        gains.append(best_gain)
    while len(chosen) > batch_size:
        costs = []
        for x in chosen:
            V = _factor(U_N[x], h[x])
            solution, info = torch.linalg.solve_ex(eye_C - V.t() @ A @ V, V.t() @ B @ V)
            # Singular: the point carries (numerically) all the information in some direction,
            # so removing it would raise the objective without bound.
            costs.append(float(solution.trace()) if int(info) == 0 else float("inf"))
        drop = min(range(len(chosen)), key=lambda j: (costs[j], j))
        A, B = rank_update(A, B, _factor(U_N[chosen[drop]], h[chosen[drop]]), -1.0)
        del chosen[drop], gains[drop]
    return chosen, gains
