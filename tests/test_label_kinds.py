"""Label kinds beyond single-label classification: multi-label, regression and segmentation
strategies against brute force, closed forms, numerical integration and the one select() contract."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import batchal
import batchal.experiment
from batchal.acquisition import dense, factorised, multilabel, regression
from batchal.acquisition.scores import bald

MULTI = batchal.strategies("multi-label")
REGRESSION = batchal.strategies("regression")
SEGMENTATION = batchal.strategies("segmentation")


def sigmoid_log_probs(n, k, labels, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, labels, generator=g) * spread + torch.randn(n, k, labels, generator=g) * spread
    return torch.nn.functional.logsigmoid(logits)


def regression_pool(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 1, generator=g) + torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 2
    var = 0.05 + torch.rand(n, k, generator=g)
    return mean, var


def dense_log_probs(n, k, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, c, h, w, generator=g) + torch.randn(n, k, c, h, w, generator=g) * torch.rand(n, 1, 1, 1, 1, generator=g) * 2
    return torch.log_softmax(logits, dim=2)


def kind_inputs(strategy, n=12, seed=0):
    """The pool of a strategy's label kind, as select() takes it."""
    kind = batchal.acquisition.registry.get_strategy(strategy).kind
    g = torch.Generator().manual_seed(seed + 7)
    if kind == "multi-label":
        out = {"log_probs_N_K_L": sigmoid_log_probs(n, 5, 3, seed)}
        if strategy == "multilabel_badge":
            out["embeddings_N_D"] = torch.randn(n, 4, generator=g)
        return out
    if kind == "regression":
        if strategy == "regression_maxdet":
            return {"embeddings_N_D": torch.randn(n, 4, generator=g), "noise": 0.1}
        mean, var = regression_pool(n, 6, seed)
        return {"mean_N_K": mean, "var_N_K": var}
    return {"log_probs_N_K_C_H_W": dense_log_probs(n, 4, 3, 4, 4, seed), **({"num_samples": 256} if "batchbald" in strategy else {})}


def assert_brute_force_greedy(selection, information, pool_size, abs_tolerance=1e-9):
    """Each pick maximises the batch's information among the remaining points (up to exact ties),
    and each score is the information of the batch so far."""
    chosen = []
    for pick, score in zip(selection.indices.tolist(), selection.scores.tolist()):
        gains = {n: information(chosen + [n]) for n in range(pool_size) if n not in chosen}
        assert gains[pick] >= max(gains.values()) - 1e-9
        chosen.append(pick)
        assert score == pytest.approx(information(chosen), abs=abs_tolerance)


# --- multi-label ----------------------------------------------------------------------------------------------


def test_binary_log_probs_are_normalised_and_stable_near_zero_and_one():
    lp = torch.tensor([[[-1e-12, -50.0, math.log(0.5), -0.3]]])
    both = multilabel.binary_log_probs(lp)
    assert torch.allclose(torch.logsumexp(both, -1), torch.zeros(1, 1, 4, dtype=torch.float64), atol=1e-12)
    assert both[0, 0, 0, 0] < -25 and torch.isfinite(both).all()  # log(1 - (1 - 1e-12)), not -inf


def test_multilabel_bald_is_the_sum_of_the_per_label_balds():
    lp = sigmoid_log_probs(9, 6, 4)
    binary = multilabel.binary_log_probs(lp)
    expected = sum(bald(binary[:, :, label, :]).double() for label in range(4))
    assert torch.allclose(multilabel.multilabel_bald(lp), expected, atol=1e-10)


def test_multilabel_batchbald_scores_are_the_enumerated_information_and_greedy_is_brute_force_greedy():
    lp = sigmoid_log_probs(7, 4, 2, seed=3)
    binary = multilabel.binary_log_probs(lp)
    sel = batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp, seed=0)
    assert sel.info["estimator"] == "product"
    assert_brute_force_greedy(sel, lambda b: factorised.exact_joint_information(binary[b]), 7, abs_tolerance=1e-8)


def test_multilabel_batchbald_sampled_joint_estimates_the_enumerated_information():
    lp = sigmoid_log_probs(6, 4, 3, seed=5)
    binary = multilabel.binary_log_probs(lp)
    sel = batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp, seed=0, max_configurations=1, num_samples=4096)
    assert sel.info["estimator"] == "sampled"
    for n in range(1, 4):
        exact = factorised.exact_joint_information(binary[sel.indices[:n]])
        assert sel.scores[n - 1] == pytest.approx(exact, abs=0.05)


