"""The reproduction scripts: the paper-protocol studies are the paper's protocol, and the
comparison table keeps both protocols' rows apart."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce = load("reproduce")


def test_mnist_paper_study_is_the_papers_protocol():
    configs = reproduce.study("mnist-paper", [0, 1, 2, 3, 4, 5], "cpu")
    assert len(configs) == 18
    assert {(c.strategy, c.seed) for c in configs} == {(s, k) for s in ("batchbald", "bald", "random") for k in range(6)}
    for c in configs:
        # REFERENCE.md section 5: whole pool, K = 100 for acquisition and test, 20 initial, b = 10, 300 labels.
        assert (c.dataset, c.pool_subsample, c.mc_samples, c.test_mc_samples) == ("mnist", None, 100, 100)
        assert (c.initial_size, c.acquisition_size, c.budget, c.num_samples, c.prefilter) == (20, 10, 300, 40_000, None)
        assert (c.train.max_epochs, c.train.patience, c.train.epoch_samples, c.train.lr) == (30, 3, 5056, 1e-3)
        assert reproduce.run_name(c).endswith("-full-pool")
    assert reproduce.DEFAULT_SEEDS["mnist-paper"] == "0,1,2,3,4,5"


def test_repeated_mnist_paper_study_uses_k10_and_40_epochs():
    configs = reproduce.study("repeated-mnist-paper", [0, 1], "cpu")
    assert {c.strategy for c in configs} == {"batchbald", "bald", "random"}
    assert all((c.dataset, c.mc_samples, c.test_mc_samples, c.pool_subsample, c.train.max_epochs, c.budget)
               == ("repeated-mnist", 10, 10, None, 40, 300) for c in configs)


def test_sweep_paper_study_leaves_b10_to_mnist_paper():
    configs = reproduce.study("mnist-sweep-paper", [0, 1], "cpu")
    assert sorted({c.acquisition_size for c in configs}) == [5, 20, 40]
    assert len(configs) == 3 * 2 * 2 and all(c.pool_subsample is None and c.mc_samples == 100 for c in configs)


def test_device_reaches_every_config_and_a_missing_gpu_is_refused():
    import torch

    assert {c.device for c in reproduce.study("mnist-paper", [0], "cpu")} == {"cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            reproduce.study("mnist-paper", [0], "cuda")


def test_unknown_study_names_the_paper_studies():
    with pytest.raises(SystemExit, match="mnist-paper"):
        reproduce.study("mnist-papr", [0])


def entry(setting, strategy, q90, q95, seeds=6):
    return {"setting": setting, "strategy": strategy, "seeds": seeds, "labels_to_0.9": q90, "labels_to_0.95": q95,
            "budget": 300, "final_labels": [300], "complete": True}


def test_comparison_keeps_both_protocols_rows_side_by_side(tmp_path, monkeypatch, capsys):
    compare = load("compare_with_paper")
    for study, rows in {"mnist": [entry("mnist b=10", "batchbald", [80, 100, 110], [180, 260, 290], seeds=3)],
                        "mnist-paper": [entry("mnist b=10", "batchbald", [90, 100, 120], [220, 230, 270]),
                                        entry("mnist b=10", "bald", [120, 140, 150], [200, 250, 280])]}.items():
        (tmp_path / study / "report").mkdir(parents=True)
        (tmp_path / study / "report" / "labels_needed.json").write_text(json.dumps(rows))
    monkeypatch.setattr(sys, "argv", ["compare_with_paper.py", "--results", str(tmp_path), "--out", str(tmp_path / "cmp.md")])
    compare.main()
    lines = [line for line in (tmp_path / "cmp.md").read_text().splitlines() if line.startswith("| mnist")]
    assert lines == [
        "| mnist b=10 | bald | paper's | 6 | 300 | 300 | 120 / 140 / 150 | 120 / 120 / 170 | 200 / 250 / 280 | 250 / 250 / not reached |",
        "| mnist b=10 | batchbald | paper's | 6 | 300 | 300 | 90 / 100 / 120 | 70 / 90 / 110 | 220 / 230 / 270 | 190 / 200 / 230 |",
        "| mnist b=10 | batchbald | CPU | 3 | 300 | 300 | 80 / 100 / 110 | 70 / 90 / 110 | 180 / 260 / 290 | 190 / 200 / 230 |",
    ]
