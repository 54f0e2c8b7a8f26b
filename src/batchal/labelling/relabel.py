"""Another label on an item already labelled, or a label on a new one? ActiveLab's question
(Goh and Mueller, 2023, cleanlab's ``get_active_learning_scores``), answered for each batch.

With several annotators some labels are wrong. A second (or third) label on a doubtful item can
be worth more than a label on a new item. ActiveLab scores both kinds of item on one scale, the
estimated probability that the item's label is (or would be) right, and asks for labels where it
is lowest. Here, per item (``p``: the model's predicted class probabilities, ``C`` classes):

- weights: an annotator's ``w_a = max(1 - (1 - agreement_a) / (1 - chance), 0.01)``, from their
  agreement with the others' vote (``quality.reliability``, leave-one-out; 1 while unknown); the
  model's ``w_m`` is the same formula on the held-out audit accuracy estimate (1 while there is
  none), times the square root of the mean number of labels per labelled item; ``chance`` is
  the larger of 1/C and the most common class's share of the labels (CROWDLAB's baseline);
  ``w̄`` is the annotators' mean weight;
- the quality of a labelled item's consensus label ``y`` (its vote; for a tie, the tied label
  the model finds likeliest): with one label, ``p[y]``; with several,
  ``q = (w_m p[y] + sum_a w_a [y_a = y]) / (w_m + sum_a w_a)``;
- a labelled item's score: ``(W q + w̄ / C) / (W + w̄)`` with ``W = w_m + sum_a w_a`` over its
  annotators; a new item's score: ``(w_m max p + w̄ / C) / (w_m + w̄)``.

The rule. The strategy (BatchBALD, BADGE, ...) picks the batch as usual. The b lowest scores
among its picks and the labelled items are what ActiveLab would label next; every labelled item
among them takes the slot of one of the strategy's picks, the last-ranked first (a greedy
strategy's batch is a prefix, so its best picks stay), at most ``MAX_SHARE`` of the batch.
Relabelled items go to annotators who have not labelled them (``Store.labels_needed``); the
item's training label stays the vote of its annotators' labels. Audit items are never
relabelled (their labels are the accuracy estimate's ground truth, and an extra label chosen by
the model would bias it). Only a project with two annotators or more relabels.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

#: At most this share of a batch goes to second opinions.
MAX_SHARE = 0.5
#: Weights never reach 0 (CROWDLAB's clipping bound).
FLOOR = 0.01


def weight(accuracy: Optional[float], chance: float) -> float:
    """How much better than always answering the most common class an accuracy is, in (0, 1]; 1 when unknown."""
    if accuracy is None or math.isnan(accuracy):
        return 1.0
    return max(1.0 - (1.0 - accuracy) / max(1.0 - chance, 1e-12), FLOOR)


def labelled_scores(probs: dict[int, np.ndarray], given: dict[int, list[tuple[int, float]]], model_weight: float,
                    mean_annotator_weight: float) -> dict[int, float]:
    """ActiveLab's score of each labelled item: ``probs[item]`` the model's probabilities over the
    classes, ``given[item]`` its annotators' (class index, annotator weight). Lower: another label is worth more."""
    out = {}
    for item, labels in given.items():
        p = probs[item]
        classes = p.shape[0]
        counts: dict[int, int] = {}
        for c, _ in labels:
            counts[c] = counts.get(c, 0) + 1
        top = max(counts.values())
        consensus = max((c for c, n in counts.items() if n == top), key=lambda c: p[c])
        total = model_weight + sum(w for _, w in labels)
        if len(labels) == 1:
            quality = float(p[consensus])
        else:
            quality = (model_weight * float(p[consensus]) + sum(w for c, w in labels if c == consensus)) / total
        out[item] = (total * quality + mean_annotator_weight / classes) / (total + mean_annotator_weight)
    return out


def new_scores(probs_N_C: np.ndarray, model_weight: float, mean_annotator_weight: float) -> np.ndarray:
    """ActiveLab's score of items with no label yet (comparable with ``labelled_scores``)."""
    classes = probs_N_C.shape[1]
    return (model_weight * probs_N_C.max(1) + mean_annotator_weight / classes) / (model_weight + mean_annotator_weight)


def relabel_choice(pick_scores: list[float], labelled: dict[int, float], max_share: float = MAX_SHARE) -> list[int]:
    """The labelled items to ask another label for, lowest score first: those among the b lowest
    scores of the picks and the labelled items together (b = the number of picks), at most
    ``max_share`` of b. They replace the strategy's last picks."""
    b = len(pick_scores)
    if b == 0 or not labelled:
        return []
    merged = sorted([(s, 0, n) for n, s in enumerate(pick_scores)] + [(s, 1, item) for item, s in labelled.items()])[:b]
    chosen = [item for s, kind, item in merged if kind == 1]
    return chosen[: int(math.floor(max_share * b))]
