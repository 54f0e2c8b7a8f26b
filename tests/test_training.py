"""batchal.training.train_then_refit: early stopping without a free validation set."""

import pytest
import torch
from torch import nn

import batchal.training as training
from batchal.training import TrainConfig, train_then_refit


def test_the_epochs_come_from_the_held_out_part_then_every_label_is_trained_on(monkeypatch):
    calls = []
    real = training.train_model

    def spy(model, x, y, val_x, val_y, config, **kwargs):
        history = real(model, x, y, val_x, val_y, config, **kwargs)
        calls.append((len(x), None if val_x is None else len(val_x), config.max_epochs, history))
        return history

    monkeypatch.setattr(training, "train_model", spy)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    make = lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))  # noqa: E731
    config = TrainConfig(epoch_samples=32, max_epochs=12, patience=2)
    model = train_then_refit(make, x[:30], y[:30], x[30:], y[30:], config, seed=1)
    (n1, v1, e1, history), (n2, v2, e2, _) = calls
    best = max(r["epoch"] for r in history if r["best"])
    assert (n1, v1, e1) == (30, 10, 12) and (n2, v2, e2) == (40, None, best) and best <= len(history)
    assert not model.training
    # Deterministic: the same seed gives the same model.
    calls.clear()
    again = train_then_refit(make, x[:30], y[:30], x[30:], y[30:], config, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_without_a_held_out_part_one_model_trains_on_the_labels(monkeypatch):
    calls = []
    real = training.train_model
    monkeypatch.setattr(training, "train_model", lambda *a, **k: calls.append(a[5].max_epochs) or real(*a, **k))
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    train_then_refit(lambda: nn.Linear(5, 3), x, y, None, None, TrainConfig(epoch_samples=8, max_epochs=3), seed=0)
    assert calls == [3]


def test_per_class_recall_and_macro_f1_match_scikit_learn():
    from sklearn.metrics import f1_score, recall_score

    from batchal.training import metrics_of

    g = torch.Generator().manual_seed(3)
    log_probs = torch.log_softmax(torch.randn(200, 4, 5, generator=g), -1)
    y = torch.randint(0, 4, (200,), generator=g)  # class 4 never occurs: its recall is None
    m = metrics_of(log_probs, y)
    predicted = (torch.logsumexp(log_probs.double(), 1)).argmax(1).numpy()
    assert m["recall"][:4] == [pytest.approx(r) for r in recall_score(y.numpy(), predicted, labels=[0, 1, 2, 3], average=None)]
    assert m["recall"][4] is None
    assert m["macro_f1"] == pytest.approx(f1_score(y.numpy(), predicted, labels=[0, 1, 2, 3], average="macro"))
