"""The active-learning loop for people who keep their own model and training code.

    loop = ActiveLoop(ids, inputs, strategy="batchbald", state_file="al-state.json")
    while budget_left:
        my_train(model, *loop.labelled())                 # your training, however you like it
        batch = loop.query(model, 10)                      # the ids to label next
        loop.teach(batch, [ask_a_person(i) for i in batch])

``ids`` are your own item ids (any strings or integers, unique); ``inputs`` their model inputs in
the same order (a tensor, a Dataset, or a dict of tensors as a tokenizer returns them). The
labels given so far and the round live in ``state_file`` (JSON, written atomically after every
``teach``), so a loop started again with the same file resumes where it stopped. Picks are
seeded by (seed, round) as every entry point (``batchal.acquire.round_seed``): the same labels
give the same next batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from batchal.acquire import ModelPredictions, acquire
from batchal.acquisition.registry import get_strategy
from batchal.bayesian.predict import num_items


class ActiveLoop:
    def __init__(self, ids: Sequence, inputs, *, strategy: str = "batchbald", mc_samples: int = 20, seed: int = 0,
                 state_file: Optional[os.PathLike] = None, batch_size: int = 256):
        self.ids = list(ids)
        if len(set(map(str, self.ids))) != len(self.ids):
            raise ValueError("ids must be unique (as text: they key the saved state)")
        if num_items(inputs) != len(self.ids):
            raise ValueError(f"inputs hold {num_items(inputs)} items but {len(self.ids)} ids were given; one input per id, in order")
        get_strategy(strategy)  # an unknown name is refused when the loop is made, not at its first query
        self.strategy, self.mc_samples, self.seed, self.batch_size = strategy, mc_samples, seed, batch_size
        self.inputs = inputs
        self.position = {str(i): n for n, i in enumerate(self.ids)}
        self.labels: dict[str, Any] = {}
        self.round = 0
        self.state_file = Path(state_file) if state_file is not None else None
        if self.state_file is not None and self.state_file.exists():
            self._load()

    # --- state ---
    def _load(self) -> None:
        try:
            state = json.loads(self.state_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.state_file}: not a readable loop state ({exc})") from None
        unknown = [i for i in state.get("labels", {}) if i not in self.position]
        if unknown:
            raise ValueError(f"{self.state_file} labels id {unknown[0]!r}, which is not among the ids given; the state belongs to other data")
        if state.get("strategy") != self.strategy:
            raise ValueError(f"{self.state_file} was written by strategy {state.get('strategy')!r}, not {self.strategy!r}")
        self.labels, self.round = dict(state["labels"]), int(state["round"])

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"strategy": self.strategy, "round": self.round, "labels": self.labels}))
        os.replace(tmp, self.state_file)

    # --- what you train on ---
    def labelled(self) -> tuple[list, list]:
        """(ids, labels) of every labelled item, in the order they were taught."""
        ids = [self.ids[self.position[i]] for i in self.labels]
        return ids, list(self.labels.values())

    def pool(self) -> list:
        return [i for i in self.ids if str(i) not in self.labels]

    # --- the loop ---
    def query(self, model: torch.nn.Module, b: int, **options) -> list:
        """The ``b`` ids to label next, chosen by the strategy from the unlabelled ones (through
        batchal.acquire, as every entry point; ``options`` go to the strategy where it takes them)."""
        pool = self.pool()
        if not pool:
            return []
        labelled = [self.position[i] for i in self.labels]
        result = acquire(self.strategy, ModelPredictions([model], self.inputs, batch_size=self.batch_size),
                         [self.position[str(i)] for i in pool], b, labelled=labelled, seed=self.seed, round_=self.round,
                         mc_samples=self.mc_samples, options=options)
        return result.ids(self.ids)  # input positions -> your ids

    def teach(self, ids: Sequence, labels: Sequence) -> None:
        """Record the labels of ``ids`` (your ids); saved at once when there is a state file."""
        ids, labels = list(ids), list(labels)
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        for i in ids:
            if str(i) not in self.position:
                raise ValueError(f"id {i!r} is not one of the loop's ids")
        for i, label in zip(ids, labels):
            self.labels[str(i)] = label
        self.round += 1
        self._save()