def test_multilabel_badge_embedding_is_the_bce_gradient():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 3)
    h = torch.randn(4, 5)
    logits = head(h)
    lp = torch.nn.functional.logsigmoid(logits.detach())[:, None, :]
    a = multilabel.residuals(lp)
    for n in range(4):
        head.zero_grad()
        target = (torch.sigmoid(logits[n]) >= 0.5).float()
        torch.nn.functional.binary_cross_entropy_with_logits(head(h[n]), target, reduction="sum").backward()
        assert torch.allclose(head.weight.grad.double(), torch.outer(a[n], h[n].double()), atol=1e-6)
    sel = batchal.select("multilabel_badge", 2, log_probs_N_K_L=lp, embeddings_N_D=h, seed=0)
    norms = (a**2).sum(1) * (h.double() ** 2).sum(1)
    assert sel.indices[0] == int(norms.argmax())


# --- regression -----------------------------------------------------------------------------------------------


def mixture_information_by_quadrature(mean_K, var_K):
    y = np.linspace(float(mean_K.min() - 12 * var_K.max().sqrt()), float(mean_K.max() + 12 * var_K.max().sqrt()), 200_001)
    densities = np.exp(-0.5 * (y[None] - mean_K.numpy()[:, None]) ** 2 / var_K.numpy()[:, None]) / np.sqrt(2 * np.pi * var_K.numpy()[:, None])
    mix = densities.mean(0)
    entropy = -np.trapezoid(np.where(mix > 0, mix * np.log(np.where(mix > 0, mix, 1)), 0), y)
    return entropy - 0.5 * np.mean(np.log(2 * np.pi * np.e * var_K.numpy()))


def test_regression_bald_bound_and_estimate_against_numerical_integration():
    mean, var = regression_pool(6, 5, seed=2)
    mean, var = mean.double(), var.double()
    pool = regression.check_regression(mean, var)
    bound = regression.moment_bald(pool)
    estimate = regression.sampled_bald(pool, num_samples=20_000, generator=torch.Generator().manual_seed(0))
    for n in range(6):
        exact = mixture_information_by_quadrature(mean[n], var[n])
        assert bound[n] >= exact - 1e-6  # an upper bound
        assert estimate[n] == pytest.approx(exact, abs=0.02)
    # One component: no disagreement, no information, by both estimators.
    same = torch.zeros(1, 4, dtype=torch.float64)
    assert regression.moment_bald(regression.check_regression(same, torch.ones(1, 4))).item() == pytest.approx(0, abs=1e-12)


def test_regression_batchbald_equals_its_closed_form_and_brute_force_greedy():
    mean, var = regression_pool(9, 5, seed=4)
    sel = batchal.select("regression_batchbald", 4, mean_N_K=mean, var_N_K=var)
    m, v = mean.double(), var.double()
    assert_brute_force_greedy(sel, lambda b: regression.batch_information(m, v, b), 9)
    scalar = batchal.select("regression_batchbald", 3, mean_N_K=mean, noise=0.3)
    assert scalar.scores[-1] == pytest.approx(regression.batch_information(m, torch.full_like(m, 0.3), scalar.indices), abs=1e-9)


def test_regression_maxdet_is_brute_force_greedy_log_det():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(10, 3, generator=g, dtype=torch.float64)
    sel = batchal.select("regression_maxdet", 5, embeddings_N_D=phi, noise=0.2)
    logdet = lambda b: float(0.5 * torch.logdet(phi[b] @ phi[b].t() + 0.2 * torch.eye(len(b), dtype=torch.float64)) - 0.5 * len(b) * math.log(0.2))
    assert_brute_force_greedy(sel, logdet, 10)


def test_regression_inputs_are_refused_by_name():
    mean, var = regression_pool(5, 3)
    cases = [({"mean_N_K": mean}, "exactly one"), ({"mean_N_K": mean, "var_N_K": var, "noise": 1.0}, "exactly one"),
             ({"mean_N_K": mean, "var_N_K": var[:, :2]}, "var_N_K must have mean_N_K's shape"),
             ({"mean_N_K": mean, "noise": -1.0}, "noise must be > 0"), ({"mean_N_K": mean[0], "noise": 1.0}, "mean_N_K must have 2 dimensions"),
             ({"mean_N_K": mean, "var_N_K": -var}, "var_N_K must be > 0"),
             ({"noise": 1.0}, "needs mean_N_K")]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            batchal.select("regression_batchbald", 2, **kwargs)
    with pytest.raises(ValueError, match="regression strategy"):
        batchal.experiment.ExperimentConfig(dataset="digits", strategy="regression_bald")


# --- segmentation ---------------------------------------------------------------------------------------------


