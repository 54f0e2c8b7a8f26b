"""The one path from a model and a pool to a batch: every entry point calls :func:`acquire`.

    predictions = ModelPredictions([model], inputs, device="cpu")       # or your own Predictions
    result = acquire("batchbald", predictions, pool, 10, seed=0, round_=3, labelled=labelled)
    result.picked                                                        # positions in ``inputs``, pick order

The runner (``batchal run``), :class:`batchal.loop.ActiveLoop`, the labelling service, the Label
Studio backend and the Hugging Face and scikit-learn queries all come through here, so a
strategy is given the same inputs whichever way a user comes in. What a strategy is given is
read off its registry record (``batchal.acquisition.registry.Strategy``), never off its name:

- ``log_probs_from == "samples"``: K posterior samples (MC dropout with ``mc_samples`` masks, or
  an ensemble's members), N x K x C;
- ``needs_embeddings``: one dropout-off pass gives the features and (BADGE's p) the prediction;
  with an ensemble the prediction is the members' (``log_probs_from == "features_pass"``);
- ``needs_labelled``: the same for the labelled set (Coreset's centres, BAIT's Fisher);
- ``needs_pool_only``: nothing of the model (``random``);
- ``pool_input == "mean_N_K"`` (regression): the K samples' means, ``predictions.means``.

Seeding is one scheme, :func:`round_seed` (seed, round, purpose), for every entry point: the
same model, pool, strategy, seed and round give the same picks everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import torch

from batchal.acquisition.registry import Selection, Strategy, get_strategy, select
from batchal.bayesian.ensemble import ensemble_log_probs
from batchal.bayesian.predict import num_items, predict_embeddings, predict_log_probs

#: What each seeded draw of a round is for (the third argument of round_seed); the runner's splits
#: and stop set are drawn once, at round 0.
SEED_TRAIN, SEED_TRAIN_ORDER, SEED_EVALUATE, SEED_SUBSAMPLE, SEED_SELECT, SEED_SCORE, SEED_SPLITS, SEED_STOP_SET = 1, 2, 3, 4, 5, 6, 7, 8


def round_seed(seed: int, round_: int, purpose: int) -> int:
    """The seed of one draw of one round: every entry point's scheme."""
    return (int(seed) * 1_000_003 + int(round_) * 101 + int(purpose)) % (2**62)


