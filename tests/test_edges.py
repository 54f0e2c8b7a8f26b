"""Regression tests for the edges found under load and in the first hour (issue 24): magnitudes,
numpy inputs, seeds, devices, run files, dropout that samples nothing, the command line."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import batchal
from batchal.bayesian.dropout import DropoutWarning
from batchal.cli import main
from batchal.devices import resolve_device
from batchal.experiment import ExperimentConfig, run_experiment
from batchal.run_files import RunFileError
from batchal.threads import resolve_threads, use_threads
from conftest import random_log_probs



@pytest.mark.parametrize("strategy", batchal.strategies("classification"))
@pytest.mark.parametrize("dtype, magnitude", [(torch.float64, 1e-310), (torch.float32, 2.0**-140), (torch.float64, 1e200),
                                              (torch.float32, 1e30)])
def test_features_of_any_magnitude_in_both_widths_pick_as_at_unit_scale(strategy, dtype, magnitude):
    lp = random_log_probs(30, 4, 3, seed=1)
    emb = torch.randn(30, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kwargs = {"labelled_embeddings": emb[:3] * 1.5, "labelled_log_probs": lp[:3]} if strategy == "bait" else {}
    if strategy == "albl":
        kwargs = {"budget": 20}
    scaled = emb * magnitude
    scaled = scaled.to(dtype)
    if strategy == "bait":
        kwargs["labelled_embeddings"] = (kwargs["labelled_embeddings"] * magnitude).to(dtype)
    out = batchal.select(strategy, 4, log_probs_N_K_C=lp, embeddings_N_D=scaled, seed=3, **kwargs)
    assert sorted(set(out.indices.tolist())) == sorted(out.indices.tolist()) and all(0 <= i < 30 for i in out.indices.tolist())
    assert torch.isfinite(out.scores).all(), out.scores


def test_empty_numpy_labelled_set_and_integer_features_are_accepted():
    lp = random_log_probs(20, 3, 3)
    empty = np.zeros((0, 4))
    ints = np.arange(80).reshape(20, 4) % 7
    a = batchal.select("coreset", 3, embeddings_N_D=ints, labelled_embeddings=empty, seed=0)
    b = batchal.select("coreset", 3, embeddings_N_D=ints.astype(float), seed=0)
    assert a.indices.tolist() == b.indices.tolist()
    batchal.select("typiclust", 3, embeddings_N_D=ints, labelled_embeddings=empty, seed=0)
    with pytest.raises(ValueError, match="log_probs_N_K_C must be floating point"):
        batchal.select("bald", 3, log_probs_N_K_C=np.zeros((20, 3, 3), dtype=int))


def test_seeds_beyond_64_bits_and_cpu_0():
    lp = random_log_probs(10, 3, 3)
    batchal.select("random", 2, log_probs_N_K_C=lp, seed=2**64 - 1)
    with pytest.raises(ValueError, match="seed must be >= 0 and below 2\\^64, got 18446744073709551616"):
        batchal.select("random", 2, log_probs_N_K_C=lp, seed=2**64)
    assert resolve_device("cpu:0") == torch.device("cpu") and resolve_device(torch.device("cpu", 0)) == torch.device("cpu")


def test_thread_policy_defaults_to_one_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("BATCHAL_THREADS", raising=False)
    assert resolve_threads() == 1 and resolve_threads(3) == 3 and resolve_threads("auto") >= 1
    monkeypatch.setenv("BATCHAL_THREADS", "2")
    assert resolve_threads() == 2 and resolve_threads(1) == 1
    monkeypatch.setenv("BATCHAL_THREADS", "lots")
    with pytest.raises(ValueError, match="\\$BATCHAL_THREADS must be a positive integer or 'auto', got 'lots'"):
        resolve_threads()
    before = torch.get_num_threads()
    try:
        assert use_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_model_whose_samples_cannot_differ_is_named():
    with pytest.warns(DropoutWarning, match="p = 0"):
        batchal.convert_dropout(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.0), nn.Linear(4, 2)))

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(nn.functional.dropout(x, 0.5, self.training))

    with pytest.warns(DropoutWarning, match="no nn.Dropout module in Functional"):
        batchal.convert_dropout(Functional())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batchal.convert_dropout(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3)))


def _digits_run(tmp_path):
    config = ExperimentConfig(dataset="digits", strategy="random", acquisition_size=10, initial_size=20, budget=40, mc_samples=2,
                              train={"max_epochs": 1, "epoch_samples": 64})
    run_experiment(config, tmp_path / "run")
    return config


def test_edited_labels_in_a_run_file_are_refused(tmp_path):
    config = _digits_run(tmp_path)
    path = tmp_path / "run" / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["acquired_labels"][0] = (rows[0]["acquired_labels"][0] + 1) % 10
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RunFileError, match="is recorded with label .* but the data set labels it"):
        run_experiment(config, tmp_path / "run")


@pytest.mark.parametrize("name", ["results.jsonl", "config.json"])
def test_a_folder_in_place_of_a_run_file_is_one_line(tmp_path, name):
    (tmp_path / "run" / name).mkdir(parents=True)
    config = ExperimentConfig(dataset="digits", strategy="random", budget=30, mc_samples=2, train={"max_epochs": 1, "epoch_samples": 64})
    with pytest.raises(RunFileError, match=f"{name} is a folder or another non-file"):
        run_experiment(config, tmp_path / "run")


def test_command_line_first_hour(capsys, monkeypatch):
    assert main(["--version"]) == 0  # answered before the commands (and PyTorch) are imported
    assert capsys.readouterr().out.startswith("batchal ")
    assert main(["strategies", "epig"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("epig: EPIG (Bickford Smith") and "expected predictive information gain on a target input distribution" in out
    assert main(["strategies", "nope"]) == 2 and "unknown strategy nope" in capsys.readouterr().err
    assert main(["--threads", "0", "strategies"]) == 2 and "threads must be a positive integer" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert main(["score", "pool", "--model", "mlp", "--out", "x"]) == 2
    assert "needs pyarrow (Ray is not needed in-process)" in capsys.readouterr().err


def test_ray_local_means_a_new_local_instance(monkeypatch):
    ray = pytest.importorskip("ray")
    from batchal.distributed import cluster

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: seen.setdefault("address", address))
    monkeypatch.setattr(cluster, "quiet_ray_data", lambda ray: None)
    cluster.connect("local")
    assert seen["address"] == "local"  # not None, which would join $RAY_ADDRESS or the last cluster started here


def test_license_changelog_and_citation_exist():
    from conftest import REPO

    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "BatchBALD" in (REPO / "CITATION.cff").read_text() and "## " in (REPO / "CHANGELOG.md").read_text()
    readme, cite = (REPO / "README.md").read_text(), (REPO / "docs" / "cite.md").read_text()
    assert "## How to cite" in readme and "docs/cite.md" in readme
    assert "ash2020badge" in cite and "kirsch2019batchbald" in cite and "@software{batchal" in cite


def test_identical_samples_are_named_and_a_wrong_input_shape_is_blamed_on_the_shape():
    from batchal.acquisition.registry import SamplesWarning

    lp = random_log_probs(20, 1, 4).expand(20, 5, 4).contiguous()
    with pytest.warns(SamplesWarning, match="samples of log_probs_N_K_C are identical"):
        batchal.select("batchbald", 3, log_probs_N_K_C=lp, seed=0)
    model = batchal.convert_dropout(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.Linear(8, 3)))
    with pytest.raises(ValueError, match=r"fails on one input of shape \(1, 1, 5, 5\).*check that the data's input shape"):
        batchal.predict_log_probs(model, torch.zeros(4, 1, 5, 5), k=3)


def test_bait_refuses_an_ill_conditioned_fisher_in_one_line(monkeypatch):
    from batchal.acquisition import bait

    def singular(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.inv: The diagonal element 3 is zero, the inversion could not be completed")

    monkeypatch.setattr(bait, "bait", singular)
    lp = random_log_probs(20, 1, 3)
    with pytest.raises(ValueError, match="BAIT's Fisher information is numerically singular .* labelled_embeddings"):
        batchal.select("bait", 2, log_probs_N_K_C=lp, embeddings_N_D=torch.randn(20, 4))
