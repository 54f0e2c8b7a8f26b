"""Relabelling chosen like a new label (issue 33, item 6): ActiveLab's scores and rule
(``batchal.labelling.relabel``), the store's bookkeeping of second opinions, and a project that
asks a second annotator about the labels its model doubts."""

import itertools

import numpy as np
import pytest

from batchal.labelling import relabel
from batchal.labelling.store import Store

pytest.importorskip("PIL")
from labelling_support import features_project  # noqa: E402

from batchal.training import TrainConfig  # noqa: E402


def test_weights_scale_agreement_between_chance_and_perfect():
    assert relabel.weight(None, 0.1) == 1.0 and relabel.weight(float("nan"), 0.1) == 1.0
    assert relabel.weight(1.0, 0.3) == 1.0
    assert relabel.weight(0.3, 0.3) == relabel.FLOOR  # no better than the most common class
    assert relabel.weight(0.65, 0.3) == pytest.approx(0.5)


def test_scores_follow_activelab_formulas_on_hand_cases():
    p = np.array([0.7, 0.2, 0.1])
    # One label: the consensus quality is the model's probability of it.
    one = relabel.labelled_scores({1: p}, {1: [(1, 1.0)]}, model_weight=1.0, mean_annotator_weight=1.0)[1]
    assert one == pytest.approx((2 * 0.2 + 1 / 3) / 3)
    # Two agreeing annotators: (w_m p[y] + sum w_a [y_a = y]) / W, then the 1/C prior with weight w̄.
    two = relabel.labelled_scores({1: p}, {1: [(1, 1.0), (1, 0.5)]}, model_weight=2.0, mean_annotator_weight=0.75)[1]
    quality = (2 * 0.2 + 1.5) / 3.5
    assert two == pytest.approx((3.5 * quality + 0.75 / 3) / (3.5 + 0.75))
    # A tie goes to the tied label the model finds likeliest.
    tie = relabel.labelled_scores({1: p}, {1: [(1, 1.0), (0, 1.0)]}, model_weight=1.0, mean_annotator_weight=1.0)[1]
    assert tie == pytest.approx((3 * (0.7 + 1) / 3 + 1 / 3) / 4)
    new = relabel.new_scores(np.array([p, [1 / 3] * 3]), model_weight=1.0, mean_annotator_weight=1.0)
    assert new.tolist() == pytest.approx([(0.7 + 1 / 3) / 2, (1 / 3 + 1 / 3) / 2])
    # A label the model contradicts scores lower than one it confirms; a second agreeing label raises it.
    doubted = relabel.labelled_scores({1: np.array([0.95, 0.05])}, {1: [(1, 1.0)]}, 1.0, 1.0)[1]
    confirmed = relabel.labelled_scores({1: np.array([0.95, 0.05])}, {1: [(1, 1.0), (1, 1.0)]}, 1.0, 1.0)[1]
    assert doubted < 0.3 < confirmed


def test_relabel_choice_equals_brute_force_over_small_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        b = int(rng.integers(1, 6))
        picks = rng.random(b).round(1).tolist()  # rounded: ties between a pick and a labelled item happen
        labelled = {100 + i: float(s) for i, s in enumerate(rng.random(int(rng.integers(0, 6))).round(1))}
        chosen = relabel.relabel_choice(picks, labelled)
        # Brute force: the b lowest of everything (a pick wins a tie), labelled items among them, lowest first, capped.
        everything = [(s, 0, n) for n, s in enumerate(picks)] + [(s, 1, i) for i, s in labelled.items()]
        lowest = sorted(everything)[:b]
        expected = [i for s, kind, i in lowest if kind == 1][: int(relabel.MAX_SHARE * b)]
        assert chosen == expected
        assert all(labelled[i] < max(picks) for i in chosen)  # never a labelled item scoring above every pick
        for i, j in itertools.combinations(chosen, 2):
            assert labelled[i] <= labelled[j]
    assert relabel.relabel_choice([0.5, 0.5], {7: 0.1, 8: 0.2}) == [7]  # at most half the batch
    assert relabel.relabel_choice([], {7: 0.1}) == [] and relabel.relabel_choice([0.5], {}) == []


