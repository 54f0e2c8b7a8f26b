"""Reports: tables against hand-computed values on synthetic runs, every plot written."""

import json
import math

import numpy as np
import pytest

from batchal.cli import main
from batchal.run_files import append_row
from batchal.report import find_runs, group, label_entropy, labels_needed_quartiles, normalised_errors, penalty_matrix, setting_order, write_report


def fake_run(root, dataset, strategy, seed, accuracies, b=10, initial=20, classes=10):
    folder = root / dataset / f"{strategy}-b{b}-seed{seed}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": dataset, "strategy": strategy, "seed": seed, "acquisition_size": b}))
    for i, acc in enumerate(accuracies):
        last = i == len(accuracies) - 1
        labels = [] if last else [(seed + i + k) % classes for k in range(b)] if strategy != "bald" else [i % classes] * b
        append_row(folder / "results.jsonl", {
            "round": i, "labelled": initial + b * i, "test_accuracy": acc, "test_nll": 1 - acc,
            "acquired": [] if last else list(range(b * i, b * (i + 1))), "acquired_labels": labels, "scores": [0.0] * len(labels),
            "seconds": {"train": 1.0, "score": 2.0 if strategy != "random" else 0.0, "select": 0.5},
            "batch_diagnostics": None if last else {"logdet_gram": -10.0 + i, "mean_norm": 1.0 / (i + 1)},
            **({"stop_reason": "budget"} if last else {}),
        })
    return folder


@pytest.fixture
def study(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(5):
        base = np.linspace(0.5, 0.95, 8)
        fake_run(tmp_path, "mnist", "good", seed, np.clip(base + 0.03 + 0.002 * rng.standard_normal(8), 0, 1))
        fake_run(tmp_path, "mnist", "random", seed, np.clip(base + 0.002 * rng.standard_normal(8), 0, 1))
        fake_run(tmp_path, "mnist", "bald", seed, np.clip(base - 0.05 + 0.002 * rng.standard_normal(8), 0, 1))
    return tmp_path


def test_labels_needed_uses_nearest_rank_quartiles_and_the_papers_counting(tmp_path):
    # Seeds reach 90% at labelled = 40, 50, 60, 70 and never: minus b = 10.
    for seed, first in enumerate([2, 3, 4, 5, None]):
        acc = [0.5] * 8
        if first is not None:
            acc[first:] = [0.91] * (8 - first)
        fake_run(tmp_path, "mnist", "s", seed, acc)
    runs = find_runs([tmp_path])
    q = labels_needed_quartiles(runs, 0.9)
    assert q == (40.0, 50.0, 60.0)  # nearest rank over [30, 40, 50, 60, inf]
    assert labels_needed_quartiles(runs, 0.95) == (math.inf, math.inf, math.inf)


def test_penalty_matrix_counts_significant_wins(study):
    names, P, used = penalty_matrix(group(find_runs([study])))
    assert used == 1
    i = {n: k for k, n in enumerate(names)}
    assert P[i["good"], i["random"]] == pytest.approx(1.0)  # wins at every checkpoint
    assert P[i["random"], i["bald"]] == pytest.approx(1.0)
    assert P[i["bald"], i["good"]] == 0 and P[i["random"], i["good"]] == 0
    assert np.all(np.diag(P) == 0)


def test_normalised_errors_against_random(study):
    errors = normalised_errors(group(find_runs([study])))
    assert all(abs(e - 1) < 0.2 for e in errors["random"])
    assert np.median(errors["good"]) < 1 < np.median(errors["bald"])


def test_unfinished_runs_are_marked_in_progress(tmp_path):
    fake_run(tmp_path, "mnist", "s", 0, [0.5, 0.6, 0.7])
    partial = fake_run(tmp_path, "mnist", "s", 1, [0.5, 0.6, 0.7, 0.8])
    lines = (partial / "results.jsonl").read_text().splitlines()
    (partial / "results.jsonl").write_text("\n".join(lines[:2]) + "\n")  # stopped after 2 rounds
    write_report([tmp_path], tmp_path / "report", [0.65])
    out = tmp_path / "report"
    entry = json.loads((out / "labels_needed.json").read_text())[0]
    assert entry["complete"] is False and entry["final_labels"] == [30, 40]
    assert "30-40 (in progress)" in (out / "report.md").read_text()


def test_runs_of_different_protocols_are_separate_curves_not_seeds(tmp_path):
    # Same data set, b, strategy and seed; one on a 5,000-point pool subsample, one on the full pool.
    a = fake_run(tmp_path / "sub", "mnist", "bald", 0, [0.5, 0.7, 0.9])
    b = fake_run(tmp_path / "full", "mnist", "bald", 0, [0.5, 0.6, 0.7])
    c = fake_run(tmp_path / "sub", "mnist", "bald", 1, [0.5, 0.7, 0.9])
    for folder, pool in ((a, 5000), (b, None), (c, 5000)):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "pool_subsample": pool, "data_dir": str(folder)}))
    grouped = group(find_runs([tmp_path]))
    curves = grouped["mnist b=10"]
    assert sorted(curves) == ["bald (full pool)", "bald (pool 5,000)"]
    assert len(curves["bald (pool 5,000)"]) == 2 and len(curves["bald (full pool)"]) == 1  # seeds and data_dir do not split
    write_report([tmp_path], tmp_path / "report", [0.85])
    entries = {e["strategy"]: e for e in json.loads((tmp_path / "report" / "labels_needed.json").read_text())}
    assert entries["bald (pool 5,000)"]["labels_to_0.85"][1] == 30 and entries["bald (full pool)"]["labels_to_0.85"][1] is None


