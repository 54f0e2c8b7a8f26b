"""Hints that never overclaim (issue 33, item 5), by a simulated labeller over 20 batches.

The labelling service runs on scikit-learn's digits (their 64 pixel values as features, a
Bayesian MLP head), a batch of 10 (+2 random audit items) at a time. The simulated labeller
gives the true labels, or random ones. Each round the test computes what the service would print
as the bound on the paired gain over 3 batches (``quality.paired_gain`` on the audit items) and
the true gain of the current model over the one 3 batches earlier, on the current unlabelled
pool (from each model's stored predictions). True labels: the bound covers the true gain in at
least 90% of the rounds where it is computed. Random labels: the stop hint never fires and the
chance warning does.
"""

import numpy as np
import pytest

pytest.importorskip("PIL")
from labelling_support import features_project  # noqa: E402

from batchal.labelling import quality  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402

ROUNDS, WINDOW = 20, 3


def digits_project(tmp_path, count=500):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data[:count].astype(np.float32) / 16, digits.target[:count]
    return features_project(tmp_path, x, y, TrainConfig(epoch_samples=256, max_epochs=8, patience=2), strategy="random",
                            batch_size=10, mc_samples=4, stop_patience=WINDOW)


def simulate(project, truth, answer):
    """ROUNDS batches labelled by ``answer(item)``; per round: (bound, true gain) when computable, the hint, the warning."""
    rounds, pool_predictions = [], []
    for _ in range(ROUNDS):
        project.request_next()
        project.wait(300)
        assert project.state != "failed", project.error
        labels = project.store.current_labels()
        predictions = {item: label for item, (label, _) in project.store.predictions().items()}
        pool_predictions.append(predictions)
        history = [r for r in project.store.accuracy_history() if r.get("per_item")]
        record = {"hint": project.stop_hint(), "warning": project.status()["chance_warning"]}
        if len(history) > WINDOW and len(pool_predictions) > WINDOW:
            compared = quality.paired_gain(history[-1]["per_item"], history[-1 - WINDOW]["per_item"])
            before = pool_predictions[-1 - WINDOW]
            unlabelled = [i for i in predictions if i not in labels and i in before]
            true_gain = np.mean([(predictions[i] == truth[i]) - (before[i] == truth[i]) for i in unlabelled])
            record.update(bound=compared[2], true_gain=float(true_gain))
        rounds.append(record)
        for item in project.store.current_batch()[1]:
            project.add_label(item, answer(item))
    return rounds


def test_with_true_labels_the_bound_covers_the_true_gain(tmp_path):
    project, truth = digits_project(tmp_path)
    try:
        rounds = simulate(project, truth, truth.get)
    finally:
        project.close()
    checked = [r for r in rounds if "bound" in r]
    assert len(checked) >= 10
    covered = sum(r["true_gain"] <= r["bound"] for r in checked)
    assert covered >= 0.9 * len(checked), [(round(r["true_gain"], 3), round(r["bound"], 3)) for r in checked]
    assert all(r["warning"] is None for r in rounds[-5:])  # a model that learns is never called chance


def test_with_random_labels_the_hint_never_fires_and_the_warning_does(tmp_path):
    project, truth = digits_project(tmp_path)
    rng = np.random.default_rng(0)
    try:
        rounds = simulate(project, truth, lambda item: str(rng.integers(10)))
    finally:
        project.close()
    assert all(r["hint"] is None for r in rounds)
    assert any(r["warning"] for r in rounds) and "not shown to beat chance" in rounds[-1]["warning"]