def _store(tmp_path) -> Store:
    store = Store.create(tmp_path, {"classes": ["a", "b"]}, [f"{i}.png" for i in range(6)])
    for name in ("x", "y", "z"):
        store.add_annotator(name, "sha-" + name)
    return store


def test_a_second_opinion_goes_to_another_annotator_and_counts_once_given(tmp_path):
    store = _store(tmp_path)
    store.add_batch("diversity", [1, 2])
    store.add_label(1, "a", "x")
    store.add_label(2, "b", "y")
    assert store.claim("z", [1, 2], overlap=1) == []  # both labelled, nothing asked again
    store.add_batch("batchbald", [1, 3], relabel=[2, 0])  # item 1: another label, two in all
    assert store.relabel_items() == {1: 2}
    assert store.labels_needed(store.annotator_labels()[1], 1, 2) == 2
    assert store.holder(1, "x", 1) is None  # x's own label may be changed
    assert 1 in store.claim("y", [1, 3], overlap=1)  # offered to someone who has not labelled it
    assert "already has" in store.holder(1, "z", 1) or "being labelled" in store.holder(1, "z", 1)
    store.add_label(1, "b", "y")  # the second opinion disagrees: a tie, which needs a third label
    assert store.unresolved() == {1: {"a": 1, "b": 1}} and 1 not in store.current_labels()
    assert store.labels_needed(store.annotator_labels()[1], 1, 2) == 3
    assert 1 in store.claim("z", [1, 3], overlap=1)
    store.add_label(1, "b", "z")
    assert store.current_labels()[1] == "b"  # the vote, not the first label
    store.add_batch("batchbald", [4])
    assert store.relabel_items() == {}  # only the current batch asks


def digits_project(tmp_path, relabel_on: bool, count=300):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data[:count].astype(np.float32) / 16, digits.target[:count]
    project, truth = features_project(tmp_path, x, y, TrainConfig(epoch_samples=512, max_epochs=15, patience=3), strategy="margin",
                                      batch_size=10, mc_samples=4, relabel=relabel_on)
    for name in ("ann", "bea"):
        project.store.add_annotator(name, "sha-" + name)
    return project, truth


@pytest.mark.parametrize("relabel_on", [True, False])
def test_a_project_asks_a_second_annotator_about_labels_its_model_doubts(tmp_path, relabel_on):
    project, truth = digits_project(tmp_path, relabel_on)
    wrong = {}
    try:
        for round_ in range(6):  # the owner labels every batch; from the fourth on, a fifth of the labels are wrong
            _, items = project.current_batch()
            for n, item in enumerate(items):
                label = truth[item]
                if round_ >= 3 and n % 5 == 0:
                    label = str((int(label) + 1) % 10)
                    wrong[item] = label
                if item not in project.store.current_labels():
                    project.add_label(item, label)
            project.request_next()
            project.wait(300)
            assert project.state != "failed", project.error
        asked = project.store.relabel_items()
        audit = project.store.audit_items()
        if not relabel_on:
            assert asked == {} and project.status()["second_opinions"] == 0
            return
        assert asked, "no second opinion asked although the model contradicts several labels"
        assert not set(asked) & audit
        assert len(asked) <= relabel.MAX_SHARE * 10
        assert set(asked) & set(wrong), (asked, wrong)  # among them, labels that are wrong
        # The named annotators share them (the owner, who labelled them, has their vote already).
        _, for_bea = project.batch_for("bea")
        _, for_ann = project.batch_for("ann")
        assert set(asked) <= set(for_bea) | set(for_ann)
        before = project.status()["batch_labelled"]
        for item in asked:
            project.add_label(item, truth[item], annotator="bea" if item in for_bea else "ann", supervisor=False)
        status = project.status()
        fixed = [i for i in asked if i in wrong]
        # A confirmed label is done; a contradicted one is a tie (1 vote to 1), not done: a third annotator decides.
        assert status["second_opinions"] == len(asked) and status["batch_labelled"] == before + len(asked) - len(fixed)
        assert set(project.store.unresolved()) == set(fixed)
    finally:
        project.close()
