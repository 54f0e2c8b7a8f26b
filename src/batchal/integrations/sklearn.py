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

from typing import Optional

import numpy as np
import torch

from batchal.acquisition.registry import get_strategy, select


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


def query(estimator, X, y, batch_size: int, *, strategy: str = "batchbald", seed=0, embeddings=None, **options) -> np.ndarray:
    """Row numbers of the ``batch_size`` unlabelled rows of ``X`` (``y`` NaN) to label next."""
    X = np.asarray(X)
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be one value per row of X (NaN for unlabelled); got shape {y.shape} for {len(X)} rows")
    unlabelled = np.flatnonzero(np.isnan(y))
    if len(unlabelled) == 0:
        raise ValueError("every row of y is labelled: nothing left to query")
    spec = get_strategy(strategy)
    inputs = {}
    if spec.needs_log_probs:
        inputs["log_probs_N_K_C"] = _log_probs(estimator, X[unlabelled])
    if spec.needs_embeddings:
        features = np.asarray(embeddings if embeddings is not None else X, dtype=np.float64)
        inputs["embeddings_N_D"] = torch.from_numpy(features[unlabelled])
        if "labelled_embeddings" in spec.options and "labelled_embeddings" not in options:
            options["labelled_embeddings"] = torch.from_numpy(features[~np.isnan(y)])
    if not inputs:
        inputs["embeddings_N_D"] = torch.zeros(len(unlabelled), 1)
    picks = select(strategy, min(batch_size, len(unlabelled)), seed=seed, **inputs, **options)
    return unlabelled[picks.indices.numpy()]
