"""The sklearn-style query on estimators and a pipeline."""

import numpy as np
import pytest
from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import batchal
from batchal.integrations.sklearn import _log_probs, query


def data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(n, 4)) + np.eye(3, 4)[y] * 2, y


def test_a_forests_trees_are_the_posterior_samples_and_rows_come_back():
    X, truth = data()
    y = np.full(len(X), np.nan)
    y[:15] = truth[:15]
    forest = RandomForestClassifier(n_estimators=12, random_state=0).fit(X[:15], truth[:15])
    lp = _log_probs(forest, X[15:])
    assert lp.shape == (135, 12, 3)
    assert np.allclose(lp.exp().mean(1).numpy(), forest.predict_proba(X[15:]), atol=1e-6)  # the trees average to the forest
    picks = query(forest, X, y, 5, strategy="batchbald")
    assert len(set(picks)) == 5 and all(np.isnan(y[p]) for p in picks)  # row numbers of X, all unlabelled
    expected = 15 + batchal.select("batchbald", 5, log_probs_N_K_C=lp, seed=0).indices.numpy()
    assert picks.tolist() == expected.tolist()
    bag = BaggingClassifier(LogisticRegression(), n_estimators=6, random_state=0).fit(X[:15], truth[:15])
    assert _log_probs(bag, X[:4]).shape == (4, 6, 3)


def test_a_pipeline_with_margin_and_coreset_and_refusals():
    X, truth = data()
    y = np.full(len(X), np.nan)
    y[:20] = truth[:20]
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:20], truth[:20])
    assert len(query(pipe, X, y, 4, strategy="margin")) == 4
    picks = query(pipe, X, y, 4, strategy="coreset")
    assert all(p >= 20 for p in picks)
    with pytest.raises(ValueError, match="one value per row of X"):
        query(pipe, X, y[:10], 4)
    with pytest.raises(ValueError, match="every row of y is labelled"):
        query(pipe, X, truth.astype(float), 4, strategy="margin")
