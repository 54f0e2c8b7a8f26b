"""An sklearn-style query for people who think in estimators.

    from batchal.integrations.sklearn import query
    y = np.full(len(X), np.nan); y[:20] = known_labels           # NaN: not labelled yet
    model = RandomForestClassifier().fit(X[~np.isnan(y)], y[~np.isnan(y)])
    picks = query(model, X, y, 10, strategy="batchbald")          # row numbers of X to label next

The posterior samples: the fitted estimator's members when it has them (a forest's or a bagging
ensemble's ``estimators_``, each member's ``predict_proba`` one sample, in the classes of the
whole model), else its ``predict_proba`` alone (K = 1: top-b strategies and BADGE-free ones).
Features for embedding strategies (``badge``, ``coreset``, ...) are X itself unless
``embeddings`` is given. Returns row numbers of X (never positions in the unlabelled subset).
"""

from __future__ import annotations


import numpy as np
import torch

from batchal.acquire import acquire


def _log_probs(estimator, X: np.ndarray) -> torch.Tensor:
    classes = list(getattr(estimator, "classes_", []))
    members = getattr(estimator, "estimators_", None)
    if members is not None and len(members) > 1 and all(hasattr(m, "predict_proba") for m in np.ravel(members)):
        samples = []
        for member in np.ravel(members):
            p = member.predict_proba(X)
            full = np.zeros((len(X), len(classes)))
            # Members are fitted on the ensemble's encoded labels 0..C-1 and may have seen only some
            # of them (a bootstrap sample): each column goes to the class it encodes.
            own = getattr(member, "classes_", np.arange(p.shape[1]))
            for j, c in enumerate(own):
                full[:, int(c)] = p[:, j]
            samples.append(full)
        probs = np.stack(samples, axis=1)
    elif hasattr(estimator, "predict_proba"):
        probs = estimator.predict_proba(X)[:, None, :]
    else:
        raise ValueError(f"estimator {type(estimator).__name__} has no predict_proba; fit a probabilistic classifier")
    probs = np.clip(probs, 1e-12, None)
    probs = probs / probs.sum(-1, keepdims=True)
    return torch.from_numpy(np.log(probs))


class EstimatorPredictions:
    """batchal.acquire's predictions of a fitted estimator over X: its members are the K samples,
    its own ``predict_proba`` the single prediction, ``embeddings`` (default X) the features."""

    def __init__(self, estimator, X: np.ndarray, embeddings=None):
        self.estimator, self.X = estimator, X
        self.embeddings = np.asarray(embeddings if embeddings is not None else X, dtype=np.float64)
        if len(self.embeddings) != len(X):
            raise ValueError(f"embeddings hold {len(self.embeddings)} rows but X holds {len(X)}; one row of features per row of X")

    def log_probs(self, positions, k, seed):
        return _log_probs(self.estimator, self.X[positions])

    def features(self, positions):
        probs = np.clip(self.estimator.predict_proba(self.X[positions]), 1e-12, None)
        probs = probs / probs.sum(-1, keepdims=True)
        return torch.from_numpy(self.embeddings[positions]), torch.from_numpy(np.log(probs))[:, None, :]


def query(estimator, X, y, batch_size: int, *, strategy: str = "batchbald", seed=0, round_: int = 0, embeddings=None,
          **options) -> np.ndarray:
    """Row numbers of the ``batch_size`` unlabelled rows of ``X`` (``y`` NaN) to label next
    (through batchal.acquire, as every entry point; ``round_``, the batch's index, seeds it with
    ``seed`` as batchal.acquire.round_seed says)."""
    X = np.asarray(X)
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be one value per row of X (NaN for unlabelled); got shape {y.shape} for {len(X)} rows")
    unlabelled = np.flatnonzero(np.isnan(y))
    if len(unlabelled) == 0:
        raise ValueError("every row of y is labelled: nothing left to query")
    labelled = np.flatnonzero(~np.isnan(y)).tolist()
    result = acquire(strategy, EstimatorPredictions(estimator, X, embeddings), unlabelled.tolist(), batch_size,
                     labelled=labelled, seed=seed, round_=round_, options=options)
    return np.asarray(result.picked, dtype=np.int64)
