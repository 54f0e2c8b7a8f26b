"""Deep ensembles as the posterior with every strategy, and the stopping rules, end to end on digits."""

import warnings

import pytest
import torch
from torch import nn

import batchal
from batchal.bayesian.ensemble import ensemble_log_probs, train_ensemble
from batchal.experiment import run_experiment
from batchal.run_files import read_results
from batchal.report import write_report
from batchal.stopping import AccuracyPlateau, StabilizingPredictions, cohen_kappa, parse_stop
from test_experiment import fast_config, without_seconds


def test_ensemble_log_probs_stack_the_members():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Linear(4, 3)) for _ in range(3)]
    x = torch.randn(10, 4)
    lp = ensemble_log_probs(members, x, batch_size=3)
    assert lp.shape == (10, 3, 3)
    for m, model in enumerate(members):
        assert torch.allclose(lp[:, m], torch.log_softmax(model(x), 1), atol=1e-6)
    trained = train_ensemble(lambda: nn.Linear(4, 3), 3, lambda model, g: None, seed=1)
    assert len(trained) == 3 and not torch.equal(trained[0].weight, trained[1].weight)  # different initialisations


@pytest.mark.parametrize("strategy", batchal.strategies("classification"))
def test_every_strategy_runs_on_an_ensemble(strategy, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = run_experiment(fast_config(strategy=strategy, posterior="ensemble", members=3, budget=15), tmp_path)
    assert [r["labelled"] for r in rows] == [10, 15]
    assert len(set(rows[0]["acquired"])) == 5 and 0 <= rows[-1]["test_accuracy"] <= 1


def test_ensemble_runs_resume_identically_and_the_report_names_the_posterior(tmp_path):
    config = fast_config(strategy="bald", posterior="ensemble", members=3, budget=25)
    full = run_experiment(config, tmp_path / "ensemble")
    lines = (tmp_path / "ensemble" / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "config.json").write_text((tmp_path / "ensemble" / "config.json").read_text())
    (tmp_path / "part" / "results.jsonl").write_text("".join(lines[:2]))
    assert without_seconds(run_experiment(config, tmp_path / "part")) == without_seconds(full)
    dropout = run_experiment(fast_config(strategy="bald", budget=25), tmp_path / "dropout")
    assert without_seconds(dropout) != without_seconds(full)
    report = write_report([tmp_path / "ensemble", tmp_path / "dropout"], tmp_path / "report").read_text()
    assert "bald (posterior=ensemble, members=3)" in report or "bald (members=3, posterior=ensemble)" in report


def test_old_run_folders_without_the_new_settings_still_resume(tmp_path):
    import json

    run_experiment(fast_config(budget=15), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("posterior", "members", "stop"):
        config.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    rows = run_experiment(fast_config(budget=20), tmp_path)  # the budget grows; the rest matches
    assert [r["labelled"] for r in rows] == [10, 15, 20]


def test_cohen_kappa_by_hand():
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    # observed 0.5, expected 0.5 (both split half-half): kappa 0
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # observed 0.8; expected 0.6 * 0.4 + 0.4 * 0.6 = 0.48 -> (0.8 - 0.48) / 0.52
    assert cohen_kappa([0, 0, 0, 1, 1], [0, 0, 1, 1, 1]) == pytest.approx((0.8 - 0.48) / 0.52)
    assert cohen_kappa([2, 2, 2], [2, 2, 2]) == 1.0


def test_rules_by_hand():
    rule = StabilizingPredictions(threshold=0.9, window=2)
    assert not rule.should_stop([None, 0.95])
    assert rule.should_stop([None, 0.5, 0.95, 0.9])
    assert not rule.should_stop([None, 0.95, 0.8])
    plateau = AccuracyPlateau(patience=2)
    assert not plateau.should_stop([0.5, 0.6, 0.7])
    assert plateau.should_stop([0.5, 0.7, 0.69, 0.7])
    assert parse_stop("stabilizing:0.98:4") == StabilizingPredictions(0.98, 4) and parse_stop("plateau:5") == AccuracyPlateau(5)
    for bad in ("soon", "plateau:x", "stabilizing:2", "plateau:0", "plateau:1:2"):
        with pytest.raises(ValueError, match="--stop must be"):
            parse_stop(bad)


@pytest.mark.parametrize("stop, reason, key", [("stabilizing:0.1:2", "stabilizing_predictions", "stop_kappa"),
                                               ("plateau:1", "accuracy_plateau", "validation_accuracy")])
def test_a_stopping_rule_ends_the_run_and_resumes_identically(tmp_path, stop, reason, key):
    config = fast_config(strategy="random", budget=80, stop=stop)
    rows = run_experiment(config, tmp_path / "a")
    assert rows[-1]["stop_reason"] == reason and rows[-1]["labelled"] < 80
    assert all(key in r for r in rows)
    lines = (tmp_path / "a" / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    (tmp_path / "b" / "results.jsonl").write_text("".join(lines[:2]))
    assert without_seconds(run_experiment(config, tmp_path / "b")) == without_seconds(rows)
    assert without_seconds(read_results(tmp_path / "b" / "results.jsonl")) == without_seconds(rows)