def test_segmentation_scores_are_the_per_pixel_definition_reduced():
    lp = dense_log_probs(5, 4, 3, 3, 4, seed=1)
    per_pixel = torch.stack([torch.stack([bald(lp[n, :, :, i, j][None])[0] for i in range(3) for j in range(4)]) for n in range(5)]).double()
    mean = batchal.select("segmentation_bald", 5, log_probs_N_K_C_H_W=lp)
    assert torch.allclose(mean.scores, per_pixel.mean(1)[mean.indices], atol=1e-6)
    top = batchal.select("segmentation_bald", 5, log_probs_N_K_C_H_W=lp, reduction="top", top_fraction=0.25)
    expected = per_pixel.sort(1, descending=True).values[:, :3].mean(1)  # ceil(0.25 * 12) = 3 pixels
    assert torch.allclose(top.scores, expected[top.indices], atol=1e-6)


def test_segmentation_batchbald_estimates_the_enumerated_information_of_its_pixels_and_keeps_to_memory():
    lp = dense_log_probs(6, 4, 2, 2, 2, seed=3)
    sel = batchal.select("segmentation_batchbald", 3, log_probs_N_K_C_H_W=lp, pixels=3, num_samples=8192, seed=0)
    pixels = sel.info["pixels"]
    assert len(pixels) == 3 and len(set(pixels)) == 3
    items = dense.pixels_last(lp)[:, :, pixels]
    for n in range(1, 4):
        assert sel.scores[n - 1] == pytest.approx(factorised.exact_joint_information(items[sel.indices[:n]]), abs=0.05)
    with pytest.raises(ValueError, match="above memory_bytes"):
        batchal.select("segmentation_batchbald", 2, log_probs_N_K_C_H_W=lp, num_samples=4096, memory_bytes=1024)


def test_a_tiny_fully_convolutional_network_on_synthetic_shapes():
    """Squares on a noisy background; a two-layer FCN with consistent dropout, trained briefly;
    MC predictions come back N x K x C x H x W and every segmentation strategy selects on them."""
    g = torch.Generator().manual_seed(0)
    images, masks = torch.randn(40, 1, 12, 12, generator=g) * 0.3, torch.zeros(40, 12, 12, dtype=torch.long)
    for n in range(40):
        r, c, s = (int(v) for v in torch.randint(0, 7, (3,), generator=g))
        masks[n, r : r + s + 2, c : c + s + 2] = 1
        images[n, 0][masks[n] == 1] += 1.0
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), batchal.ConsistentMCDropout2d(0.3),
                              torch.nn.Conv2d(8, 2, 3, padding=1))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(images[:10]), masks[:10]).backward()
        optimiser.step()
    lp = batchal.predict_log_probs(net, images[10:], k=6, seed=0)
    assert lp.shape == (30, 6, 2, 12, 12)
    accuracy = (lp.exp().mean(1).argmax(1) == masks[10:]).double().mean()
    assert accuracy > 0.8  # it learned the shapes
    for strategy in SEGMENTATION:
        options = {"num_samples": 256} if strategy == "segmentation_batchbald" else {}
        sel = batchal.select(strategy, 4, log_probs_N_K_C_H_W=lp, seed=0, **options)
        assert len(set(sel.indices.tolist())) == 4


# --- the contract, for every new strategy ---------------------------------------------------------------------

NEW = MULTI + REGRESSION + SEGMENTATION


@pytest.mark.parametrize("strategy", NEW)
def test_describe_names_the_kind_and_its_pool_input(strategy):
    # The contract itself runs over every kind in test_conformance.py (batchal.check_strategy's checks).
    assert "[" in batchal.acquisition.registry.describe(strategy)


def test_malformed_pools_are_refused_by_name():
    with pytest.raises(ValueError, match="log_probs_N_K_L must hold log-probabilities"):
        batchal.select("multilabel_bald", 2, log_probs_N_K_L=torch.randn(5, 3, 2) + 1)
    with pytest.raises(ValueError, match=r"log_probs_N_K_L must have 3 dimensions \(N x K x L\)"):
        batchal.select("multilabel_bald", 2, log_probs_N_K_L=torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"log_probs_N_K_C_H_W must have 4 or more dimensions \(N x K x C"):
        batchal.select("segmentation_bald", 2, log_probs_N_K_C_H_W=torch.zeros(5, 3, 2))
    with pytest.raises(ValueError, match="reduction"):
        batchal.select("segmentation_bald", 2, log_probs_N_K_C_H_W=dense_log_probs(5, 2, 2, 2, 2), reduction="max")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(1, 3), st.integers(0, 10_000), st.sampled_from(NEW))
