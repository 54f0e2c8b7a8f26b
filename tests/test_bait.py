"""BAIT: the Kronecker-factored computation against explicit Fisher matrices, on small problems."""

from __future__ import annotations

import pytest
import torch

import batchal
from batchal.acquisition import bait as bait_module


def problem(N=14, C=3, D=4, seed=0, labelled=3):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(1.5 * torch.randn(N + labelled, 1, C, generator=g, dtype=torch.float64), dim=2)
    h = torch.randn(N + labelled, D, generator=g, dtype=torch.float64)
    return log_probs[:N], h[:N], log_probs[N:], h[N:]


def explicit_fisher(probs_C, h_D):
    """sum_c p_c g_c g_c^T with g_c the autograd gradient of log p_c w.r.t. W (C x D, row-major vec)."""
    C, D = len(probs_C), len(h_D)
    logits = probs_C.log()
    total = torch.zeros(C * D, C * D, dtype=torch.float64)
    for c in range(C):
        W = torch.zeros(C, D, dtype=torch.float64, requires_grad=True)
        # logits' = logits + W h: at W = 0 the prediction is p, and d log p_c / dW is the gradient at p.
        torch.log_softmax(logits + W @ h_D, 0)[c].backward()
        g = W.grad.reshape(-1)
        total += probs_C[c] * torch.outer(g, g)
    return total


def objective(chosen, fishers, F, base):
    M = base + sum((fishers[i] for i in chosen), torch.zeros_like(base))
    return float(torch.linalg.solve(M, F).trace())


def test_fisher_factor_is_the_fisher_information():
    log_probs, h, _, _ = problem()
    probs = log_probs[:, 0].exp()
    U = bait_module.fisher_factors(probs)
    for n in range(4):
        V = bait_module._factor(U[n], h[n])
        assert torch.allclose(V @ V.t(), explicit_fisher(probs[n], h[n]), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_labelled", [False, True])
def test_forward_backward_greedy_equals_brute_force(seed, with_labelled):
    """Every forward pick minimises tr((M + lambda I)^-1 F) over the candidates, every backward
    step drops the pick whose removal raises it least: recomputed with explicit CD x CD matrices."""
    log_probs, raw_h, lab_lp, raw_lab_h = problem(seed=seed)
    scale = raw_h.pow(2).sum(1).mean().sqrt() / 3.0
    raw_h, raw_lab_h = raw_h / scale, raw_lab_h / scale  # features in other units: the picks must not change
    h = raw_h / raw_h.pow(2).sum(1).mean().sqrt()  # BAIT's unit mean squared norm over the pool
    lab_h = raw_lab_h / raw_h.pow(2).sum(1).mean().sqrt()
    probs = log_probs[:, 0].exp()
    N, C, D = len(probs), probs.shape[1], h.shape[1]
    fishers = [explicit_fisher(probs[n], h[n]) for n in range(N)]
    F = sum(fishers) / N
    base = 0.7 * torch.eye(C * D, dtype=torch.float64)
    if with_labelled:
        lab_probs = lab_lp[:, 0].exp()
        base = base + sum(explicit_fisher(lab_probs[n], lab_h[n]) for n in range(len(lab_probs)))
    b = 3
    chosen = []
    for _ in range(2 * b):
        rest = [n for n in range(N) if n not in chosen]
        chosen.append(min(rest, key=lambda n: (objective(chosen + [n], fishers, F, base), n)))
    forward = list(chosen)
    while len(chosen) > b:
        drop = min(range(len(chosen)), key=lambda j: (objective(chosen[:j] + chosen[j + 1 :], fishers, F, base), j))
        del chosen[drop]
    options = dict(labelled_embeddings=raw_lab_h, labelled_log_probs=lab_lp) if with_labelled else {}
    sel = batchal.select("bait", b, log_probs_N_K_C=log_probs, embeddings_N_D=raw_h, lamb=0.7, **options)
    assert sel.indices.tolist() == chosen
    assert set(chosen) <= set(forward)
    # Each score is the forward decrease of the objective when the point was added.
    position = forward.index(chosen[0])
    before = objective(forward[:position], fishers, F, base)
    after = objective(forward[: position + 1], fishers, F, base)
    assert float(sel.scores[0]) == pytest.approx(before - after, rel=1e-8)


def test_bait_refuses_bad_inputs_by_name():
    log_probs, h, lab_lp, lab_h = problem()
    with pytest.raises(ValueError, match="both labelled_embeddings and labelled_log_probs"):
        batchal.select("bait", 2, log_probs_N_K_C=log_probs, embeddings_N_D=h, labelled_embeddings=lab_h)
    with pytest.raises(ValueError, match="lamb"):
        batchal.select("bait", 2, log_probs_N_K_C=log_probs, embeddings_N_D=h, lamb=-1.0)
    with pytest.raises(ValueError, match="labelled_log_probs has 2 points"):
        batchal.select("bait", 2, log_probs_N_K_C=log_probs, embeddings_N_D=h, labelled_embeddings=lab_h, labelled_log_probs=lab_lp[:2])
    big = torch.zeros(3, 100_000)
    with pytest.raises(ValueError, match="fewer features"):
        batchal.select("bait", 1, log_probs_N_K_C=torch.log_softmax(torch.zeros(3, 1, 10), 2), embeddings_N_D=big)


def test_bait_runs_an_experiment_end_to_end(tmp_path):
    """On digits, with the labelled set's Fisher from the experiment's own predictions."""
    from batchal.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(dataset="digits", strategy="bait", acquisition_size=5, initial_size=10, budget=20, seed=0,
                              pool_subsample=300)
    rows = run_experiment(config, tmp_path / "run")
    assert [row["labelled"] for row in rows] == [10, 15, 20]
    acquired = [i for row in rows for i in row["acquired"]]
    assert len(acquired) == len(set(acquired)) == 10


@pytest.mark.parametrize("strategy", [s for s in batchal.strategies("classification") if "labelled_embeddings" in batchal.acquisition.registry.get_strategy(s).options])
def test_labelled_inputs_from_another_layer_or_model_are_refused_for_every_strategy(strategy):
    """select checks the labelled set's features (and, where taken, log-probabilities) against the
    pool's once, for every strategy that accepts them."""
    log_probs, h, lab_lp, lab_h = problem()
    spec = batchal.acquisition.registry.get_strategy(strategy)
    extra = {"labelled_log_probs": lab_lp} if "labelled_log_probs" in spec.options else {}
    with pytest.raises(ValueError, match=r"labelled_embeddings has D = 5 features but embeddings_N_D has D = 4"):
        batchal.select(strategy, 2, log_probs_N_K_C=log_probs, embeddings_N_D=h,
                       labelled_embeddings=torch.cat([lab_h, lab_h[:, :1]], 1), **extra)
    if extra:
        other_classes = torch.log_softmax(torch.zeros(len(lab_h), 1, 4, dtype=torch.float64), 2)
        with pytest.raises(ValueError, match=r"labelled_log_probs has C = 4 classes but log_probs_N_K_C has C = 3"):
            batchal.select(strategy, 2, log_probs_N_K_C=log_probs, embeddings_N_D=h, labelled_embeddings=lab_h,
                           labelled_log_probs=other_classes)