def test_a_strategy_named_by_its_variant_in_one_setting_is_named_so_in_every_setting(tmp_path):
    # letter: BALD on MC dropout and on an ensemble; mnist: BALD on MC dropout only. The penalty
    # matrix compares across settings, so mnist's BALD must be the same row as letter's.
    for dataset, posteriors in (("letter", ("mc_dropout", "ensemble")), ("mnist", ("mc_dropout",))):
        for posterior in posteriors:
            for seed in range(3):
                folder = fake_run(tmp_path / posterior, dataset, "bald", seed, [0.5, 0.6 + 0.01 * seed, 0.7])
                config = json.loads((folder / "config.json").read_text())
                (folder / "config.json").write_text(json.dumps({**config, "posterior": posterior}))
        for seed in range(3):
            fake_run(tmp_path / "random", dataset, "random", seed, [0.5, 0.55 + 0.01 * seed, 0.6])
    grouped = group(find_runs([tmp_path]))
    assert sorted(grouped["mnist b=10"]) == ["bald (posterior=mc_dropout)", "random"]
    assert sorted(grouped["letter b=10"]) == ["bald (posterior=ensemble)", "bald (posterior=mc_dropout)", "random"]
    names, _, _ = penalty_matrix(grouped)
    assert sorted(names) == ["bald (posterior=ensemble)", "bald (posterior=mc_dropout)", "random"]


def test_sweep_plot_when_a_strategy_runs_at_several_batch_sizes(tmp_path):
    fake_run(tmp_path, "mnist", "bald", 0, [0.5 + 0.05 * i for i in range(9)], b=10)  # labelled 20, 30, ..., 100
    fake_run(tmp_path / "other", "mnist", "bald", 0, [0.5, 0.6, 0.7], b=40)  # labelled 20, 60, 100
    fake_run(tmp_path, "mnist", "random", 0, [0.5, 0.6, 0.7], b=10)
    write_report([tmp_path], tmp_path / "report", [0.85])
    assert (tmp_path / "report" / "batch_size_sweep.png").is_file()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Acquisition-size sweep" in md
    assert "| mnist: bald | 20 | 60 | 100 |" in md  # the label counts both sizes pass through
    assert "| b=10 | 0.500 | 0.700 | 0.900 |" in md and "| b=40 | 0.500 | 0.600 | 0.700 |" in md
    assert "mnist: random" not in md  # one batch size: no sweep
    assert list(group(find_runs([tmp_path]))) == ["mnist b=10", "mnist b=40"]


def test_settings_sort_by_batch_size_as_a_number():
    names = ["mnist b=40", "letter b=50", "mnist b=5", "mnist b=10"]
    assert sorted(names, key=setting_order) == ["letter b=50", "mnist b=5", "mnist b=10", "mnist b=40"]



