"""k-DPP sampling on gradient embeddings (BADGE's k-DPP baseline).

A k-DPP with kernel L draws a size-k set S with P(S) proportional to det(L_S). BADGE compares
against a k-DPP with the linear kernel on gradient embeddings,

    L_ij = <g_i, g_j> = (a_i . a_j)(h_i . h_j),

computed from the factorised embeddings (never materialised). Sampling uses the swap chain
(Anari, Gharan, Rezaei 2016): propose to swap a uniformly chosen member u of S for a
uniformly chosen non-member v and accept with probability min(1, det L_{S-u+v} / det L_S);
ceil(5 k ln k) proposals, as in BADGE's comparison. The chain starts from k points drawn
without replacement with probability proportional to ||g||^2 (exact for k = 1). The
acceptance ratio costs O(k^2) from the inverse of L_S, kept up to date by block inversion:

    det L_{S-u+v} / det L_S = Linv_uu * (L_vv - l^T (Linv_-u - Linv_-u,u Linv_u,-u / Linv_uu) l),
    l = L_{S-u, v}.

A ridge of 1e-9 x the mean diagonal keeps L_S invertible when the embeddings have rank < k
(then the draw is close to uniform over the null directions, as a k-DPP would be undefined).
"""

from __future__ import annotations

import math

import torch

from batchal.acquisition.badge import GradientEmbeddings


#: Positions per block of Gumbel noise: each block has its own generator, so the noise of any
#: range of pool positions can be drawn without drawing the rest (sharded pools).
NOISE_BLOCK = 1 << 16


def noise_key(generator: torch.Generator) -> int:
    """One draw from ``generator`` that fixes every position's noise (``gumbel_noise``)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def gumbel_noise(key: int, start: int, stop: int) -> torch.Tensor:
    """Standard Gumbel noise for pool positions start..stop-1 (float64), the same whichever
    range it is drawn with: block j of NOISE_BLOCK positions comes from a generator seeded by
    (key, j)."""
    parts = []
    for block in range(start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK + 1 if stop > start else 0):
        g = torch.Generator().manual_seed((key * 1_000_003 + block) % 2**63)
        u = torch.rand(NOISE_BLOCK, generator=g, dtype=torch.float64)
        lo = max(start, block * NOISE_BLOCK) - block * NOISE_BLOCK
        hi = min(stop, (block + 1) * NOISE_BLOCK) - block * NOISE_BLOCK
        parts.append(u[lo:hi])
    u = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp_(min=1e-300)))


def power_log_weights(scores_N: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """log(score^beta) for non-negative scores, and -1e10 for a score of 0 (such points come last,
    in random order, when drawn by ``gumbel_top_k``)."""
    return torch.where(scores_N > 0, beta * scores_N.clamp(min=1e-300).log(), torch.full_like(scores_N, -1e10))


def gumbel_top_k(log_weights_N: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k indices drawn without replacement with probability proportional to exp(log_weights)
    (Gumbel-top-k: the top k of log w + Gumbel noise; ties to the lowest position)."""
    keys = log_weights_N.cpu().double() + gumbel_noise(noise_key(generator), 0, log_weights_N.shape[0])
    return torch.sort(-keys, stable=True).indices[:k]


def sample_kdpp(
    embeddings: GradientEmbeddings, k: int, generator: torch.Generator, steps: int | None = None
) -> tuple[list[int], list[float]]:
    """Draw a k-DPP sample; returns the set (chain order) and each member's squared norm.

    Each proposal costs O(k^2 + k (C + D)); an accepted swap updates the inverse of L_S by
    block inversion in O(k^2) (recomputed from scratch every k accepted swaps against drift).
    """
    norms_N = embeddings.squared_norms_N
    N = norms_N.shape[0]
    device = norms_N.device
    ridge = 1e-9 * max(float(norms_N.mean()), 1e-300)
    chosen = gumbel_top_k(power_log_weights(norms_N), k, generator).to(device)
    if steps is None:
        steps = math.ceil(5 * k * math.log(k)) if k > 1 else 0
    if k < N and steps > 0:
        a, h = embeddings.a_N_C, embeddings.h_N_D
        eye = torch.eye(k, dtype=torch.float64, device=device)

        def fresh_inverse() -> torch.Tensor:
            return torch.linalg.inv(embeddings.gram(chosen) + ridge * eye)

        inverse = fresh_inverse()
        non_member = torch.ones(N, dtype=torch.bool, device=device)
        non_member[chosen] = False
        outside = non_member.nonzero().flatten()  # the N - k non-members; proposals index into it
        us = torch.randint(k, (steps,), generator=generator)
        rs = torch.rand(steps, generator=generator, dtype=torch.float64)
        js = torch.randint(N - k, (steps,), generator=generator)
        a_S, h_S = a[chosen].clone(), h[chosen].clone()  # the members' factors, row u = member u
        accepted = 0
        for t in range(steps):
            u, j = int(us[t]), int(js[t])
            v = int(outside[j])
            # l = L[S, v] with position u zeroed, so quadratic forms in the full inverse act on S - u.
            l = (a_S @ a[v]) * (h_S @ h[v])
            l[u] = 0.0
            column = inverse[:, u]
            inv_uu = inverse[u, u]
            c = column @ l
            inv_l = inverse @ l - column * (c / inv_uu)  # inverse of L_{S-u} times l, 0 at u
            schur = norms_N[v] + ridge - l @ inv_l
            ratio = float(inv_uu * schur)  # det L_{S-u+v} / det L_S
            if ratio >= 1 or float(rs[t]) < ratio:
                # inverse of L_{S-u} (row and column u become 0), then v bordered in at position u.
                inverse = inverse - torch.outer(column, column) / inv_uu
                inverse += torch.outer(inv_l, inv_l) / schur
                inverse[:, u] = -inv_l / schur
                inverse[u, :] = -inv_l / schur
                inverse[u, u] = 1 / schur
                outside[j] = chosen[u]
                chosen[u] = v
                a_S[u], h_S[u] = a[v], h[v]
                accepted += 1
                if accepted % k == 0:
                    inverse = fresh_inverse()
    indices = [int(i) for i in chosen]
    return indices, [float(norms_N[i]) for i in indices]
