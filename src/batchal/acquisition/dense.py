"""Dense predictions (segmentation): one categorical label per pixel.

Input ``log_probs_N_K_C_H_W`` (any trailing spatial shape: N x K x C x S...): log p(y_pixel | x_n, w_k).

- Per-image scores (``segmentation_bald``, ``segmentation_entropy``): the per-pixel score (BALD,
  or the predictive entropy) reduced over the pixels by ``reduction``: ``"mean"``, or
  ``"top"``, the mean of the ``top_fraction`` highest pixels (at least one). Top-b images.
- ``segmentation_batchbald``: BatchBALD over images, each image a factorised item of its pixels
  (independent given w: the usual per-pixel softmax head), on ``pixels`` positions drawn once
  uniformly (the same for every image, seeded by the selection's seed; default 64), with the
  sampled joint of ``factorised.sampled_batchbald``. Memory: ``memory_bytes`` caps
  everything it holds above its input: the pool's N x S x K log-likelihoods (float64, the floor)
  plus one image's chosen pixels and draws at a time and blocks of candidates within the rest;
  a cap below floor + one image's working memory is refused before anything is drawn, with
  the number needed (benchmarks/bench_memory_caps.py measures the peaks). Stated reduction: the batch's information over the sampled
  pixels estimates that over the whole masks only up to this subsampling.
"""

from __future__ import annotations

import math

import torch

from batchal.acquisition import scores as _scores
from batchal.acquisition.validation import check_normalised_log_probs


def check_dense_log_probs(value) -> torch.Tensor:
    """log_probs_N_K_C_H_W checked by the contract's shared checks: normalised over C (dimension 2)."""
    return check_normalised_log_probs(value, "log_probs_N_K_C_H_W", (4, 32), 2, "N x K x C followed by one or more spatial sizes")


def pixels_last(log_probs: torch.Tensor) -> torch.Tensor:
    """N x K x C x S... -> N x K x P x C (P = the number of pixels)."""
    N, K, C = log_probs.shape[:3]
    return log_probs.reshape(N, K, C, -1).permute(0, 1, 3, 2)


def per_pixel_scores(log_probs: torch.Tensor, score: str) -> torch.Tensor:
    """N x P per-pixel scores, by blocks of images."""
    fn = {"bald": _scores.bald, "entropy": _scores.entropy}[score]
    out = []
    N, K, C = log_probs.shape[:3]
    P = math.prod(log_probs.shape[3:])
    step = max(1, (1 << 22) // max(1, K * C * P))
    for i in range(0, N, step):
        block = pixels_last(log_probs[i : i + step])  # n x K x P x C
        n = block.shape[0]
        out.append(fn(block.permute(0, 2, 1, 3).reshape(n * P, K, C)).double().reshape(n, P))
    return torch.cat(out)


def reduce_pixels(scores_N_P: torch.Tensor, reduction: str, top_fraction: float) -> torch.Tensor:
    if reduction == "mean":
        return scores_N_P.mean(1)
    q = max(1, math.ceil(top_fraction * scores_N_P.shape[1]))
    return scores_N_P.topk(q, dim=1).values.mean(1)
