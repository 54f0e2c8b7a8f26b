"""When to stop labelling: rules that look at the models of successive rounds.

- Stabilizing predictions (Bloodgood & Vijay-Shanker 2009): predict a fixed "stop set" of
  unlabelled inputs with each round's model; stop once Cohen's kappa between consecutive
  rounds' predictions averages at least ``threshold`` (0.99) over the last ``window`` (3)
  comparisons: the model has stopped changing its mind, so more labels change little.
- Held-out accuracy plateau: stop once the held-out (validation) accuracy has not improved
  on its best by more than ``min_delta`` for ``patience`` rounds.

``parse_stop("stabilizing")``, ``"stabilizing:0.98:4"``, ``"plateau"``, ``"plateau:5"`` give
the rules ``batchal run --stop`` and the labelling service use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np


def cohen_kappa(a: Sequence, b: Sequence) -> Optional[float]:
    """Cohen's kappa between two labelings of the same items, classes of any type: two models'
    predictions (the stopping rule), two annotators' labels (the labelling service's agreement).
    1.0 when they agree perfectly, including the degenerate case of one class throughout; None
    for fewer than two items (no agreement to measure)."""
    a, b = np.asarray(list(a)), np.asarray(list(b))
    if a.shape != b.shape:
        raise ValueError(f"kappa needs two labelings of the same items, got {a.shape} and {b.shape}")
    if a.size < 2:
        return None
    observed = float((a == b).mean())
    classes = np.union1d(a, b)
    expected = float(sum((a == c).mean() * (b == c).mean() for c in classes))
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class StabilizingPredictions:
    threshold: float = 0.99
    window: int = 3
    stop_set_size: int = 1000
    reason = "stabilizing_predictions"

    def should_stop(self, kappas: Sequence[Optional[float]]) -> bool:
        recent = [k for k in kappas if k is not None][-self.window :]
        return len(recent) == self.window and float(np.mean(recent)) >= self.threshold

    def describe(self, kappas: Sequence[Optional[float]]) -> str:
        recent = [k for k in kappas if k is not None][-self.window :]
        return (f"predictions have stabilised: Cohen's kappa between consecutive models averaged {np.mean(recent):.3f} "
                f"(>= {self.threshold}) over the last {self.window} batches")


@dataclass(frozen=True)
class AccuracyPlateau:
    patience: int = 3
    min_delta: float = 0.0
    reason = "accuracy_plateau"

    def should_stop(self, accuracies: Sequence[float]) -> bool:
        if len(accuracies) <= self.patience:
            return False
        best_before = max(accuracies[: -self.patience])
        return max(accuracies[-self.patience :]) <= best_before + self.min_delta

    def describe(self, accuracies: Sequence[float]) -> str:
        return (f"the held-out accuracy has not improved for {self.patience} batches "
                f"(best {max(accuracies[: -self.patience]):.1%}); labelling more may no longer pay")


Rule = Union[StabilizingPredictions, AccuracyPlateau]


def parse_stop(spec: Optional[str]) -> Optional[Rule]:
    """``None``, ``stabilizing[:THRESHOLD[:WINDOW]]`` or ``plateau[:PATIENCE]`` -> a rule."""
    if spec is None:
        return None
    name, *args = str(spec).split(":")
    try:
        if name == "stabilizing" and len(args) <= 2:
            rule = StabilizingPredictions(*(f(a) for f, a in zip((float, int), args)))
            if not 0 < rule.threshold <= 1 or rule.window < 1:
                raise ValueError
            return rule
        if name == "plateau" and len(args) <= 1:
            rule = AccuracyPlateau(*(int(a) for a in args))
            if rule.patience < 1:
                raise ValueError
            return rule
    except (TypeError, ValueError):
        pass
    raise ValueError(f"--stop must be stabilizing[:THRESHOLD[:WINDOW]] (e.g. stabilizing:0.99:3) or plateau[:PATIENCE] "
                     f"(e.g. plateau:3), got {spec!r}")
