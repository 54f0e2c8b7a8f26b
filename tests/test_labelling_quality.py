"""The labelling service's quality signals: the accuracy interval against the truth, the stop
hint, and agreement between annotators."""

import gzip
import math

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.quality import agreement, fleiss_kappa, paired_gain, stop_hint, wilson_interval  # noqa: E402
from batchal.stopping import cohen_kappa  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402


def test_wilson_interval_matches_its_closed_form_and_covers_at_95_percent():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)  # the textbook values
    assert wilson_interval(0, 0) == (0.0, 1.0)
    rng = np.random.default_rng(0)
    for n in (5, 20, 80):  # coverage of the true proportion, by simulation
        hits = 0
        for _ in range(2000):
            k = rng.binomial(n, 0.7)
            lo, hi = wilson_interval(int(k), n)
            hits += lo <= 0.7 <= hi
        assert hits / 2000 >= 0.92


def test_paired_gain_sees_a_real_gain_and_not_noise():
    before = {i: int(i < 20) for i in range(40)}
    after = {i: int(i < 30) for i in range(40)}
    n, mean, upper = paired_gain(after, before)
    assert n == 40 and mean == pytest.approx(0.25) and upper > 0.25
    n, mean, upper = paired_gain(after, after)
    # No discordant pair: the exact bound 1 - 0.05^(1/n), never a zero-width interval.
    assert mean == 0 and upper == pytest.approx(1 - 0.05 ** (1 / 40))
    assert paired_gain({1: 1}, {1: 0}) is None


def test_kappas_equal_scikit_learn_and_the_fleiss_textbook_case():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(1)
    a = [str(v) for v in rng.integers(0, 3, 50)]
    b = [x if rng.random() < 0.7 else str(rng.integers(0, 3)) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    # Fleiss (1971)'s worked example as popularised: 10 items, 14 raters, 5 categories; kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[str(c) for c, k in enumerate(row) for _ in range(k)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.210, abs=1e-3)


def test_agreement_lists_disagreements_per_pair():
    given = {1: {"a": ("x", 1), "b": ("x", 2)}, 2: {"a": ("x", 3), "b": ("y", 4)}, 3: {"a": ("y", 5)}, 4: {"a": ("y", 6), "b": ("y", 7)}}
    out = agreement(given)
    assert out["items"] == 3 and out["all_agree"] == 2 and out["disagreements"] == [2]
    assert set(out["cohen_kappa"]) == {"a / b"}


def _fashion(data_dir, count):
    with gzip.open(data_dir / "fashion-mnist" / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(data_dir / "fashion-mnist" / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    return images, labels


def test_the_shown_interval_covers_the_true_accuracy_and_the_stop_hint_waits(tmp_path, shared_data_dir):
    """A simulated labeller (Fashion-MNIST's true labels) over 22 rounds: the 95% interval shown
    covers the model's true accuracy on the unlabelled items in at least 90% of rounds, and the
    stop hint never fires while the true accuracy still rises by more than the interval's half-width."""
    if not (shared_data_dir / "fashion-mnist").is_dir():
        pytest.skip("no fashion-mnist in the reference data")
    images, labels = _fashion(shared_data_dir, 1500)
    folder = tmp_path / "images"
    folder.mkdir()
    truth = {}
    for i, (img, y) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
        truth[f"{i:04d}.png"] = str(int(y))
    classes = [str(c) for c in range(10)]
    init_project(tmp_path / "proj", folder, classes, model="mlp", strategy="margin", batch_size=10, mc_samples=2, image_size=14,
                 stop_patience=3)
    project = Project(tmp_path / "proj", train_config=TrainConfig(epoch_samples=512, max_epochs=8, patience=2))
    name_of = {i: p for i, p in project.store.item_paths().items()}
    ids, x = project.features()
    position = {item: n for n, item in enumerate(ids)}
    rounds = []
    for _ in range(22):
        _, batch = project.current_batch()
        for item in batch:
            project.add_label(item, truth[name_of[item]])
        project.request_next()
        project.wait(120)
        assert project.state == "idle", project.error
        history = project.store.accuracy_history()
        if not history or history[-1]["labelled"] != len(project.store.current_labels()):
            continue  # the diversity batches before two classes are labelled have no model
        labelled = project.store.current_labels()
        model = project._new_model(tuple(x.shape[1:]))
        model.load_state_dict(torch.load(tmp_path / "proj" / "model.pt"))
        model.eval()
        rest = [i for i in ids if i not in labelled]
        with torch.no_grad():
            predicted = model(x[[position[i] for i in rest]]).argmax(1)
        true = float(np.mean([classes[int(c)] == truth[name_of[i]] for c, i in zip(predicted, rest)]))
        row = history[-1]
        rounds.append({"true": true, "low": row["low"], "high": row["high"], "hint": project.stop_hint()})
    assert len(rounds) >= 20
    covered = sum(r["low"] <= r["true"] <= r["high"] for r in rounds) / len(rounds)
    assert covered >= 0.9, rounds
    for n, r in enumerate(rounds):
        if r["hint"] and "accuracy gain" in r["hint"] and n >= 3:
            assert r["true"] - rounds[n - 3]["true"] <= (r["high"] - r["low"]) / 2, (n, rounds)
