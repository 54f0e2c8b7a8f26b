"""The active-learning loop end to end: rounds, resumption, index mapping, configuration errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import batchal
from batchal.data import Dataset
from batchal.acquire import subsample_pool
from batchal.experiment import (
    ExperimentConfig, balanced_initial_indices, labels_to_reach, read_results, run_experiment,
)
from batchal.models import create_model, register_model
from batchal.training import TrainConfig, evaluate, train_model

FAST = TrainConfig(epoch_samples=128, max_epochs=2, patience=1)


def fast_config(**kwargs):
    defaults = dict(dataset="digits", strategy="bald", acquisition_size=5, initial_size=10, budget=20,
                    mc_samples=5, num_samples=200, validation_size=50, train=FAST)
    return ExperimentConfig(**{**defaults, **kwargs})


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("strategy", ["batchbald", "badge", "coreset", "random"])
def test_three_rounds_on_digits_end_to_end(tmp_path, strategy):
    rows = run_experiment(fast_config(strategy=strategy), tmp_path)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["labelled"] for r in rows] == [10, 15, 20]
    assert rows[-1]["stop_reason"] == "budget" and rows[-1]["acquired"] == []
    data = batchal.data.load_dataset("digits")
    acquired = [i for r in rows for i in r["acquired"]]
    assert len(set(acquired)) == 10
    for r in rows[:-1]:
        assert r["acquired_labels"] == data.train_y[r["acquired"]].tolist()
        assert len(r["scores"]) == 5 and set(r["seconds"]) == {"train", "evaluate", "score", "select"}
        assert 0 <= r["test_accuracy"] <= 1 and r["test_nll"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == "digits" and config["strategy"] == strategy and config["acquisition_size"] == 5
    assert config["model"] == "mlp" and config["test_mc_samples"] == 5 and config["train"]["epoch_samples"] == 128
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_resume_after_a_partial_write_gives_identical_results(tmp_path):
    full = run_experiment(fast_config(budget=25), tmp_path / "full")
    part = tmp_path / "part"
    run_experiment(fast_config(budget=25), part)
    # Simulate a crash after round 1 while round 2 was being written.
    lines = (part / "results.jsonl").read_text().splitlines(keepends=True)
    (part / "results.jsonl").write_text("".join(lines[:2]) + lines[2][:17])
    assert len(read_results(part / "results.jsonl")) == 2
    resumed = run_experiment(fast_config(budget=25), part)
    assert without_seconds(resumed) == without_seconds(full)


def test_kill_and_resume_gives_identical_results(tmp_path):
    """A run killed (SIGKILL) part-way and resumed gives the rows of a run never interrupted. The
    uninterrupted run is made in this process (the command's own settings, so the same rows);
    only the killed and the resumed runs need a process of their own."""
    args = [sys.executable, "-m", "batchal.cli", "run", "--dataset", "digits", "--strategy", "bald", "--acquisition-size", "5",
            "--initial-size", "10", "--budget", "30", "--mc-samples", "5", "--validation-size", "50", "--max-epochs", "2",
            "--epoch-samples", "128", "--seeds", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "b")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    results = tmp_path / "b" / "digits" / "bald-b5-seed0" / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_results(results))
    a = run_experiment(ExperimentConfig(dataset="digits", strategy="bald", acquisition_size=5, initial_size=10, budget=30, mc_samples=5,
                                        validation_size=50, train=TrainConfig(max_epochs=2, epoch_samples=128)), tmp_path / "a")
    assert 2 <= done_before < len(a), "the run should have been killed part-way"
    subprocess.run(args + ["--out", str(tmp_path / "b")], check=True, capture_output=True, env=env, timeout=600)
    b = read_results(results)
    assert len(a) == 5 and without_seconds(a) == without_seconds(b)


class IndexModel(nn.Module):
    """Logits [0, 5 f] from the input's first feature f = dataset index / N: entropy falls with f.
    Training cannot change it (its one parameter is multiplied by zero)."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.dropout = batchal.ConsistentMCDropout(0.0)
        self.unused = nn.Linear(1, 1)

    def forward(self, x):
        f = self.dropout(x)[:, 0]
        return torch.stack([torch.zeros_like(f), 5 * f], dim=1) + 0 * self.unused.weight.sum()


def test_subsampled_picks_map_back_to_the_right_dataset_items(tmp_path):
    try:
        register_model("index_model", IndexModel)
    except ValueError:
        pass
    N = 400
    x = (torch.arange(N, dtype=torch.float32) / N)[:, None]
    y = torch.arange(N) % 2
    data = Dataset("digits", x, y, x[:50], y[:50], ["a", "b"], is_image=False)
    config = fast_config(strategy="entropy", model="index_model", pool_subsample=60, budget=30, acquisition_size=5,
                         initial_size=10, validation_size=20)
    rows = run_experiment(config, tmp_path, data=data)
    for row in rows[:-1]:
        f = torch.tensor(row["acquired"], dtype=torch.float32) / N
        probs = torch.softmax(torch.stack([torch.zeros_like(f), 5 * f], 1).double(), 1)
        expected = -(probs * probs.log()).sum(1)
        assert torch.allclose(torch.tensor(row["scores"], dtype=torch.float64), expected, atol=1e-5)
        assert row["acquired_labels"] == (torch.tensor(row["acquired"]) % 2).tolist()
    acquired = [i for r in rows for i in r["acquired"]]
    assert len(set(acquired)) == len(acquired)
    # Subsampling: picks are not simply the globally lowest indices.
    assert sorted(acquired) != list(range(len(acquired)))


def test_grouped_subsample_keeps_copies_together():
    group, copies = 50, 3
    gone = {0, 7, 57, 120}  # some copies already labelled: their twins still count as one group
    pool = torch.tensor([i for i in range(group * copies) if i not in gone])
    for seed in range(5):
        picked = subsample_pool(pool, 40, torch.Generator().manual_seed(seed), group_size=group)
        assert len(picked) == 40 and len(set(picked.tolist())) == 40
        assert set(picked.tolist()) <= set(pool.tolist())
        keys = (picked % group).tolist()
        complete = [k for k in set(keys) if keys.count(k) == sum(1 for i in pool.tolist() if i % group == k)]
        # Every group is complete except at most the one cut by the size limit.
        assert len(set(keys)) - len(complete) <= 1
    # Different seeds draw different groups; ungrouped draws are plain random subsets.
    a = subsample_pool(pool, 40, torch.Generator().manual_seed(0), group_size=group)
    b = subsample_pool(pool, 40, torch.Generator().manual_seed(1), group_size=group)
    assert set(a.tolist()) != set(b.tolist())
    flat = subsample_pool(pool, 40, torch.Generator().manual_seed(0))
    assert len(set((flat % group).tolist())) > len(set((a % group).tolist()))


def test_repeated_data_sets_subsample_by_copy_groups(tmp_path, monkeypatch):
    import batchal.acquire as seam

    seen = []
    real = seam.subsample_pool

    def spy(pool, size, generator, group_size=None):
        seen.append(group_size)
        return real(pool, size, generator, group_size=group_size)

    monkeypatch.setattr(seam, "subsample_pool", spy)
    data = batchal.data.load_dataset("repeated-digits", copies=2)
    run_experiment(fast_config(dataset="repeated-digits", copies=2, strategy="random", pool_subsample=100, budget=30), tmp_path / "r", data=data)
    run_experiment(fast_config(dataset="digits", strategy="random", pool_subsample=100, budget=30), tmp_path / "d")
    assert seen[0] == len(data.train_y) // 2 and seen[-1] is None


def test_prefiltered_batchbald_in_the_loop(tmp_path):
    rows = run_experiment(fast_config(strategy="batchbald", prefilter=3, budget=20), tmp_path)
    # The prefilter is raised to the batch size (5), so every round still acquires b points.
    assert [len(r["acquired"]) for r in rows] == [5, 5, 0]
    assert json.loads((tmp_path / "config.json").read_text())["prefilter"] == 3


def test_balanced_initial_set():
    labels = torch.arange(100) % 10
    idx = balanced_initial_indices(labels, 23, torch.Generator().manual_seed(0))
    counts = labels[idx].bincount(minlength=10)
    assert len(set(idx.tolist())) == 23 and int(counts.max()) - int(counts.min()) <= 1


def test_zero_initial_labels_starts_from_an_untrained_model(tmp_path):
    rows = run_experiment(fast_config(initial_size=0, budget=10, strategy="random"), tmp_path)
    assert [r["labelled"] for r in rows] == [0, 5, 10]


def test_target_accuracy_stops_early(tmp_path):
    rows = run_experiment(fast_config(budget=100, target_accuracy=0.05), tmp_path)
    assert len(rows) == 1 and rows[0]["stop_reason"] == "target_accuracy"


def test_labels_to_reach_uses_the_papers_counting():
    rows = [{"labelled": 20, "test_accuracy": 0.5}, {"labelled": 30, "test_accuracy": 0.91}, {"labelled": 40, "test_accuracy": 0.96}]
    assert labels_to_reach(rows, 0.9, 10) == 20
    assert labels_to_reach(rows, 0.99, 10) is None
    # Reached by the initial set alone: its size, never "initial - b" (negative when b > initial).
    assert labels_to_reach(rows, 0.4, 25) == 20


def test_resuming_with_a_different_configuration_is_refused(tmp_path):
    run_experiment(fast_config(budget=15), tmp_path)
    with pytest.raises(ValueError, match="different configuration"):
        run_experiment(fast_config(budget=15, acquisition_size=3), tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"dataset": "cifar"}, "dataset must be one of"),
    ({"strategy": "bal"}, "strategy must be one of"),
    ({"acquisition_size": 0}, "acquisition_size"),
    ({"initial_size": -1}, "initial_size"),
    ({"budget": 5, "initial_size": 10}, "budget=5 is smaller than initial_size=10"),
    ({"mc_samples": 0}, "mc_samples"),
    ({"pool_subsample": 0}, "pool_subsample"),
    ({"prefilter": 0}, "prefilter"),
    ({"target_accuracy": 1.5}, "target_accuracy"),
    ({"model": "resnet"}, "model must be one of"),
    ({"strategy": "batchbald", "num_samples": 3}, "num_samples=3 is smaller than mc_samples=5"),
    ({"device": "tpu"}, "device"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_configuration_values_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fast_config(**kwargs)


@pytest.mark.parametrize("kwargs", [{"lr": 0}, {"batch_size": 0}, {"max_epochs": -1}, {"patience": 0}])
def test_bad_training_values_give_clear_errors(kwargs):
    with pytest.raises(ValueError, match=f"train.{next(iter(kwargs))}"):
        TrainConfig(**kwargs)


def test_validation_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="leaves no pool"):
        run_experiment(fast_config(validation_size=5000), tmp_path)


