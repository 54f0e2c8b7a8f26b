"""Hugging Face ``transformers``: select the next batch with the model a ``Trainer`` fine-tuned.

A thin layer over public APIs only: the pool goes through ``trainer.get_test_dataloader`` (your
collator, padding and evaluation batch size), the model is ``trainer.model`` (its ``nn.Dropout``
modules made consistent in place by :func:`batchal.convert_dropout`; in training they are
ordinary dropout, so ``trainer.train()`` is unchanged), and the rest is ``batchal``'s own
``predict_log_probs``, ``predict_embeddings`` and ``acquire``, the path every entry point takes::

    from batchal.integrations.transformers import query
    trainer.train()                                              # on the labelled rows
    picks = query(trainer, pool_dataset, 16, strategy="batchbald")  # positions in pool_dataset

``labels``/``label`` columns in the pool (the Trainer keeps them) are dropped before the forward
pass. Pretrained checkpoints often set dropout to 0 (``hidden_dropout_prob``); batchal then warns
that the K samples would be identical: set it to e.g. 0.1 in the config before fine-tuning.
"""

from typing import Optional

import torch

from batchal.acquire import acquire
from batchal.bayesian.dropout import convert_dropout
from batchal.bayesian.predict import predict_embeddings, predict_log_probs

LABEL_KEYS = ("labels", "label", "label_ids")


def _device(trainer) -> torch.device:
    return next(trainer.model.parameters()).device


def trainer_log_probs(trainer, pool_dataset, k: int = 20, seed: Optional[int] = 0) -> torch.Tensor:
    """log p(y | x, w_k), N x K x C, for the pool with K consistent dropout masks of ``trainer.model``."""
    model = convert_dropout(trainer.model)
    return predict_log_probs(model, _as_loader(trainer, pool_dataset), k, seed=seed, device=_device(trainer))


def trainer_embeddings(trainer, pool_dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features N x D, log-probabilities N x 1 x C) with dropout off: BADGE's and Coreset's inputs."""
    return predict_embeddings(trainer.model, _as_loader(trainer, pool_dataset), device=_device(trainer))


class TrainerPredictions:
    """batchal.acquire's predictions of ``trainer.model`` over ``pool_dataset``, through the
    trainer's own test DataLoader (its collator, padding and evaluation batch size)."""

    def __init__(self, trainer, pool_dataset):
        self.trainer, self.dataset = trainer, pool_dataset

    def _rows(self, positions):
        if list(positions) == list(range(len(self.dataset))):
            return self.dataset
        if hasattr(self.dataset, "select"):  # a datasets.Dataset keeps its columns (and the trainer's column pruning)
            return self.dataset.select(list(positions))
        return torch.utils.data.Subset(self.dataset, list(positions))

    def log_probs(self, positions, k, seed):
        return trainer_log_probs(self.trainer, self._rows(positions), k=k, seed=seed)

    def features(self, positions):
        return trainer_embeddings(self.trainer, self._rows(positions))


def query(trainer, pool_dataset, b: int, strategy: str = "batchbald", k: int = 20, seed: Optional[int] = 0, round_: int = 0,
          **options) -> list[int]:
    """The next batch: ``b`` positions in ``pool_dataset``, in pick order (through batchal.acquire,
    as every entry point; ``round_``, the batch's index, seeds it with ``seed``)."""
    return acquire(strategy, TrainerPredictions(trainer, pool_dataset), range(len(pool_dataset)), b, seed=seed or 0,
                   round_=round_, mc_samples=k, options=options).picked


def _as_loader(trainer, pool_dataset):
    """The trainer's test DataLoader over the pool, label columns dropped, as a real DataLoader
    (batchal's prediction loop checks it does not shuffle and counts ``len(dataset)``)."""
    loader = trainer.get_test_dataloader(pool_dataset)
    if isinstance(loader.sampler, torch.utils.data.RandomSampler):
        raise ValueError("the trainer's test DataLoader shuffles; predictions would not follow the pool's order")
    collate = loader.collate_fn

    def collate_without_labels(rows):
        batch = collate(rows)
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS} if isinstance(batch, dict) else batch

    # The trainer's loader may batch through a sampler (batch_size None): its evaluation batch size counts.
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size or trainer.args.eval_batch_size, shuffle=False,
                                       collate_fn=collate_without_labels, num_workers=loader.num_workers, pin_memory=loader.pin_memory)
