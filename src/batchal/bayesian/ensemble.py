"""Deep ensembles as the posterior: M independently trained models are the K = M samples.

``ensemble_log_probs(models, data)`` stacks each member's deterministic prediction (eval mode,
dropout off) into log_probs_N_M_C, the input every strategy takes, so BALD, BatchBALD, EPIG
and the rest run on an ensemble unchanged (Lakshminarayanan et al. 2017; Beluch et al. 2018).
``train_ensemble`` trains the members from different seeds.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from batchal.checks import check_positive_int
from batchal.bayesian.predict import Data, batches, device_of, eval_mode


def ensemble_log_probs(models: list[nn.Module], data: Data, batch_size: int = 256, *, device=None) -> torch.Tensor:
    """log p(y | x_n, member m) for every input and member: a float32 CPU tensor N x M x C."""
    if not models:
        raise ValueError("an ensemble needs at least one member model")
    batch_size = check_positive_int(batch_size, "batch_size")
    parts = []
    for model in models:
        dev = device_of(model, device)
        rows = []
        with eval_mode(model):
            for x in batches(data, batch_size):
                rows.append(torch.log_softmax(model(x.to(dev)).float(), dim=1).cpu())
        parts.append(torch.cat(rows))
    return torch.stack(parts, dim=1)


def train_ensemble(
    factory: Callable[[], nn.Module],
    members: int,
    train: Callable[[nn.Module, torch.Generator], object],
    seed: int = 0,
) -> list[nn.Module]:
    """``members`` models from ``factory()``, each trained by ``train(model, generator)`` with its
    own seed (initialisation and batches), in order."""
    members = check_positive_int(members, "members")
    models = []
    for m in range(members):
        torch.manual_seed(seed * 7919 + m)
        model = factory()
        train(model, torch.Generator().manual_seed(seed * 7919 + m + 1))
        models.append(model)
    return models