def test_training_learns_and_restores_the_best_weights():
    data = batchal.data.load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("mlp", data.input_shape, 10)
    history = train_model(model, data.train_x[:300], data.train_y[:300], data.train_x[300:500], data.train_y[300:500],
                          TrainConfig(epoch_samples=512, max_epochs=6, patience=2))
    assert 1 <= len(history) <= 6
    best = max(h["val_accuracy"] for h in history)
    from batchal.training import accuracy
    assert accuracy(model, data.train_x[300:500], data.train_y[300:500]) == pytest.approx(best)
    assert evaluate(model, data.test_x, data.test_y, k=10)["accuracy"] > 0.8


@pytest.mark.parametrize("name, shape, classes", [("mnist_cnn", (1, 28, 28), 10), ("emnist_cnn", (1, 28, 28), 47), ("mlp", (16,), 26)])
def test_paper_models_shapes(name, shape, classes):
    model = create_model(name, shape, classes)
    assert model(torch.randn(3, *shape)).shape == (3, classes)
    lp = batchal.predict_log_probs(model, torch.randn(4, *shape), k=3)
    assert lp.shape == (4, 3, classes)


def test_mnist_cnn_matches_the_paper_layout():
    model = create_model("mnist_cnn", (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(1024, 128), (128, 10)]


@pytest.mark.parametrize("name", ["mnist_cnn", "emnist_cnn"])
def test_cnns_equal_the_papers_layer_order(name):
    """Dropout2d moved after max-pool and ReLU (they commute with a non-negative channel mask):
    same function, same masks, under MC dropout and in training."""
    torch.manual_seed(0)
    ours = create_model(name, (1, 28, 28), 10)
    layers = list(ours)
    paper = []
    for layer in layers:  # move each Dropout2d back to just after its convolution
        if isinstance(layer, batchal.ConsistentMCDropout2d):
            conv_at = max(i for i, l in enumerate(paper) if isinstance(l, nn.Conv2d))
            paper.insert(conv_at + 1, layer)
        else:
            paper.append(layer)
    paper = nn.Sequential(*paper)
    assert [type(l) for l in paper][:4] == [nn.Conv2d, batchal.ConsistentMCDropout2d, nn.MaxPool2d, nn.ReLU]
    x = torch.randn(7, 1, 28, 28)
    assert torch.allclose(batchal.predict_log_probs(ours, x, k=5, seed=3, channels_last=False),
                          batchal.predict_log_probs(paper, x, k=5, seed=3, channels_last=False), atol=1e-5)
    ours.train()
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    assert torch.allclose(a, paper.train()(x), atol=1e-5)


def test_mnist_cnn_refuses_tiny_images():
    with pytest.raises(ValueError, match="mlp"):
        create_model("mnist_cnn", (1, 8, 8), 10)