def test_contract_holds_for_every_legal_input(n, k, width, seed, strategy):
    g = torch.Generator().manual_seed(seed)
    kind = batchal.acquisition.registry.get_strategy(strategy).kind
    if kind == "multi-label":
        kwargs = {"log_probs_N_K_L": torch.nn.functional.logsigmoid(torch.randn(n, k, width, generator=g) * 5)}
        if strategy == "multilabel_badge":
            kwargs["embeddings_N_D"] = torch.randn(n, 2, generator=g)
    elif strategy == "regression_maxdet":
        kwargs = {"embeddings_N_D": torch.randn(n, width, generator=g), "noise": 0.5}
    elif kind == "regression":
        kwargs = {"mean_N_K": torch.randn(n, k, generator=g) * 3, "noise": 0.1}
    else:
        kwargs = {"log_probs_N_K_C_H_W": torch.log_softmax(torch.randn(n, k, width + 1, 2, 3, generator=g) * 4, 2)}
        if strategy == "segmentation_batchbald":
            kwargs["num_samples"] = 64
    b = 1 + seed % n
    sel = batchal.select(strategy, b, seed=seed, **kwargs)
    assert len(sel) == b and len(set(sel.indices.tolist())) == b and all(0 <= i < n for i in sel.indices.tolist())
    assert torch.isfinite(sel.scores).all()


# --- batchal run on a regression data set ---------------------------------------------------------------------


def test_batchal_run_on_a_regression_data_set_resumes_identically(tmp_path, capsys):
    from batchal.cli import main
    from batchal.regression_run import RegressionConfig, run_regression

    assert main(["run", "--dataset", "diabetes", "--strategy", "regression_batchbald,regression_maxdet,random", "--budget", "40",
                 "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "| regression_batchbald | 1 | 40 |" in out and "test RMSE" in out
    run_dir = tmp_path / "runs" / "diabetes" / "regression_batchbald-b10-seed0"
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["labelled"] for r in rows] == [20, 30, 40] and rows[-1]["stop_reason"] == "budget"
    assert all(0 < r["test_rmse"] < 2 for r in rows) and len(set(rows[0]["acquired"] + rows[1]["acquired"])) == 20
    (run_dir / "results.jsonl").write_text(lines[0] + "\n" + lines[1][:25])  # killed while writing the second round
    config = RegressionConfig(dataset="diabetes", strategy="regression_batchbald", budget=40)
    resumed = run_regression(config, run_dir)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(resumed) == strip(rows)
    with pytest.raises(ValueError, match="budget differ"):
        run_regression(RegressionConfig(dataset="diabetes", strategy="regression_batchbald", budget=50), run_dir)
    assert main(["run", "--dataset", "diabetes", "--strategy", "batchbald", "--out", str(tmp_path / "r2")]) == 2
    assert "must be one of regression_bald, regression_batchbald, regression_maxdet, random" in capsys.readouterr().err


def test_multilabel_batchbald_prefilter_and_memory_guard():
    lp = sigmoid_log_probs(40, 4, 3, seed=8)
    full = batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp, seed=0)
    top = multilabel.multilabel_bald(lp).topk(10).indices.tolist()
    pre = batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp, seed=0, prefilter=10)
    assert set(pre.indices.tolist()) <= set(top)  # positions in the whole pool, among the prefiltered
    sub = batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp[sorted(top)], seed=0)
    assert [sorted(top)[i] for i in sub.indices.tolist()] == pre.indices.tolist()
    assert full.indices[0] in top
    with pytest.raises(ValueError, match="prefilter=m"):
        batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=lp, memory_bytes=1000)


def test_regression_maxdet_given_the_labelled_set_is_brute_force_greedy_conditional_log_det():
    g = torch.Generator().manual_seed(5)
    phi, known = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    sel = batchal.select("regression_maxdet", 4, embeddings_N_D=phi, noise=0.3, labelled_embeddings=known)
    eye = lambda n: torch.eye(n, dtype=torch.float64)
    base = float(torch.logdet(known @ known.t() + 0.3 * eye(4)))
    gain = lambda b: 0.5 * (float(torch.logdet(torch.cat([known, phi[b]]) @ torch.cat([known, phi[b]]).t() + 0.3 * eye(4 + len(b)))) - base) \
        - 0.5 * len(b) * math.log(0.3)
    assert_brute_force_greedy(sel, gain, 10)
    assert sel.indices.tolist() != batchal.select("regression_maxdet", 4, embeddings_N_D=phi, noise=0.3).indices.tolist()
