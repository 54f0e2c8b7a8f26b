"""BADGE (Ash et al. 2020): k-means++ seeding on hallucinated last-layer gradient embeddings.

For a point with predictive distribution p (C classes) and penultimate features h (D), the
gradient of the cross-entropy loss w.r.t. the last linear layer's weights at the hallucinated
label y^ = argmax p is

    g = (p - e_y^) (outer) h = a (outer) h,     a = p - e_y^,   dim C * D.

Proposition 1: ||g^y||^2 = (sum_i p_i^2 + 1 - 2 p_y) ||h||^2, smallest at y = y^, so ||g|| is a
lower bound on the gradient norm for the true label.

g is never materialised (N x C*D would be 24.6 GB at N = 20k, C = 100, D = 768): with
u_i = a_i, v_i = h_i,

    ||g_i - g_j||^2 = ||u_i||^2 ||v_i||^2 + ||u_j||^2 ||v_j||^2 - 2 (u_i . u_j)(v_i . v_j),

so memory is N (C + D) and each k-means++ step costs O(N (C + D)).

k-means++ seeding: the first centre is the point of largest ||g|| (BADGE's code); each next
centre is drawn with probability proportional to the squared distance to its nearest chosen
centre, kept incrementally against the newest centre only. There is no "ghost centre" at the
origin. Chosen points have distance 0 and are excluded explicitly; when every remaining point
has distance 0 (e.g. a pool of identical points) the next pick is uniform over the remaining
points, so the picks are always unique.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from batchal.acquisition.scores import predictive_probs


@dataclass
class GradientEmbeddings:
    """Factorised gradient embeddings g_n = a_n (outer) h_n, held as a_N_C and h_N_D (float64)."""

    a_N_C: torch.Tensor
    h_N_D: torch.Tensor

    @property
    def squared_norms_N(self) -> torch.Tensor:
        # By row blocks: h_N_D**2 whole would be a second N x D float64 copy.
        h_sq = torch.cat([(block**2).sum(1) for block in self.h_N_D.split(max(1, (1 << 19) // max(1, self.h_N_D.shape[1])))]) \
            if self.h_N_D.shape[0] else self.h_N_D.new_zeros(0)
        return (self.a_N_C**2).sum(1) * h_sq

    def inner_products(self, index: int) -> torch.Tensor:
        """<g_n, g_index> for every n: (a_n . a_i)(h_n . h_i)."""
        return (self.a_N_C @ self.a_N_C[index]) * (self.h_N_D @ self.h_N_D[index])

    def gram(self, indices: torch.Tensor) -> torch.Tensor:
        a, h = self.a_N_C[indices], self.h_N_D[indices]
        return (a @ a.t()) * (h @ h.t())

    def materialise(self) -> torch.Tensor:
        """The N x (C*D) embedding matrix (small N only: tests and diagnostics)."""
        return (self.a_N_C[:, :, None] * self.h_N_D[:, None, :]).flatten(1)


def gradient_embeddings(log_probs_N_K_C: torch.Tensor, embeddings_N_D: torch.Tensor) -> GradientEmbeddings:
    """a = p - e_argmax(p), with p the MC-averaged predictive distribution, and h = the features."""
    probs_N_C = predictive_probs(log_probs_N_K_C)
    a_N_C = probs_N_C.clone()
    a_N_C[torch.arange(a_N_C.shape[0]), probs_N_C.argmax(1)] -= 1.0
    return GradientEmbeddings(a_N_C=a_N_C, h_N_D=embeddings_N_D.double())


def kmeans_plus_plus(
    embeddings: GradientEmbeddings, batch_size: int, generator: torch.Generator
) -> tuple[list[int], list[float]]:
    """k-means++ seeding on factorised embeddings: picks in order and each pick's squared
    distance to its nearest earlier centre (its squared norm for the first pick)."""
    norms_N = embeddings.squared_norms_N
    N = norms_N.shape[0]
    first = int(norms_N.argmax())
    indices, scores = [first], [float(norms_N[first])]
    available_N = torch.ones(N, dtype=torch.bool, device=norms_N.device)
    available_N[first] = False
    distances_N = torch.full((N,), math.inf, dtype=torch.float64, device=norms_N.device)
    newest = first
    for _ in range(1, batch_size):
        to_newest = (norms_N + norms_N[newest] - 2 * embeddings.inner_products(newest)).clamp_(min=0)
        torch.minimum(distances_N, to_newest, out=distances_N)
        weights_N = torch.where(available_N, distances_N, torch.zeros_like(distances_N))
        if not float(weights_N.sum()) > 0:
            weights_N = available_N.double()  # every remaining point sits on a centre
        newest = int(torch.multinomial(weights_N.cpu(), 1, generator=generator))
        indices.append(newest)
        scores.append(float(distances_N[newest]))
        available_N[newest] = False
    return indices, scores


def batch_diagnostics(log_probs_b_K_C: torch.Tensor, embeddings_b_D: torch.Tensor) -> dict:
    """BADGE's diagnostics of a chosen batch: log det of its gradient-embedding Gram matrix
    (diversity and magnitude; None when singular) and the mean embedding norm (uncertainty)."""
    emb = gradient_embeddings(log_probs_b_K_C, embeddings_b_D)
    sign, logdet = torch.linalg.slogdet(emb.gram(torch.arange(emb.a_N_C.shape[0])))
    return {
        "logdet_gram": float(logdet) if float(sign) > 0 and math.isfinite(float(logdet)) else None,
        "mean_norm": float(emb.squared_norms_N.sqrt().mean()),
    }
