"""batchal compare: the measures by hand, the verdict on constructed curves, and the command on a
null data set (labels independent of the features), where nothing may be found to pay."""

import json
import math

import numpy as np
import pytest

from batchal.cli import main
from batchal.compare import Setting, analyse, aubc, bootstrap_mean, deficiency, labels_saved_curve, labels_to, verdict


def test_minority_discovery_counts_labels_until_every_class_is_seen():
    from batchal.compare import discovery

    rows = [{"labelled": 4, "acquired_labels": [0, 0, 2]}, {"labelled": 7, "acquired_labels": [0, 3, 1]}, {"labelled": 10, "acquired_labels": []}]
    assert discovery([0, 1, 1, 0], rows, 4) == 7 + 2  # class 2 at the 6th label, class 3 at the 9th
    assert discovery([0, 1], rows, 5) is None and discovery([0, 1, 2], [], 3) == 3


def test_the_measures_by_hand():
    curve = {20: 0.5, 30: 0.7, 40: 0.8}
    assert aubc(curve, 20, 40) == pytest.approx(((0.5 + 0.7) / 2 * 10 + (0.7 + 0.8) / 2 * 10) / 20)
    assert labels_to(curve, 0.7) == 30 and labels_to(curve, 0.9) is None
    random = {20: 0.5, 30: 0.6, 40: 0.7}
    # (0.9 - acc) summed: strategy 0.4 + 0.2 + 0.1, random 0.4 + 0.3 + 0.2
    assert deficiency(curve, random, 0.9) == pytest.approx(0.7 / 0.9)
    assert labels_saved_curve(curve, random) == [(20, 0.0), (30, 10.0)]  # random reaches 0.7 at 40; never 0.8
    assert bootstrap_mean([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    mean, low, high = bootstrap_mean([0.0, 10.0, 20.0, 30.0])
    assert mean == 15.0 and 0.0 <= low < 15.0 < high <= 30.0


def curves(offset, noise, seeds=5, rng=None):
    rng = rng or np.random.default_rng(0)
    base = {20: 0.5, 30: 0.6, 40: 0.7, 50: 0.75, 60: 0.8}
    return {s: {c: a + offset + noise * rng.standard_normal() for c, a in base.items()} for s in range(seeds)}


def test_a_clear_winner_saves_labels_with_an_interval_above_zero_and_noise_does_not():
    rng = np.random.default_rng(1)
    setting = Setting(10, 20, 60, {"random": curves(0, 0.002, rng=rng), "good": curves(0.08, 0.002, rng=rng),
                                   "noise": curves(0, 0.03, rng=rng)}, {s: 0.82 for s in range(5)})
    result = analyse(setting)
    assert result["saves_labels"] and result["best"] == "good"
    good, noise = result["strategies"]["good"], result["strategies"]["noise"]
    saving = good["saving_vs_random"]["0.95"]
    assert saving["low"] > 0 and good["p_holm"] < 0.05 and good["deficiency"] < 1
    assert noise["p_holm"] >= 0.05
    saves, best, lines = verdict([result])
    assert saves and best == "good" and any("good saves labels" in line for line in lines)
    tie = analyse(Setting(10, 20, 60, {"random": curves(0, 0.02, rng=rng), "noise": curves(0, 0.02, rng=rng)}, {s: 0.82 for s in range(5)}))
    assert not tie["saves_labels"] and tie["best"] is None
    assert "no evidence that active learning saves labels" in verdict([tie])[2][0]


def test_compare_on_a_null_data_set_finds_no_evidence_and_resumes(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    y = np.random.default_rng(0).permutation(digits.target)  # labels independent of the features
    x = digits.data.astype(np.float32)
    np.savez(tmp_path / "null.npz", x=x[:1200], y=y[:1200], x_test=x[1200:], y_test=y[1200:])
    argv = ["compare", str(tmp_path / "null.npz"), "--strategy", "margin,bald", "--seeds", "0,1,2", "--budget", "50",
            "--initial-size", "20", "--mc-samples", "4", "--max-epochs", "2", "--epoch-samples", "128", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert "no evidence that active learning saves labels on this data" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert summary["saves_labels"] is False and summary["best"] is None
    entry = summary["settings"][0]["strategies"]["margin"]
    assert {"aubc", "labels_to_target", "saving_vs_random"} <= set(entry) and not math.isnan(entry["aubc"]["estimate"])
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Does active learning pay on this data?")
    assert (tmp_path / "out" / "labels_saved.png").stat().st_size > 0 and (tmp_path / "out" / "report" / "report.md").is_file()
    assert "macro_f1" in entry and len(entry["recall"]) == 10 and len(entry["labels_to_every_class"]) == 3
    assert "labels to every class" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "recall.png").stat().st_size > 0 and "recall.png" in (tmp_path / "out" / "report.md").read_text()
    assert main(argv + ["--workers", "2"]) == 0  # resumed in worker processes: every run read back, the same verdict
    assert json.loads((tmp_path / "out" / "compare.json").read_text()) == summary
    assert main(["compare", str(tmp_path / "null.npz"), "--strategy", "nope", "--out", str(tmp_path / "x")]) == 2


def test_a_long_tailed_pool_keeps_ratio_to_the_power_of_each_class_and_runs(tmp_path):
    import torch

    from batchal.data.dataset import Dataset, long_tailed
    from batchal.experiment import ExperimentConfig, run_experiment
    from batchal.training import TrainConfig

    y = torch.arange(5).repeat_interleave(100)
    data = Dataset("toy", torch.randn(500, 3), y, torch.randn(50, 3), torch.arange(5).repeat(10), [str(c) for c in range(5)], False,
                   [f"item{i}" for i in range(500)])
    tail = long_tailed(data, 0.01)
    counts = torch.bincount(tail.train_y, minlength=5).tolist()
    assert counts == [round(100 * 0.01 ** (c / 4)) for c in range(5)] == [100, 32, 10, 3, 1]
    assert torch.equal(tail.test_y, data.test_y) and tail.train_ids[0] == "item0"
    kept = [int(i.removeprefix("item")) for i in tail.train_ids]  # ids travel with their items
    assert torch.equal(tail.train_x, data.train_x[kept]) and torch.equal(tail.train_y, data.train_y[kept])
    assert torch.equal(long_tailed(data, 0.01).train_x, tail.train_x)  # the same pool every time
    with pytest.raises(ValueError, match="imbalance must be a ratio"):
        ExperimentConfig(dataset="digits", imbalance=1.5)
    config = ExperimentConfig(dataset="digits", strategy="margin", imbalance=0.1, acquisition_size=5, initial_size=10, budget=20,
                              mc_samples=3, validation_size=30, train=TrainConfig(epoch_samples=64, max_epochs=1))
    rows = run_experiment(config, tmp_path / "run")
    assert rows[-1]["labelled"] == 20 and len(rows[0]["test_recall"]) == 10
    assert run_experiment(config, tmp_path / "run") == rows  # resumes on the same long-tailed pool


def test_compare_balance_adds_each_strategy_s_balanced_variant(tmp_path):
    argv = ["compare", "digits", "--strategy", "margin", "--balance", "--imbalance", "0.1", "--seeds", "0,1", "--budget", "40",
            "--initial-size", "20", "--mc-samples", "3", "--max-epochs", "1", "--epoch-samples", "64", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert {"margin", "margin-balanced", "random"} == set(summary["settings"][0]["strategies"])  # random is not doubled
    config = json.loads((tmp_path / "out" / "runs" / "margin-balanced-b10-seed0" / "config.json").read_text())
    assert config["strategy"] == "margin" and config["balance"] is True
    plain = json.loads((tmp_path / "out" / "runs" / "margin-b10-seed0" / "config.json").read_text())
    assert "balance" not in plain


def test_compare_on_repeated_digits_finds_batchbald_saving_labels_with_an_interval_above_zero(tmp_path, capsys):
    """The setting where the answer is known (BatchBALD's paper: repeated data, where it avoids
    the copies): 5 seeds to 80 labels, labels counted to 90% of the full-pool accuracy."""
    out = tmp_path / "out"
    argv = ["compare", "repeated-digits", "--strategy", "batchbald", "--seeds", "0,1,2,3,4", "--budget", "80", "--batch-size", "10",
            "--mc-samples", "10", "--targets", "0.9,0.95", "--out", str(out)]
    assert main(argv) == 0
    assert "batchbald saves labels against random here: to 90% of the full-pool accuracy" in capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    assert summary["saves_labels"] is True and summary["best"] == "batchbald"
    saving = summary["settings"][0]["strategies"]["batchbald"]["saving_vs_random"]["0.9"]
    assert saving["low"] > 0, saving
    assert summary["settings"][0]["targets"] == [0.9, 0.95] and "labels to 90% / 95% of full" in (out / "report.md").read_text()
    assert main(argv[:-4] + ["--targets", "0.9,1.5", "--out", str(out)]) == 2  # a target is a fraction of the full-pool accuracy
