"""k-DPP sampling on gradient embeddings (BADGE's k-DPP baseline).

A k-DPP with kernel L draws a size-k set S with P(S) proportional to det(L_S). BADGE compares
against a k-DPP with the linear kernel on gradient embeddings,

    L_ij = <g_i, g_j> = (a_i . a_j)(h_i . h_j),

computed from the factorised embeddings (never materialised). Sampling uses the swap chain
(Anari, Gharan, Rezaei 2016): propose to swap a uniformly chosen member u of S for a
uniformly chosen non-member v and accept with probability min(1, det L_{S-u+v} / det L_S);
ceil(5 k ln k) proposals, as in BADGE's comparison. The chain starts from k points drawn
without replacement with probability proportional to ||g||^2 (exact for k = 1). The
acceptance ratio costs O(k^2) from the inverse of L_S:

    det L_{S-u+v} / det L_S = Linv_uu * (L_vv - l^T (Linv_-u - Linv_-u,u Linv_u,-u / Linv_uu) l),
    l = L_{S-u, v}.

A ridge of 1e-9 x the mean diagonal keeps L_S invertible when the embeddings have rank < k
(then the draw is close to uniform over the null directions, as a k-DPP would be undefined).
"""

from __future__ import annotations

import math

import torch

from batchal.acquisition.badge import GradientEmbeddings


def _gumbel_top_k(log_weights_N: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(log_weights_N.shape, generator=generator, dtype=torch.float64).clamp_(min=1e-300)
    keys = log_weights_N.cpu() - torch.log(-torch.log(u))
    return keys.topk(k).indices


def sample_kdpp(
    embeddings: GradientEmbeddings, k: int, generator: torch.Generator, steps: int | None = None
) -> tuple[list[int], list[float]]:
    """Draw a k-DPP sample; returns the set (chain order) and each member's squared norm."""
    norms_N = embeddings.squared_norms_N
    N = norms_N.shape[0]
    ridge = 1e-9 * max(float(norms_N.mean()), 1e-300)
    positive = norms_N > 0
    log_w = torch.where(positive, norms_N.clamp(min=1e-300).log(), torch.full_like(norms_N, -1e10))
    chosen = _gumbel_top_k(log_w, k, generator).to(norms_N.device)
    if steps is None:
        steps = math.ceil(5 * k * math.log(k)) if k > 1 else 0
    if k < N and steps > 0:
        in_set = torch.zeros(N, dtype=torch.bool)
        in_set[chosen.cpu()] = True
        gram = embeddings.gram(chosen) + ridge * torch.eye(k, dtype=torch.float64, device=norms_N.device)
        inverse = torch.linalg.inv(gram)
        us = torch.randint(k, (steps,), generator=generator)
        rs = torch.rand(steps, generator=generator, dtype=torch.float64)
        outside = torch.randint(N - k, (steps,), generator=generator)
        for t in range(steps):
            u = int(us[t])
            out_idx = (~in_set).nonzero().flatten()
            v = int(out_idx[int(outside[t])])
            keep = torch.arange(k, device=norms_N.device) != u
            a, h = embeddings.a_N_C, embeddings.h_N_D
            l = ((a[chosen[keep]] @ a[v]) * (h[chosen[keep]] @ h[v]))
            inv_uu = inverse[u, u]
            inv_rest = inverse[keep][:, keep] - torch.outer(inverse[keep, u], inverse[u, keep]) / inv_uu
            ratio = float(inv_uu * (norms_N[v] + ridge - l @ inv_rest @ l))
            if ratio >= 1 or float(rs[t]) < ratio:
                in_set[int(chosen[u])] = False
                in_set[v] = True
                chosen[u] = v
                gram = embeddings.gram(chosen) + ridge * torch.eye(k, dtype=torch.float64, device=norms_N.device)
                inverse = torch.linalg.inv(gram)
    indices = [int(i) for i in chosen]
    return indices, [float(norms_N[i]) for i in indices]
