"""The public API as a user's code calls it, checked by mypy in CI (`python -m mypy`, configured in
pyproject.toml). Not a test module: mypy reads it, nothing runs it. Each `# type: ignore[...]` marks a
misuse the annotations must reject: with warn_unused_ignores, an annotation loosened so that the
misuse passes makes mypy fail."""

from __future__ import annotations

import torch

import batchal
from batchal.acquire import acquire
from batchal.acquisition import Selection, check_strategy, describe, select, strategies
from batchal.bayesian import convert_dropout, predict_embeddings, predict_log_probs
from batchal.experiment import ExperimentConfig, run_experiment
from batchal.loop import ActiveLoop
from batchal.training import TrainConfig

model = convert_dropout(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)))
pool = torch.randn(50, 4)
log_probs: torch.Tensor = predict_log_probs(model, pool, k=10, seed=0)
batch: Selection = select("batchbald", 5, log_probs_N_K_C=log_probs, seed=0)
picked: list[int] = batch.indices.tolist()
total: float = batch.total
gains: torch.Tensor = batch.gains
names: list[str] = strategies("classification")
text: str = describe("badge")
check_strategy("random")
same: Selection = batchal.select("random", 3, embeddings_N_D=pool, seed=0)
embeddings, probs = predict_embeddings(model, pool)

loop = ActiveLoop([str(i) for i in range(50)], pool, strategy="bald")
next_ids: list = loop.query(model, 5)
config = ExperimentConfig(dataset="digits", strategy="random", budget=40, train=TrainConfig(max_epochs=2))
acquire  # the seam; its signature is checked where entry points call it

select("batchbald", "5", log_probs_N_K_C=log_probs)  # type: ignore[arg-type]
strategies(3)  # type: ignore[arg-type]
bad_total: str = batch.total  # type: ignore[assignment]
run_experiment(config, 7)  # type: ignore[arg-type]
