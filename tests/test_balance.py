"""The class-balancing wrapper (``balance=``, ``batchal run --balance``): its rule against brute force,
and through every layer that offers it."""

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import batchal
from batchal.acquire import ModelPredictions, acquire, balance_batch


def leximin_best(available: dict[int, int], counts: list[int], b: int) -> list[int]:
    """Brute force: of every allocation of b slots (at most available[c] to class c), the sorted
    final counts that are lexicographically largest (the most equal, rarest first)."""
    classes = sorted(available)
    best = None
    for quota in itertools.product(*[range(available[c] + 1) for c in classes]):
        if sum(quota) != min(b, sum(available.values())):
            continue
        final = sorted(counts[c] + q for c, q in zip(classes, quota))
        best = final if best is None or final > best else best
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=9), st.lists(st.integers(0, 4), min_size=4, max_size=4), st.integers(1, 9))
def test_the_rule_is_leximin_optimal_and_keeps_the_strategy_s_order(ranked, counts, b):
    kept = balance_batch(ranked, counts, b)
    assert kept == sorted(kept) and len(kept) == min(b, len(ranked))  # the strategy's order, the batch's size
    available = {c: ranked.count(c) for c in set(ranked)}
    final = list(counts)
    for k in kept:
        final[ranked[k]] += 1
    assert sorted(final[c] for c in available) == leximin_best(available, counts, b)
    for c in available:  # within a class, its best-ranked candidates
        mine = [k for k in kept if ranked[k] == c]
        assert mine == [k for k, r in enumerate(ranked) if r == c][: len(mine)]


def test_a_rare_class_gets_its_slots_first():
    ranked = [0, 0, 0, 0, 1, 0, 2, 0, 0]  # the strategy prefers class 0
    assert balance_batch(ranked, [50, 2, 5], 3) == [0, 4, 6]  # one each: the rare classes are not crowded out
    assert balance_batch(ranked, [0, 9, 9], 3) == [0, 1, 2]  # class 0 is the rare one here


def _model_and_pool(seed=0):
    torch.manual_seed(seed)
    model = batchal.convert_dropout(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)))
    return model, torch.randn(120, 6)


@pytest.mark.parametrize("strategy", ["margin", "batchbald", "badge", "coreset", "random"])
def test_acquire_balances_any_strategy(strategy):
    model, x = _model_and_pool()
    predictions = ModelPredictions(model, x)
    plain = acquire(strategy, predictions, list(range(20, 120)), 6, labelled=list(range(20)), mc_samples=5)
    balanced = acquire(strategy, predictions, list(range(20, 120)), 6, labelled=list(range(20)), mc_samples=5,
                       balance=[0] * 18 + [1, 2])
    assert len(balanced.picked) == 6 and len(set(balanced.picked)) == 6
    info = balanced.selection.info["balanced"]
    assert info["ranked"] == 18 and info["labelled_counts"] == [18, 1, 1]
    # The kept picks are balance_batch's choice among the strategy's 18 ranked candidates: with 18 labels of
    # class 0 and one each of 1 and 2, class 0 gets a slot only once 1 and 2 have no ranked candidate left.
    assert info["kept"] == balance_batch(info["ranked_classes"], [18, 1, 1], 6)
    kept_classes = [info["ranked_classes"][k] for k in info["kept"]]
    others = sum(c != 0 for c in info["ranked_classes"])
    assert kept_classes.count(0) == max(0, 6 - others)
    if strategy in ("margin", "batchbald"):  # deterministic rankings: the plain batch's first pick is ranked first too
        assert balanced.selection.indices.tolist()[0] in acquire(strategy, predictions, list(range(20, 120)), 18,
                                                                labelled=list(range(20)), mc_samples=5).selection.indices.tolist()


def test_balance_is_refused_for_regression_strategies():
    model, x = _model_and_pool()
    with pytest.raises(ValueError, match="balance= needs predicted classes"):
        acquire("regression_batchbald", ModelPredictions(model, x), list(range(10)), 2, balance=[0, 1])


def test_batchal_run_balance_writes_its_own_folders_and_leaves_old_configs_resumable(tmp_path):
    from batchal.cli import main
    from batchal.experiment import ExperimentConfig

    assert "balance" not in ExperimentConfig(dataset="digits", strategy="margin").to_dict()  # earlier folders resume
    assert main(["run", "--dataset", "digits", "--strategy", "margin", "--balance", "--budget", "40", "--out", str(tmp_path)]) == 0
    run = tmp_path / "digits" / "margin-balanced-b10-seed0"
    assert json.loads((run / "config.json").read_text())["balance"] is True
    assert (tmp_path / "digits" / "report-b10-margin-balanced" / "report.md").is_file()