class Predictions(Protocol):
    """What the seam needs of a model over a fixed set of inputs, addressed by position."""

    def log_probs(self, positions: list[int], k: int, seed: int) -> torch.Tensor:
        """log p(y | x, w_k) for the inputs at ``positions``: N x K x C."""

    def features(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features N x D, the prediction of the same dropout-off pass N x K' x C)."""

    # Regression models offer means(positions, k, seed) -> N x K: the K posterior samples' means.


def subset(inputs, positions: Sequence[int]):
    """The inputs at ``positions``: a tensor, a dict of tensors (a tokenizer's columns) or a Dataset."""
    index = torch.as_tensor(list(positions), dtype=torch.long)
    if isinstance(inputs, dict):
        return {k: v[index] if isinstance(v, torch.Tensor) and v.dim() else v for k, v in inputs.items()}
    if isinstance(inputs, torch.Tensor):
        return inputs[index]
    return torch.utils.data.Subset(inputs, [int(p) for p in positions])


class ModelPredictions:
    """Predictions of torch models over ``inputs``: one model (MC dropout) or several (an
    ensemble: its members are the K samples, and the features come from the first)."""

    def __init__(self, models, inputs, *, batch_size: int = 512, device=None):
        self.models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not self.models:
            raise ValueError("models must hold at least one model")
        self.inputs, self.batch_size, self.device = inputs, batch_size, device
        self.size = num_items(inputs)

    def _x(self, positions):
        return subset(self.inputs, positions)

    def log_probs(self, positions, k, seed):
        x = self._x(positions)
        if len(self.models) > 1:
            return ensemble_log_probs(self.models, x, self.batch_size, device=self.device)
        return predict_log_probs(self.models[0], x, k, self.batch_size, seed=seed, device=self.device)

    def features(self, positions):
        x = self._x(positions)
        embeddings, log_probs = predict_embeddings(self.models[0], x, self.batch_size, device=self.device)
        if len(self.models) > 1:  # BADGE's p: the members' averaged prediction
            log_probs = ensemble_log_probs(self.models, x, self.batch_size, device=self.device)
        return embeddings, log_probs


@dataclass
class Acquisition:
    """One round's acquisition.

    picked: positions in the predictions' inputs, in pick order (map them to your ids).
    candidates: the positions that competed (the pool, or its subsample).
    selection: the strategy's Selection (its indices are positions in ``candidates``).
    inputs: what the strategy was given (log_probs_N_K_C, embeddings_N_D, labelled_...).
    seconds: {"score": ..., "select": ...}.
    """

    picked: list[int]
    candidates: list[int]
    selection: Selection
    inputs: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def ids(self, ids: Sequence) -> list:
        """The picks as the caller's ids (``ids[position]``)."""
        return [ids[p] for p in self.picked]


def subsample_pool(pool: torch.Tensor, size: int, generator: torch.Generator, group_size: Optional[int] = None) -> torch.Tensor:
    """``size`` random pool entries; with ``group_size``, whole groups of copies (dataset index
    modulo ``group_size``) are taken together, so that a repeated item's copies stay in the
    candidates side by side (uniform subsampling would keep a copy's twin only
    ``size / len(pool)`` of the time and hide the redundancy Repeated MNIST is about)."""
    if group_size is None:
        return pool[torch.randperm(len(pool), generator=generator)[:size]]
    keys = pool % group_size
    rank = torch.randperm(group_size, generator=generator)[keys]
    order = torch.argsort(rank * group_size + keys, stable=True)
    return pool[order[:size]]


def candidates_of(pool: Sequence[int], subsample: Optional[int], seed: int, round_: int, group_size: Optional[int] = None) -> list[int]:
    """The pool positions this round scores: all of them, or ``subsample`` of them (seeded by the round)."""
    pool_t = torch.as_tensor(list(pool), dtype=torch.long)
    if subsample is None or subsample >= len(pool_t):
        return pool_t.tolist()
    g = torch.Generator().manual_seed(round_seed(seed, round_, SEED_SUBSAMPLE))
    return subsample_pool(pool_t, subsample, g, group_size).tolist()


def _balanced(selection: Selection, predictions: Predictions, candidates: list[int], inputs: dict, labels: Sequence[int],
              batch_size: int, seed: int, round_: int) -> Selection:
    """The selection cut to ``batch_size`` by the class-balancing rule, on each ranked candidate's predicted class."""
    ranked = selection.indices.tolist()
    log_probs = inputs.get("log_probs_N_K_C")
    if log_probs is not None:
        log_probs = log_probs[torch.as_tensor(ranked, dtype=torch.long)]
    else:  # the strategy needed no predictions: one deterministic pass for the classes
        log_probs = predictions.log_probs([candidates[p] for p in ranked], 1, round_seed(seed, round_, SEED_SCORE))
    predicted = torch.logsumexp(log_probs.double(), dim=1).argmax(1).tolist()
    num_classes = max([int(log_probs.shape[2])] + [int(c) + 1 for c in labels])
    counts = torch.bincount(torch.as_tensor([int(c) for c in labels], dtype=torch.long), minlength=num_classes).tolist()
    kept = balance_batch(predicted, counts, batch_size)
    return Selection(indices=selection.indices[kept], scores=selection.scores[kept], strategy=selection.strategy,
                     info={**selection.info, "balanced": {"ranked": len(ranked), "ranked_classes": predicted, "kept": kept,
                                                          "labelled_counts": counts}},
                     running_total=False)


def strategy_inputs(spec: Strategy, predictions: Predictions, candidates: list[int], labelled: Sequence[int], *,
                    mc_samples: int, seed: int) -> dict[str, Any]:
    """Exactly the inputs ``spec`` declares, for the candidates (and the labelled set where it asks)."""
    inputs: dict[str, Any] = {}
    if spec.pool_input == "mean_N_K":  # regression: the K samples' means
        inputs["mean_N_K"] = predictions.means(candidates, mc_samples, seed)
    elif spec.pool_input is not None:
        raise ValueError(f"strategy {spec.name!r} takes its pool as {spec.pool_input}, which batchal.acquire does not compute "
                         "from a model; call batchal.select with it")
    elif spec.needs_embeddings:
        inputs["embeddings_N_D"], log_probs = predictions.features(candidates)
        if spec.log_probs_from == "features_pass":
            inputs["log_probs_N_K_C"] = log_probs
    elif spec.log_probs_from == "samples":
        inputs["log_probs_N_K_C"] = predictions.log_probs(candidates, mc_samples, seed)
    else:  # the pool's size is all it needs
        inputs["embeddings_N_D"] = torch.zeros(len(candidates), 1)
    if spec.needs_labelled:
        labelled = list(labelled)
        embeddings, log_probs = predictions.features(labelled) if labelled else (None, None)
        if "labelled_embeddings" in spec.needs_labelled:
            inputs["labelled_embeddings"] = embeddings
        if "labelled_log_probs" in spec.needs_labelled:
            inputs["labelled_log_probs"] = log_probs
    return inputs


#: The class-balancing wrapper lets the strategy rank this many times the batch before balancing.
BALANCE_OVERSELECT = 3


def balance_batch(ranked_classes: Sequence[int], labelled_counts: Sequence[int], batch_size: int) -> list[int]:
    """The class-balancing rule (``balance=``, ``batchal run --balance``): which of the strategy's
    ranked candidates to keep, as positions in its ranking.

    ``ranked_classes``: each ranked candidate's predicted class, in the strategy's order of
    preference; ``labelled_counts``: how many labels each class has so far. The batch's slots go
    one at a time to the class whose labelled count plus slots so far is smallest, among the
    classes that still have an unassigned ranked candidate (ties: the lower class id): water
    filling towards equal counts, so a rare class gets slots first and a class the strategy
    never ranked gets none. Each class's slots go to its candidates in the strategy's order; the
    kept positions come back in that order. (As small-text's ClassBalancer, on the strategy's
    own ranking: any strategy can be balanced.)
    """
    counts = [int(c) for c in labelled_counts]
    available: dict[int, int] = {}
    for c in ranked_classes:
        available[int(c)] = available.get(int(c), 0) + 1
        if int(c) >= len(counts):
            counts += [0] * (int(c) + 1 - len(counts))
    quota = {c: 0 for c in available}
    for _ in range(min(batch_size, len(ranked_classes))):
        open_classes = [c for c in available if quota[c] < available[c]]
        c = min(open_classes, key=lambda k: (counts[k] + quota[k], k))
        quota[c] += 1
    kept = []
    for position, c in enumerate(ranked_classes):
        if quota[int(c)] > 0:
            quota[int(c)] -= 1
            kept.append(position)
    return kept


def acquire(
    strategy: str,
    predictions: Predictions,
    pool: Sequence[int],
    batch_size: int,
    *,
    labelled: Sequence[int] = (),
    seed: int = 0,
    round_: int = 0,
    mc_samples: int = 20,
    subsample: Optional[int] = None,
    group_size: Optional[int] = None,
    options: Optional[dict[str, Any]] = None,
    protocol: Optional[dict[str, Any]] = None,
    device=None,
    progress: Optional[Callable[[int, int], None]] = None,
    balance: Optional[Sequence[int]] = None,
) -> Acquisition:
    """Pick ``batch_size`` of ``pool`` (positions in the predictions' inputs) with ``strategy``.

    labelled: positions of the labelled inputs (for strategies that condition on them).
    seed, round_: the draw's seeds come from round_seed(seed, round_, purpose).
    subsample: score only this many random pool entries (copies of one item together when
        ``group_size`` is given).
    options: the strategy's own options, as ``select`` takes them (an unknown one is refused).
    protocol: a protocol's settings for whichever strategy runs (e.g. num_samples, prefilter):
        those the strategy does not take are left out; ``prefilter`` is never below the batch.
    device: where selection runs (the inputs are moved there).
    balance: the labelled items' classes (one per labelled item) to balance the batch by
        (``balance_batch``'s rule): the strategy ranks BALANCE_OVERSELECT times the batch, and
        the kept picks are those the rule chooses, in the strategy's order. Classification only.
    """
    spec = get_strategy(strategy)
    if balance is not None and spec.kind not in ("classification",) and not spec.needs_pool_only:
        raise ValueError(f"balance= needs predicted classes: strategy {strategy!r} is a {spec.kind} strategy")
    candidates = candidates_of(pool, subsample, seed, round_, group_size)
    if not candidates:
        raise ValueError("the pool is empty: nothing left to acquire")
    start = time.perf_counter()
    inputs = strategy_inputs(spec, predictions, candidates, labelled, mc_samples=mc_samples,
                             seed=round_seed(seed, round_, SEED_SCORE))
    score_seconds = time.perf_counter() - start
    taken = {name: value for name, value in (protocol or {}).items() if name in spec.options}
    if taken.get("prefilter") is not None:  # never below the batch (the last round's may be smaller)
        taken["prefilter"] = max(taken["prefilter"], min(batch_size, len(candidates)))
    given = {**inputs, **taken, **(options or {})}
    if device is not None:
        given = {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in given.items()}
    start = time.perf_counter()
    wanted = min(batch_size, len(candidates))
    ranked = min(BALANCE_OVERSELECT * wanted, len(candidates)) if balance is not None else wanted
    selection = select(strategy, ranked, seed=round_seed(seed, round_, SEED_SELECT), progress=progress, **given)
    if balance is not None:
        selection = _balanced(selection, predictions, candidates, inputs, balance, wanted, seed, round_)
    select_seconds = time.perf_counter() - start
    picked = [candidates[p] for p in selection.indices.tolist()]  # candidate positions -> input positions
    return Acquisition(picked=picked, candidates=candidates, selection=selection, inputs=inputs,
                       seconds={"score": score_seconds, "select": select_seconds})
