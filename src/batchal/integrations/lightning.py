"""PyTorch Lightning: MC-dropout predictions through ``Trainer.predict``, public API only.

    from batchal.integrations.lightning import predict_log_probs
    log_probs_N_K_C = predict_log_probs(trainer, my_module, pool_loader, k=20, seed=0)
    batch = batchal.select("batchbald", 10, log_probs_N_K_C=log_probs_N_K_C)

Your LightningModule's ``predict_step`` returns logits for its batch (a tensor, a tuple with
logits first, or an object with ``.logits``), as Lightning's own ``predict`` expects. Inside,
the module's ``nn.Dropout`` layers become consistent MC dropout and the K masks are drawn once
for the whole pool; every ``forward`` call in ``predict_step`` then returns B * K rows
(``batchal.mc_dropout``). Nothing in Lightning's loops is overridden or touched (Lightning
Flash's active-learning loop broke on private loop internals).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from batchal.bayesian.dropout import convert_dropout, mc_dropout
from batchal.bayesian.predict import logits_of


def predict_log_probs(trainer, module, dataloaders, k: int, seed=0, expand_input: bool = False) -> torch.Tensor:
    """log p(y | x_n, w_k), N x K x C float32 on the CPU, in the dataloader's order."""
    convert_dropout(module)
    with mc_dropout(module, k, seed=seed, expand_input=expand_input):
        outputs = trainer.predict(module, dataloaders=dataloaders)
    rows = [logits_of(o).float().cpu() for o in outputs]
    if any(r.shape[0] % k for r in rows):
        raise ValueError(f"predict_step returned {[r.shape[0] for r in rows]} rows; expected multiples of K = {k} "
                         "(call the module's forward once per batch in predict_step)")
    return torch.cat([F.log_softmax(r, dim=1).view(-1, k, r.shape[1]) for r in rows])