def test_sweep_table_shows_a_run_in_progress_as_dashes(tmp_path):
    fake_run(tmp_path, "mnist", "bald", 0, [0.5 + 0.05 * i for i in range(9)], b=10)  # labelled 20, ..., 100
    fake_run(tmp_path / "other", "mnist", "bald", 0, [0.5, 0.6], b=40)  # labelled 20, 60: still running
    write_report([tmp_path], tmp_path / "report", [0.85])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| mnist: bald | 20 | 60 | 100 |" in md and "| b=40 | 0.500 | 0.600 | - |" in md


def test_no_sweep_plot_with_one_batch_size(study, tmp_path):
    write_report([study], tmp_path / "report", [0.85])
    assert not (tmp_path / "report" / "batch_size_sweep.png").exists()


def test_label_entropy():
    assert label_entropy([1, 1, 1]) == 0
    assert label_entropy([0, 1, 2, 3]) == pytest.approx(math.log(4))


def test_report_writes_every_plot_and_table(study, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--thresholds", "0.8,0.9"]) == 0
    for name in ("learning_curves.png", "acquired_labels.png", "time_per_round.png", "penalty_matrix.png",
                 "normalised_error_cdf.png", "batch_diagnostics.png", "report.md", "labels_needed.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text()
    assert "| mnist b=10 | good | 5 |" in text and "80% acc" in text and "column mean" in text


def test_report_on_a_real_tiny_run(tmp_path):
    assert main(["run", "--dataset", "digits", "--strategy", "badge,random", "--seeds", "0,1", "--acquisition-size", "5",
                 "--initial-size", "10", "--budget", "20", "--mc-samples", "3", "--validation-size", "50", "--max-epochs", "1",
                 "--epoch-samples", "64", "--out", str(tmp_path / "runs")]) == 0
    path = write_report([tmp_path / "runs"], tmp_path / "rep", [0.5])
    assert "badge" in path.read_text() and (tmp_path / "rep" / "batch_diagnostics.png").is_file()


def test_report_refuses_an_empty_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no finished rounds" in capsys.readouterr().err


def test_report_reads_a_folder_of_classification_and_regression_runs(study, capsys):
    """batchal report on a folder holding both kinds: both reported, the regression table from the rows."""
    from batchal.regression_run import RegressionConfig, run_folder, run_regression

    finals = []
    for seed in (0, 1):
        config = RegressionConfig(dataset="diabetes", strategy="random", seed=seed, initial_size=20, acquisition_size=10, budget=40, steps=20)
        finals.append(run_regression(config, run_folder(study / "regression", config))[-1]["test_rmse"])
    assert main(["report", str(study), "--out", str(study / "report")]) == 0
    md = (study / "report" / "report.md").read_text()
    assert "## Learning curves" in md and "## Regression" in md and (study / "report" / "regression_rmse.png").stat().st_size > 0
    row = next(line for line in md.splitlines() if line.startswith("| diabetes b=10 | random |"))
    assert row.split("|")[3].strip() == "2" and float(row.split("|")[5]) == pytest.approx(np.mean(finals), abs=1e-4)
    # the classification tables are unchanged by the regression runs beside them
    classification_only = write_report([study / "mnist"], study / "report-c")
    assert md.count("| mnist b=10 |") == classification_only.read_text().count("| mnist b=10 |") > 0


def test_ticks_sit_at_the_rounds_when_there_are_few():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from batchal.report import _whole_number_ticks

    fig, ax = plt.subplots()
    ax.plot([20, 30, 40], [0.5, 0.6, 0.7])
    ax.axhline(0.55)  # its x runs over the axes (0 to 1), not label counts: no tick at 0 or 1
    _whole_number_ticks(ax)
    assert list(ax.get_xticks()) == [20, 30, 40]
    fig2, many = plt.subplots()
    many.plot(list(range(20, 320, 10)), [0.5] * 30)
    _whole_number_ticks(many)
    assert all(float(t).is_integer() for t in many.get_xticks()) and len(many.get_xticks()) < 30
    plt.close(fig)
    plt.close(fig2)
