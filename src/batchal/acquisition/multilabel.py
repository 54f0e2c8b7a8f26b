"""Multi-label classification: L independent binary labels per item.

Input ``log_probs_N_K_L``: log p(y_l = 1 | x_n, w_k), the log of each label's sigmoid output, for
K posterior samples. Given w the labels are independent (the usual sigmoid head), so an item is a
factorised item of L binary variables (``batchal.acquisition.factorised``).

- ``multilabel_bald``: the per-label BALD summed over labels (a stated choice: the per-point
  score treats labels as separate questions; top-b).
- ``multilabel_batchbald``: I over all L x b binary variables of the batch. Exact by the product
  encoding (2^L values per item) through ``batchbald`` while 2^L <= ``max_configurations`` (its
  joint is exact while 2^(L n) configurations fit in num_samples, sampled after); beyond that the
  sampled joint of ``factorised.sampled_batchbald``.
- ``multilabel_badge``: BADGE on the gradient of the binary cross-entropy at the hallucinated
  labels y^_l = [p_l >= 1/2]: g = (p - y^) (outer) h, L x D, never materialised.
"""

from __future__ import annotations

import torch

from batchal.acquisition import scores as _scores
from batchal.acquisition.validation import check_binary_log_probs


def check_multilabel_log_probs(value) -> torch.Tensor:
    """log_probs_N_K_L checked by the contract's shared checks (``validation.check_binary_log_probs``)."""
    return check_binary_log_probs(value, "log_probs_N_K_L")


def binary_log_probs(log_probs_N_K_L: torch.Tensor) -> torch.Tensor:
    """N x K x L x 2: [log p(y_l = 0), log p(y_l = 1)], the first as log(1 - exp(a)) computed stably."""
    a = log_probs_N_K_L.double().clamp(max=-1e-300)
    # log1mexp: log(-expm1(a)) near 0, log1p(-exp(a)) below -log 2.
    absent = torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))
    return torch.stack([absent, log_probs_N_K_L.double()], dim=-1)


def multilabel_bald(log_probs_N_K_L: torch.Tensor) -> torch.Tensor:
    N, K, L = log_probs_N_K_L.shape
    per_label = _scores.bald(binary_log_probs(log_probs_N_K_L).permute(0, 2, 1, 3).reshape(N * L, K, 2))
    return per_label.double().reshape(N, L).sum(1)


def residuals(log_probs_N_K_L: torch.Tensor) -> torch.Tensor:
    """p - y^ per label (the BCE gradient's factor), with p the MC-averaged probability."""
    p = log_probs_N_K_L.double().exp().mean(1)
    return p - (p >= 0.5).double()
